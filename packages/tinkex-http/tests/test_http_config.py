"""Config resolution (argument > environment > default), validation and secrecy."""

from __future__ import annotations

import copy
import logging
import pickle

import pytest
import structlog

from tinkex_http import (
    DEFAULT_BASE_URL,
    LOCAL_API_KEY,
    LOCAL_BASE_URL,
    SDK_VERSION,
    Config,
    Secret,
    __version__,
    parse_bool,
    parse_log_level,
)
from tinkex_types import TinkexValidationError

KEY = "tml-TOPSECRETVALUE123"


def test_defaults_match_the_spec() -> None:
    cfg = Config(api_key=KEY, env={})
    assert cfg.base_url == DEFAULT_BASE_URL
    assert cfg.timeout == 60.0
    assert cfg.connect_timeout == 5.0
    assert cfg.max_retries == 10
    assert cfg.retry_backoff == (0.5, 10.0)
    assert cfg.otel_propagate is True
    assert cfg.log_level is None
    assert cfg.parity_mode == "python"
    assert cfg.poll_backoff == (1.0, 30.0)
    assert cfg.pool_limits == {
        "session": 5,
        "training": 10,
        "sampling": 1000,
        "futures": 250,
        "telemetry": 5,
    }
    assert cfg.tags == []
    assert cfg.feature_gates == ["async_sampling"]
    assert cfg.telemetry_enabled is True
    assert cfg.sdk_version == SDK_VERSION == "0.16.1"
    assert cfg.user_agent == f"tinkex/{__version__}"
    assert cfg.project_id is None
    assert cfg.user_metadata is None
    assert cfg.future_timeout is None
    assert cfg.heartbeat_interval == 10.0


def test_environment_is_used_when_no_argument() -> None:
    env = {
        "TINKER_API_KEY": KEY,
        "TINKER_BASE_URL": "http://example.test:8080/prefix/",
        "TINKER_TAGS": "a, b,a,,c",
        "TINKER_FEATURE_GATES": "x",
        "TINKER_TELEMETRY": "off",
        "TINKER_LOG": "WARN",
        "TINKER_PROJECT_ID": "proj",
        "CLOUDFLARE_ACCESS_CLIENT_ID": "cf-id",
        "CLOUDFLARE_ACCESS_CLIENT_SECRET": "cf-secret-value",
        "TINKEX_DUMP_HEADERS": "yes",
        "TINKEX_DEFAULT_HEADERS": '{"X-Team": "ml", "X-N": 3}',
        "TINKEX_DEFAULT_QUERY": '{"region": "eu"}',
        "TINKEX_PROXY": "http://user:pw@proxy.test:3128",
        "TINKEX_PROXY_HEADERS": '[["X-Proxy", "1"]]',
        "TINKEX_POOL_SIZE": "4",
        "TINKEX_POOL_COUNT": "6",
        "TINKEX_POLL_BACKOFF": "none",
        "TINKEX_OTEL_PROPAGATE": "1",
        "TINKEX_TIMEOUT": "12.5",
        "TINKEX_MAX_RETRIES": "3",
        "TINKEX_RETRY_BACKOFF": " 0.25 , 4 ",
        "TINKEX_FUTURE_TIMEOUT": "600",
    }
    cfg = Config(env=env)
    assert cfg.api_key.get_secret_value() == KEY
    assert cfg.base_url == "http://example.test:8080/prefix"
    assert cfg.tags == ["a", "b", "c"]
    assert cfg.feature_gates == ["x"]
    assert cfg.telemetry_enabled is False
    assert cfg.log_level == "warning"
    assert cfg.project_id == "proj"
    assert cfg.cf_access_client_id == "cf-id"
    assert cfg.cf_access_client_secret == Secret("cf-secret-value")
    assert cfg.dump_headers is True
    assert cfg.default_headers == {"X-Team": "ml", "X-N": "3"}
    assert cfg.default_query == {"region": "eu"}
    assert cfg.proxy is not None
    assert cfg.proxy.get_secret_value().endswith("@proxy.test:3128")
    assert cfg.proxy_headers == {"X-Proxy": "1"}
    assert cfg.pool_limits["sampling"] == 24
    assert cfg.pool_limits["futures"] == 2 * 3
    assert cfg.poll_backoff is None
    assert cfg.otel_propagate is True
    assert cfg.timeout == 12.5
    assert cfg.max_retries == 3
    assert cfg.retry_backoff == (0.25, 4.0)
    assert cfg.future_timeout == 600.0


def test_explicit_arguments_beat_environment() -> None:
    env = {"TINKER_API_KEY": "tml-from-env", "TINKER_BASE_URL": "http://env.test"}
    cfg = Config(api_key=KEY, base_url="https://arg.test/x", env=env)
    assert cfg.api_key.get_secret_value() == KEY
    assert cfg.base_url == "https://arg.test/x"


def test_parity_mode_selects_defaults_but_explicit_values_win() -> None:
    beam = Config(api_key=KEY, env={"TINKEX_PARITY": "Elixir"})
    assert (beam.parity_mode, beam.timeout, beam.max_retries) == ("beam", 120.0, 2)
    explicit = Config(api_key=KEY, parity_mode="beam", max_retries=7, env={})
    assert explicit.max_retries == 7


def test_local_and_loopback_urls_get_a_placeholder_key() -> None:
    local = Config(base_url=LOCAL_BASE_URL, env={})
    assert local.api_key.get_secret_value() == LOCAL_API_KEY
    assert local.api_key_is_placeholder
    loop = Config(base_url="http://127.0.0.1:8000", env={})
    assert loop.api_key.get_secret_value() == LOCAL_API_KEY


@pytest.mark.parametrize(
    ("kwargs", "env", "field"),
    [
        ({}, {}, "api_key"),
        ({"api_key": "sk-wrong-prefix-SECRET"}, {}, "api_key"),
        ({}, {"TINKER_API_KEY": "wrong-SECRET"}, "TINKER_API_KEY"),
        ({"api_key": KEY, "base_url": "no-scheme.test"}, {}, "base_url"),
        ({"api_key": KEY}, {"TINKER_BASE_URL": "https://"}, "TINKER_BASE_URL"),
        ({"api_key": KEY, "timeout": -1}, {}, "timeout"),
        ({"api_key": KEY}, {"TINKEX_TIMEOUT": "soon"}, "TINKEX_TIMEOUT"),
        ({"api_key": KEY, "max_retries": -2}, {}, "max_retries"),
        ({"api_key": KEY}, {"TINKEX_POOL_SIZE": "0"}, "TINKEX_POOL_SIZE"),
        ({"api_key": KEY}, {"TINKEX_PARITY": "cobol"}, "TINKEX_PARITY"),
        ({"api_key": KEY}, {"TINKER_TELEMETRY": "maybe"}, "TINKER_TELEMETRY"),
        ({"api_key": KEY}, {"TINKER_LOG": "loud"}, "TINKER_LOG"),
        ({"api_key": KEY, "log_level": "verbose"}, {}, "log_level"),
        ({"api_key": KEY, "log_level": 10}, {}, "log_level"),
        ({"api_key": KEY}, {"TINKEX_OTEL_PROPAGATE": "maybe"}, "TINKEX_OTEL_PROPAGATE"),
        ({"api_key": KEY}, {"TINKEX_RETRY_BACKOFF": "fast"}, "TINKEX_RETRY_BACKOFF"),
        ({"api_key": KEY}, {"TINKEX_RETRY_BACKOFF": "0.5"}, "TINKEX_RETRY_BACKOFF"),
        ({"api_key": KEY}, {"TINKEX_RETRY_BACKOFF": "1,2,3"}, "TINKEX_RETRY_BACKOFF"),
        ({"api_key": KEY}, {"TINKEX_RETRY_BACKOFF": "5,1"}, "TINKEX_RETRY_BACKOFF"),
        ({"api_key": KEY}, {"TINKEX_RETRY_BACKOFF": "-1,2"}, "TINKEX_RETRY_BACKOFF"),
        ({"api_key": KEY}, {"TINKEX_RETRY_BACKOFF": "0.5,inf"}, "TINKEX_RETRY_BACKOFF"),
        ({"api_key": KEY, "retry_backoff": (2.0, 1.0)}, {}, "retry_backoff"),
        ({"api_key": KEY, "retry_backoff": (True, 1.0)}, {}, "retry_backoff"),
        ({"api_key": KEY, "retry_backoff": (0.5,)}, {}, "retry_backoff"),
        ({"api_key": KEY, "retry_backoff": 3.0}, {}, "retry_backoff"),
        ({"api_key": KEY, "retry_backoff": ("a", 1.0)}, {}, "retry_backoff"),
        ({"api_key": KEY}, {"TINKEX_DEFAULT_HEADERS": "{nope"}, "TINKEX_DEFAULT_HEADERS"),
        ({"api_key": KEY}, {"TINKEX_DEFAULT_HEADERS": "[1]"}, "TINKEX_DEFAULT_HEADERS"),
        ({"api_key": KEY}, {"TINKEX_PROXY": "ftp://x"}, "TINKEX_PROXY"),
        ({"api_key": KEY}, {"TINKEX_POLL_BACKOFF": "sometimes"}, "TINKEX_POLL_BACKOFF"),
        ({"api_key": KEY, "poll_backoff": (5.0, 1.0)}, {}, "poll_backoff"),
        ({"api_key": KEY, "project_id": "  "}, {}, "project_id"),
        ({"api_key": KEY, "user_metadata": {"a": 1}}, {}, "user_metadata['a']"),
        ({"api_key": KEY, "pool_limits": {"gpu": 3}}, {}, "pool_limits['gpu']"),
        ({"api_key": KEY, "pool_limits": {"session": 0}}, {}, "pool_limits['session']"),
    ],
)
def test_invalid_values_fail_naming_the_field(
    kwargs: dict[str, object], env: dict[str, str], field: str
) -> None:
    with pytest.raises(TinkexValidationError) as info:
        Config(**kwargs, env=env)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert "SECRET" not in str(info.value)


def test_secret_never_shows() -> None:
    secret = Secret(KEY)
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r:>40}"):
        assert KEY not in text
        assert "[REDACTED]" in text
    assert secret.get_secret_value() == KEY
    assert secret == Secret(KEY)
    assert secret != Secret("tml-other")
    assert copy.deepcopy(secret) is secret
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(AttributeError):
        secret._value = "x"  # type: ignore[misc]


def test_config_repr_and_redacted_hide_every_secret() -> None:
    cfg = Config(
        api_key=KEY,
        cf_access_client_secret="cf-SECRET-xyz",
        proxy="http://bob:hunter2@proxy.test:3128",
        default_headers={"Authorization": "Bearer tok-SECRET", "X-Ok": "visible"},
        env={},
    )
    for text in (repr(cfg), str(cfg), str(cfg.redacted())):
        assert KEY not in text
        assert "cf-SECRET" not in text
        assert "hunter2" not in text
        assert "tok-SECRET" not in text
        assert "visible" in text
        assert "proxy.test:3128" in text
    with pytest.raises(TypeError):
        pickle.dumps(cfg)


def test_config_in_structlog_output_is_redacted() -> None:
    cfg = Config(api_key=KEY, env={})
    with structlog.testing.capture_logs() as logs:
        structlog.get_logger("t").info("configured", config=cfg, key=cfg.api_key)
    assert KEY not in repr(logs)


def test_replace_validates_and_keeps_other_fields() -> None:
    cfg = Config(api_key=KEY, tags=["t"], env={})
    other = cfg.replace(timeout=5)
    assert other.timeout == 5.0
    assert other.tags == ["t"]
    assert other.api_key == cfg.api_key
    assert cfg.timeout == 60.0
    with pytest.raises(TinkexValidationError):
        cfg.replace(timeout=0)
    with pytest.raises(AttributeError):
        cfg.timeout = 1.0  # type: ignore[misc]
    local = Config(base_url="local://", env={})
    assert local.replace(timeout=3).api_key_is_placeholder


def test_tenant_key_does_not_hold_the_key() -> None:
    cfg = Config(api_key=KEY, base_url="HTTPS://Example.TEST:443/a/b", env={})
    assert cfg.pool_key == "https://example.test"
    assert KEY not in repr(cfg.tenant_key)
    assert cfg.tenant_key == Config(api_key=KEY, base_url="https://example.test", env={}).tenant_key
    assert (
        cfg.tenant_key
        != Config(api_key="tml-other", base_url="https://example.test", env={}).tenant_key
    )


def test_retry_backoff_forms_and_bounds() -> None:
    assert Config(api_key=KEY, retry_backoff=(0.02, 1), env={}).retry_backoff == (0.02, 1.0)
    assert Config(api_key=KEY, retry_backoff=[1, 1], env={}).retry_backoff == (1.0, 1.0)  # type: ignore[arg-type]
    assert Config(api_key=KEY, retry_backoff="0,0", env={}).retry_backoff == (0.0, 0.0)
    # the argument beats the environment; replace() keeps and re-validates it
    env = {"TINKEX_RETRY_BACKOFF": "3,30"}
    assert Config(api_key=KEY, env=env).retry_backoff == (3.0, 30.0)
    cfg = Config(api_key=KEY, retry_backoff=(0.1, 2.0), env=env)
    assert cfg.retry_backoff == (0.1, 2.0)
    assert cfg.replace(timeout=5.0).retry_backoff == (0.1, 2.0)
    with pytest.raises(TinkexValidationError) as info:
        cfg.replace(retry_backoff=(3.0, 2.0))
    assert info.value.field == "retry_backoff"
    assert "initial 3 s is above max 2 s" in str(info.value)
    assert "retry_backoff=(0.1, 2.0)" in repr(cfg)


def test_parse_log_level_is_the_one_parser() -> None:
    assert parse_log_level(None) is None
    assert parse_log_level("  ") is None
    assert parse_log_level(" WARN ", "TINKER_LOG") == logging.WARNING
    assert parse_log_level("Critical") == logging.CRITICAL
    assert parse_log_level(15) == 15
    with pytest.raises(TinkexValidationError) as info:
        parse_log_level("loud", "TINKER_LOG")
    assert info.value.field == "TINKER_LOG"
    assert "'loud'" in str(info.value)
    assert "debug, info, warning" in str(info.value)
    with pytest.raises(TinkexValidationError):
        parse_log_level("10")  # names only in strings
    with pytest.raises(TinkexValidationError):
        parse_log_level(True)


def test_log_level_is_stored_as_a_canonical_name() -> None:
    for raw, name in [("WARN", "warning"), ("critical", "critical"), ("Debug", "debug")]:
        assert Config(api_key=KEY, env={"TINKER_LOG": raw}).log_level == name
        assert Config(api_key=KEY, log_level=raw, env={}).log_level == name
    assert Config(api_key=KEY, env={"TINKER_LOG": " "}).log_level is None


def test_parse_bool() -> None:
    assert parse_bool(True, "x") is True
    assert parse_bool(" Yes ", "x") is True
    assert parse_bool("f", "x") is False
    assert parse_bool("", "x") is False
    with pytest.raises(TinkexValidationError) as info:
        parse_bool("maybe", "TINKEX_OTEL_PROPAGATE")
    assert info.value.field == "TINKEX_OTEL_PROPAGATE"


def test_otel_propagate_defaults_on_and_reads_the_variable() -> None:
    assert Config(api_key=KEY, env={}).otel_propagate is True
    assert Config(api_key=KEY, env={"TINKEX_OTEL_PROPAGATE": "off"}).otel_propagate is False
    assert Config(api_key=KEY, otel_propagate=False, env={}).otel_propagate is False


def test_config_is_frozen_for_real() -> None:
    cfg = Config(api_key=KEY, tags=["a"], default_headers={"X-A": "1"}, env={})
    with pytest.raises(AttributeError):
        cfg.base_url = "http://elsewhere.test"  # type: ignore[misc]
    with pytest.raises(TypeError, match=r"replace\(\.\.\.\)"):
        cfg.tags.append("b")
    with pytest.raises(TypeError):
        cfg.default_headers["X-B"] = "2"
    with pytest.raises(TypeError):
        cfg.pool_limits.update(session=1)
    assert cfg.tags == ["a"]
    assert cfg.default_headers == {"X-A": "1"}
    assert copy.deepcopy(cfg.tags) == ["a"]
    assert cfg.replace(tags=["b"]).tags == ["b"]


def test_from_env_is_arguments_then_environment_then_defaults() -> None:
    env = {"TINKEX_TIMEOUT": "7", "TINKEX_MAX_RETRIES": "4"}
    cfg = Config.from_env(env, api_key=KEY, max_retries=1)
    assert (cfg.timeout, cfg.max_retries, cfg.connect_timeout) == (7.0, 1, 5.0)
    assert cfg == Config(api_key=KEY, max_retries=1, env=env)


def test_unknown_field_names_every_field() -> None:
    with pytest.raises(TypeError) as info:
        Config(api_key=KEY, timeut=3, env={})  # misspelt on purpose
    assert "timeut" in str(info.value)
    assert "timeout" in str(info.value)


def test_the_settings_table_drives_fields_repr_and_docs() -> None:
    from pathlib import Path

    settings = Config.settings()
    names = [s.name for s in settings]
    cfg = Config(api_key=KEY, env={})
    assert names == list(cfg.redacted())
    assert repr(cfg).startswith("Config(api_key='[REDACTED]', base_url=")
    assert all(s.doc for s in settings)
    doc = (Path(__file__).resolve().parents[3] / "docs" / "configuration.md").read_text()
    for s in settings:
        env = f"`{s.env}`" if s.env else "–"
        assert f"| `{s.name}` | {env} |" in doc, s
