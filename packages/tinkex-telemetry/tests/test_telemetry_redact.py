"""Secret redaction and the structlog setup."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from tinkex_telemetry import (
    REDACTED,
    configure_logging,
    is_secret_key,
    parse_log_level,
    redact_secrets,
    redact_text,
    redact_value,
    register_secret,
    sanitize_url,
)
from tinkex_types import TinkexValidationError

KEY = "tml-abcdefghijklmnop0123456789"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Any:
    yield
    structlog.reset_defaults()


@pytest.mark.parametrize(
    "name",
    [
        "api_key", "API-KEY", "x-api-key", "X-Api-Key", "authorization", "Proxy-Authorization",
        "cf-access-client-secret", "token", "secret", "password", "client_secret", "hf_token",
        "access_token", "refresh_token", "db_password", "openai_api_key",
    ],
)  # fmt: skip
def test_secret_keys(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize(
    "name",
    [
        "max_tokens",
        "tokens",
        "eos_token",
        "pad_token",
        "model_id",
        "request_id",
        "idempotency_key",
        "loss:sum",
        3,
    ],
)
def test_ordinary_keys(name: Any) -> None:
    assert not is_secret_key(name)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"using key {KEY} now", KEY),
        ("Authorization: Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
        ("authorization=Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("x-api-key: sk-live-123456", "sk-live-123456"),
        ('{"api_key": "whatever-value"}', "whatever-value"),
        ("password=hunter22&user=bob", "hunter22"),
        ("cf-access-client-secret=cfsecret123", "cfsecret123"),
        ("https://bob:pa55word@proxy.example:8080/", "pa55word"),
        ("HF token hf_abcdefghijklmnopqrstuvwxyz", "hf_abcdefghijklmnopqrstuvwxyz"),
    ],
)
def test_redact_text(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out
    assert REDACTED in out


@pytest.mark.parametrize(
    "text",
    [
        "max_tokens=32",
        "tokens: 5",
        "basic usage of the API",
        "loss:sum 1.5",
        "model tml is fine",
        "seq_id=3",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact_text(text) == text


def test_redact_nested_structures() -> None:
    event = {
        "headers": {"X-API-Key": KEY, "accept": "application/json"},
        "attempts": [{"token": "t0k3n-value", "n": 1}, ("Bearer abcdefgh", 2)],
        "message": f"failed with {KEY}",
        "count": 3,
        "ok": True,
        "none": None,
        "raw": f"key={KEY}".encode(),
    }
    out = redact_value(event)
    text = repr(out)
    assert KEY not in text
    assert "t0k3n-value" not in text
    assert "abcdefgh" not in text
    assert out["headers"]["accept"] == "application/json"
    assert out["headers"]["X-API-Key"] == REDACTED
    assert out["attempts"][0] == {"token": REDACTED, "n": 1}
    assert isinstance(out["attempts"][1], tuple)
    assert out["attempts"][1][1] == 2
    assert out["count"] == 3
    assert out["ok"] is True
    assert out["none"] is None
    assert event["headers"]["X-API-Key"] == KEY, "the input is not modified"


def test_objects_whose_repr_leaks_are_replaced() -> None:
    class Leaky:
        def __repr__(self) -> str:
            return f"Leaky(key={KEY!r})"

    class Fine:
        pass

    fine = Fine()
    assert KEY not in redact_value({"x": Leaky()})["x"]
    assert redact_value({"x": fine})["x"] is fine


def test_deep_and_cyclic_values_terminate() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    out = redact_value(cyclic)
    assert "[TRUNCATED]" in repr(out)


def test_registered_secrets_are_redacted_anywhere() -> None:
    odd = "zz-custom-secret-without-prefix-42"

    class SecretLike:
        def get_secret_value(self) -> str:
            return odd

    register_secret(SecretLike())
    register_secret("short")  # too short to be useful: ignored
    assert odd not in redact_text(f"prefix{odd}suffix")
    assert redact_text("short and sweet") == "short and sweet"


def test_sanitize_url() -> None:
    url = sanitize_url(
        f"https://user:pw@tinker.test:8443/api/v1/x?api_key={KEY}&Signature=abc&page=2#frag"
    )
    assert url == "https://tinker.test:8443/api/v1/x?api_key=REDACTED&Signature=REDACTED&page=2"


@settings(deadline=None, max_examples=60)
@given(
    prefix=st.text(max_size=20),
    suffix=st.text(max_size=20),
    body=st.from_regex(r"[A-Za-z0-9_\-]{8,40}", fullmatch=True),
)
def test_api_keys_never_survive(prefix: str, suffix: str, body: str) -> None:
    key = f"tml-{body}"
    assert key not in redact_text(f"{prefix}{key} {suffix}")
    assert key not in repr(redact_value({"nested": [{"v": f"{prefix}{key}"}]}))


def test_redact_secrets_processor_keeps_exc_info() -> None:
    exc = RuntimeError("x")
    event = {"event": f"login with {KEY}", "api_key": KEY, "exc_info": exc, "n": 1}
    out = redact_secrets(None, "info", event)
    assert out["event"] == f"login with {REDACTED}"
    assert out["api_key"] == REDACTED
    assert out["exc_info"] is exc
    assert out["n"] == 1


def test_configure_logging_json_has_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINKEX_LOG", raising=False)
    monkeypatch.setenv("TINKER_LOG", "debug")
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    log = structlog.get_logger("tinkex.test")
    log.debug(
        "request",
        headers={"x-api-key": KEY, "authorization": f"Bearer {KEY}"},
        url=f"https://h/x?token={KEY}",
    )
    try:
        raise ValueError(f"bad key {KEY}")
    except ValueError:
        log.exception("failed", password="hunter2-long")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["request", "failed"]
    assert lines[0]["level"] == "debug"
    assert lines[0]["headers"] == {"x-api-key": REDACTED, "authorization": REDACTED}
    assert "timestamp" in lines[0]
    assert "ValueError" in lines[1]["exception"]
    assert lines[1]["password"] == REDACTED
    assert KEY not in stream.getvalue()
    assert "hunter2-long" not in stream.getvalue()


def test_configure_logging_console_and_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKEX_LOG", "warning")
    monkeypatch.setenv("TINKER_LOG", "debug")
    monkeypatch.delenv("TINKEX_LOG_FORMAT", raising=False)
    stream = io.StringIO()
    configure_logging(stream=stream)
    log = structlog.get_logger()
    log.info("hidden")
    log.warning("shown", api_key=KEY)
    try:
        raise KeyError(KEY)
    except KeyError:
        log.error("crash", exc_info=True)
    text = stream.getvalue()
    assert "hidden" not in text
    assert "shown" in text
    assert "crash" in text
    assert "KeyError" in text
    assert KEY not in text
    assert "\x1b[" not in text, "no colours on a non-tty stream"


def test_configure_logging_format_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKEX_LOG_FORMAT", "json")
    stream = io.StringIO()
    configure_logging(level="info", stream=stream)
    structlog.get_logger().info("hello", n=1)
    assert json.loads(stream.getvalue())["n"] == 1
    monkeypatch.setenv("TINKEX_LOG_FORMAT", "xml")
    with pytest.raises(TinkexValidationError, match="TINKEX_LOG_FORMAT"):
        configure_logging(stream=stream)


def test_bad_levels_name_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_log_level("WARN") == logging.WARNING
    assert parse_log_level(15) == 15
    monkeypatch.setenv("TINKEX_LOG", "loud")
    with pytest.raises(TinkexValidationError) as info:
        configure_logging()
    assert info.value.field == "TINKEX_LOG"
    assert "debug, info" in str(info.value)
    with pytest.raises(TinkexValidationError):
        configure_logging(level="verbose")


_FRAGMENTS = st.sampled_from(
    [
        "Bearer ",
        "BEARER ",
        "basic ",
        "Basic ",
        "dGVzdDp0ZXN0MTIz",
        "tml-",
        "hf_",
        "abcdefghijklmnopqrstuv",
        "api_key=",
        "Api-Key: ",
        "x-api-key",
        "token",
        "password=",
        "secret",
        "authorization: ",
        "https://",
        "user:pw@",
        "host/path",
        "/api/v1/asample",
        "POST",
        " ",
        "=",
        "'",
        '"',
        "0123456789",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=8).map("".join))
def test_the_shortcut_never_changes_what_is_redacted(text: str) -> None:
    """redact_text's one-search shortcut gives exactly what the full rule pass gives."""
    from tinkex_telemetry._redact import apply_text_rules, redact_text

    assert redact_text(text) == apply_text_rules(text)
