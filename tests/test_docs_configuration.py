"""docs/configuration.md names every setting and environment variable the sources read."""

from __future__ import annotations

import ast
import dataclasses
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinkex_http import Config
from tinkex_server import ServerConfig, serve

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
SOURCES = sorted([*ROOT.glob("packages/*/src/**/*.py"), *ROOT.glob("plugins/*/src/**/*.py")])

#: ``TINKER_*`` / ``TINKEX_*`` (and click's ``_TINKEX_COMPLETE``) string literals.
TINK_NAME = re.compile(r"_?TINKE[RX]_[A-Z0-9_]+")
#: What a variable name looks like when read through an ``env``-ish helper.
ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")

#: Literals of that shape that are not environment variables (the doc says so too).
NOT_ENV = {
    "TINKER_SCHEME": "the constant 'tinker://' in tinkex_types",
    "TINKER_PATH": "the metavar of `tinkex sample --model-path`",
}


def _trees() -> Iterator[tuple[Path, ast.AST]]:
    for path in SOURCES:
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


@functools.cache
def tink_literals() -> dict[str, set[str]]:
    """Every string constant that is a whole ``TINKER_*``/``TINKEX_*`` name -> files."""
    found: dict[str, set[str]] = {}
    for path, tree in _trees():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and TINK_NAME.fullmatch(node.value)
            ):
                found.setdefault(node.value, set()).add(str(path.relative_to(ROOT)))
    return found


@functools.cache
def env_reads() -> set[str]:
    """Variables read by literal name: ``os.environ.get("X")``, ``os.getenv("X")``,
    ``os.environ["X"]``, ``"X" in os.environ`` and helpers whose name mentions ``env``
    (``_env_list("X")``, ``_env_float("X")``). Writes (``setdefault``) do not count."""
    names: set[str] = set()

    def environ_like(expr: ast.AST) -> bool:
        return "environ" in ast.unparse(expr)

    def literal(expr: ast.AST) -> str | None:
        is_name = isinstance(expr, ast.Constant) and isinstance(expr.value, str)
        return expr.value if is_name and ENV_NAME.fullmatch(expr.value) else None  # type: ignore[attr-defined]

    for _path, tree in _trees():
        for node in ast.walk(tree):
            name: str | None = None
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                callee = func.attr if isinstance(func, ast.Attribute) else ast.unparse(func)
                if (callee == "get" and environ_like(func.value)) or (  # type: ignore[attr-defined]
                    callee != "get" and "env" in callee.lower() and "environ" not in callee
                ):
                    name = literal(node.args[0])
            elif isinstance(node, ast.Subscript) and environ_like(node.value):
                name = literal(node.slice)
            elif (
                isinstance(node, ast.Compare)
                and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
                and any(environ_like(c) for c in node.comparators)
            ):
                name = literal(node.left)
            if name is not None:
                names.add(name)
    return names


def test_the_scanners_find_known_variables() -> None:
    literals = tink_literals()
    for name in ("TINKER_API_KEY", "TINKEX_DATA_DIR", "TINKEX_CHAOS", "TINKEX_SERVER_API_KEY"):
        assert name in literals
    reads = env_reads()
    for name in ("TINKER_LOG", "TINKEX_LOAD_PLUGINS", "HF_HOME", "OTEL_SDK_DISABLED", "SHELL"):
        assert name in reads
    assert "OTEL_EXPORTER_OTLP_TIMEOUT" in reads  # through _env_float(...)


def test_every_tinker_and_tinkex_variable_is_documented() -> None:
    doc = _doc()
    missing = {
        name: sorted(files)
        for name, files in tink_literals().items()
        if name not in NOT_ENV and f"`{name}`" not in doc
    }
    assert not missing, f"add these to docs/configuration.md: {missing}"


def test_every_variable_read_by_name_is_documented() -> None:
    doc = _doc()
    missing = sorted(name for name in env_reads() if f"`{name}`" not in doc)
    assert not missing, f"add these to docs/configuration.md: {missing}"


@pytest.mark.parametrize("name", sorted(NOT_ENV))
def test_non_variables_are_still_in_the_sources_and_never_read(name: str) -> None:
    assert name in tink_literals(), f"{name} is gone from the sources: drop it from NOT_ENV"
    assert name not in env_reads()
    assert f"`{name}`" in _doc()  # the doc says it is not a variable


def test_every_client_config_field_is_documented() -> None:
    doc = _doc()
    fields = Config(base_url="local://", env={}).redacted()
    missing = [f for f in fields if f"| `{f}` |" not in doc]
    assert not missing, missing


def test_every_server_config_field_is_documented() -> None:
    doc = _doc()
    missing = [f.name for f in dataclasses.fields(ServerConfig) if f"| `{f.name}` |" not in doc]
    assert not missing, missing


def test_every_serve_flag_is_documented() -> None:
    doc = _doc()
    flags = [opt for param in serve.params for opt in param.opts if opt.startswith("--")]
    assert "--data-dir" in flags
    missing = [flag for flag in flags if f"`{flag}`" not in doc]
    assert not missing, missing


def test_documented_defaults_match_the_code() -> None:
    """Spot checks of numbers the tables state."""
    config = Config(base_url="local://", env={})
    server = ServerConfig(data_dir=Path("unused"))
    doc = _doc()
    assert config.timeout == 60.0
    assert config.max_retries == 10
    assert config.poll_backoff == (1.0, 30.0)
    assert config.pool_limits == {
        "session": 5,
        "training": 10,
        "sampling": 1000,
        "futures": 250,
        "telemetry": 5,
    }
    assert config.heartbeat_interval == 10.0
    assert config.heartbeat_warning_after == 120.0
    assert config.sdk_version in doc
    assert config.user_agent in doc
    assert "| `seq_gap_grace_s` | 30.0 |" in doc
    assert server.seq_gap_grace_s == 30.0
    assert f"| `result_ttl_s` | {server.result_ttl_s} (7 days) |" in doc
    assert f"| `max_body_bytes` | {server.max_body_bytes} (64 MiB) |" in doc
    for name in ("max_sample_batch", "max_queued_samples", "max_num_samples"):
        assert f"| `{name}` | {getattr(server, name)} |" in doc
