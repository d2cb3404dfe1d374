"""Server configuration: :class:`ServerConfig` (data directory, limits, timings, API keys)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["DATA_DIR_ENV", "PATH_STYLES", "ServerConfig", "default_data_dir"]

#: Environment variable naming the data directory (SQLite database + checkpoint files).
DATA_DIR_ENV = "TINKEX_DATA_DIR"
#: The shapes of issued ``tinker://`` save paths (:attr:`ServerConfig.path_style`).
PATH_STYLES = ("standard", "two-part")


def default_data_dir() -> Path:
    """``$TINKEX_DATA_DIR`` if set, else ``platformdirs.user_data_dir("tinkex")``."""
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("tinkex"))


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"ServerConfig.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class ServerConfig:
    """Everything that shapes one server instance.

    * ``data_dir``: SQLite database (``tinkex.sqlite3``) and checkpoint files; default
      :func:`default_data_dir`.
    * ``api_keys``: when non-empty, every request must carry one of them in ``X-API-Key``
      (else 401). Empty accepts any key. Never shown by ``repr``.
    * ``seq_gap_grace_s``: how long a model's queue waits for a missing ``seq_id`` before
      skipping it (protocol.md §2.6).
    * ``poll_hold_s``: how long ``retrieve_future`` holds an unfinished future before
      answering 408 ``try_again``.
    * ``result_ttl_s``: how long completed future results stay retrievable.
    * ``idempotency_ttl_s``: how long ``create_session`` answers are cached per
      ``X-Idempotency-Key``.
    * ``max_body_bytes``: larger request bodies get 413.
    * ``max_sample_batch``: sampling requests handed to the engine as one batch, at most
      (default: the engine's own row batch, 64 rows decoded together).
    * ``max_queued_samples``: pending sampling requests beyond this get 429 (back-pressure).
    * ``max_num_samples`` / ``max_topk_prompt_logprobs``: per-request limits (400 beyond).
    * ``default_max_tokens``: the cap when a sampling request gives no ``max_tokens``
      (never beyond the room left in the model's context).
    * ``archive_url_ttl_s``: validity of signed archive download URLs.
    * ``enable_test_routes``: adds ``/api/v1/_test/...`` routes (mark a run corrupted, read
      the applied-steps log and the stored telemetry). Off by default.
    * ``model_owner``: ``model_owner`` of every training run.
    * ``protobuf``: speak the later generations (official SDK 0.18 - 0.38): ``client/config``
      with protobuf flags, protobuf (and zstd) request bodies, protobuf results. ``False``
      is a JSON-only server of the 0.16.1 generation: ``client/config`` and
      ``dynamic_config`` answer 404 and protobuf bodies 415.
    * ``path_style``: the shape of the ``tinker://`` paths this server issues for saves:
      ``"standard"`` (``tinker://<run>/weights/<name>``) or ``"two-part"``
      (``tinker://<run>/<name>``, the checkpoint kind left implicit; both shapes are accepted
      back).
    """

    data_dir: Path = field(default_factory=default_data_dir)
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    seq_gap_grace_s: float = 30.0
    poll_hold_s: float = 30.0
    result_ttl_s: float = 7 * 24 * 3600.0
    idempotency_ttl_s: float = 600.0
    max_body_bytes: int = 64 * 1024 * 1024
    max_sample_batch: int = 64
    max_queued_samples: int = 2000
    max_num_samples: int = 128
    default_max_tokens: int = 1024
    max_topk_prompt_logprobs: int = 50
    archive_url_ttl_s: float = 900.0
    enable_test_routes: bool = False
    model_owner: str = "local"
    protobuf: bool = True
    path_style: str = "standard"

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        keys = self.api_keys
        if isinstance(keys, str):
            keys = (keys,)
        keys = tuple(k for k in keys if k)
        for key in keys:
            if not isinstance(key, str):
                raise ValueError("ServerConfig.api_keys must be strings")
        object.__setattr__(self, "api_keys", keys)
        if self.path_style not in PATH_STYLES:
            raise ValueError(
                f"ServerConfig.path_style must be one of {', '.join(PATH_STYLES)}, "
                f"got {self.path_style!r}"
            )
        for name in (
            "seq_gap_grace_s",
            "poll_hold_s",
            "result_ttl_s",
            "idempotency_ttl_s",
            "max_body_bytes",
            "max_sample_batch",
            "max_queued_samples",
            "max_num_samples",
            "default_max_tokens",
            "max_topk_prompt_logprobs",
            "archive_url_ttl_s",
        ):
            _positive(name, getattr(self, name))

    @property
    def auth_required(self) -> bool:
        """Whether requests must present one of :attr:`api_keys`."""
        return bool(self.api_keys)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "tinkex.sqlite3"

    def with_changes(self, **changes: Any) -> ServerConfig:
        """A copy with some fields replaced."""
        return replace(self, **changes)

    @classmethod
    def from_keys(cls, keys: Iterable[str] | str | None, **kwargs: Any) -> ServerConfig:
        """Build with ``api_keys`` from a key, a list of keys or ``None``."""
        if keys is None:
            return cls(**kwargs)
        if isinstance(keys, str):
            return cls(api_keys=(keys,), **kwargs)
        return cls(api_keys=tuple(keys), **kwargs)
