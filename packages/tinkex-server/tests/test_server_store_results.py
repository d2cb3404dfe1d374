"""A future's body is stored as the JSON value ``dumps`` writes, whichever encoder wrote it
(orjson for the common body, ``json`` for bodies with None, NaN, infinities, non-string keys
or integers beyond 64 bits)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tinkex_server._store import Store
from tinkex_server._store.futures import result_json
from tinkex_server._store.schema import dumps, loads

_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(0, 9)), inner, max_size=6),
    ),
    max_leaves=40,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(_values)
def test_the_stored_text_reads_back_as_dumps_would(value: Any) -> None:
    assert _same(loads(result_json(value)), json.loads(dumps(value)))


def test_special_floats_and_none_keep_their_json_forms() -> None:
    body = {"a": [1.5, math.nan, math.inf, -math.inf], "b": None}
    assert result_json(body) == dumps(body)
    back = loads(result_json({"x": [0.1, 1e-300, 3.4028234663852886e38], "n": 2**63}))
    assert back == {"x": [0.1, 1e-300, 3.4028234663852886e38], "n": 2**63}


def test_a_completed_future_reads_back_its_body(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "db.sqlite3")
    try:
        body = {
            "loss_fn_output_type": "ArrayRecord",
            "loss_fn_outputs": [{"logprobs": {"data": [-1.25, -0.1], "dtype": "float32"}}],
            "metrics": {"loss:sum": 1.35},
        }
        store.insert_future("r1", target="m", seq_id=1, request_type="Forward", session_id=None)
        store.complete_future("r1", body, failed=False)
        row = store.get_future("r1")
        assert row is not None
        assert row.status == "done"
        assert row.result == body
        store.insert_future("r2", target="m", seq_id=2, request_type="Forward", session_id=None)
        store.complete_future("r2", {"error": None, "v": math.nan}, failed=True)
        row = store.get_future("r2")
        assert row is not None
        assert row.status == "failed"
        assert row.result["error"] is None
        assert math.isnan(row.result["v"])
    finally:
        store.close()
