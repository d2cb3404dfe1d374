"""Issue 17, finding 7: BackendReporter holds its API key only as a Secret, and a failed
post leaves no request with the key reachable from it."""

from __future__ import annotations

import httpx

from tinkex_http import Secret
from tinkex_telemetry import BackendReporter

KEY = "tml-CANARY-reporter-0123456789abcdef"


def _all_text(obj: object, depth: int = 0, seen: set[int] | None = None) -> str:
    """repr of ``obj`` and, recursively, of every attribute reachable from it."""
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > 6:
        return ""
    seen.add(id(obj))
    out = [repr(obj)]
    values: list[object] = []
    if isinstance(obj, dict):
        values = [*obj.keys(), *obj.values()]
    elif isinstance(obj, list | tuple | set | frozenset):
        values = list(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        values = list(vars(obj).values())
    for value in values:
        if isinstance(value, Secret):
            continue
        out.append(_all_text(value, depth + 1, seen))
    return "\n".join(out)


def test_reporter_keeps_the_key_only_as_a_secret() -> None:
    received: list[str] = []
    failed: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(request.headers.get("x-api-key", ""))
        if len(received) == 1:
            failed.append(request)
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={})

    rep = BackendReporter(
        session_id="s",
        base_url="http://tinker.test",
        api_key=KEY,
        headers={"cf-access-client-secret": "cf-CANARY-x"},
        transport=httpx.MockTransport(handler),
        retry_base_delay=0.01,
        max_retries=2,
    )
    try:
        rep.log("e", {"i": 1})
        assert rep.flush(timeout=10)
        sender = rep._sender
        assert sender is not None
        # every object reachable from the reporter: no plaintext key (the old sender kept
        # it in its httpx.Client default headers and client arguments)
        text = _all_text(rep)
        assert KEY not in text
        assert "cf-CANARY-x" not in text
        assert isinstance(sender._secrets["x-api-key"], Secret)
    finally:
        rep.close(timeout=10)
    assert received[0] == KEY  # it was sent
    assert received[-1] == KEY
    assert failed[0].headers["x-api-key"] == "[REDACTED]"  # scrubbed after the failure
