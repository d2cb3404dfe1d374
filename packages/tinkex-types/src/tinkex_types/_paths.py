"""``tinker://`` paths (protocol.md §2.3).

tinkex's own server issues ``tinker://<training_run_id>/<kind>/<name>`` (:class:`TinkerPath`).
Other Tinker-compatible servers issue other shapes (skyrl-tx: ``tinker://<model_id>/<name>``),
so paths a client sends back are taken as the server gave them: :func:`check_tinker_path`
asks only for the scheme and something after it, and :class:`CheckpointRef` splits a path
into the training run (first segment) and the checkpoint id (the rest) where a URL needs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tinkex_types._base import CheckpointType

__all__ = [
    "CHECKPOINT_KINDS",
    "TINKER_SCHEME",
    "CheckpointKind",
    "CheckpointRef",
    "ParsedCheckpointTinkerPath",
    "TinkerPath",
    "check_tinker_path",
    "checkpoint_id",
    "checkpoint_type_for_kind",
    "kind_for_checkpoint_type",
    "parse_checkpoint_id",
]

TINKER_SCHEME = "tinker://"
CheckpointKind = Literal["weights", "sampler_weights"]
CHECKPOINT_KINDS: tuple[CheckpointKind, ...] = ("weights", "sampler_weights")

_TYPE_BY_KIND: dict[str, CheckpointType] = {"weights": "training", "sampler_weights": "sampler"}
_KIND_BY_TYPE: dict[str, CheckpointKind] = {"training": "weights", "sampler": "sampler_weights"}


def checkpoint_type_for_kind(kind: str) -> CheckpointType:
    """``weights`` → ``training``, ``sampler_weights`` → ``sampler``."""
    try:
        return _TYPE_BY_KIND[kind]
    except KeyError:
        raise ValueError(
            f"unknown checkpoint kind {kind!r}: use 'weights' or 'sampler_weights'"
        ) from None


def kind_for_checkpoint_type(checkpoint_type: str) -> CheckpointKind:
    """``training`` → ``weights``, ``sampler`` → ``sampler_weights``."""
    try:
        return _KIND_BY_TYPE[checkpoint_type]
    except KeyError:
        raise ValueError(
            f"unknown checkpoint type {checkpoint_type!r}: use 'training' or 'sampler'"
        ) from None


def _check_kind(kind: str, where: str) -> CheckpointKind:
    if kind == "weights":
        return "weights"
    if kind == "sampler_weights":
        return "sampler_weights"
    raise ValueError(f"{where}: kind {kind!r} is not 'weights' or 'sampler_weights'")


def _check_name(name: str, where: str) -> str:
    if not name:
        raise ValueError(f"{where}: the checkpoint name is empty")
    if "/" in name:
        raise ValueError(f"{where}: the checkpoint name {name!r} must not contain '/'")
    return name


def checkpoint_id(kind: str, name: str) -> str:
    """The checkpoint id ``<kind>/<name>`` (e.g. ``weights/step-0010``)."""
    return f"{_check_kind(kind, 'checkpoint id')}/{_check_name(name, 'checkpoint id')}"


def parse_checkpoint_id(value: str) -> tuple[CheckpointKind, str]:
    """Split ``<kind>/<name>`` into its parts; ValueError if malformed."""
    kind, sep, name = value.partition("/")
    if not sep:
        raise ValueError(
            f"checkpoint id {value!r} must look like 'weights/<name>' or 'sampler_weights/<name>'"
        )
    where = f"checkpoint id {value!r}"
    return _check_kind(kind, where), _check_name(name, where)


@dataclass(frozen=True, slots=True)
class TinkerPath:
    """A parsed ``tinker://<training_run_id>/<kind>/<name>`` path; ``str()`` formats it."""

    training_run_id: str
    kind: CheckpointKind
    name: str

    def __post_init__(self) -> None:
        where = "tinker path"
        if not self.training_run_id:
            raise ValueError(f"{where}: the training run id is empty")
        if "/" in self.training_run_id:
            raise ValueError(f"{where}: the training run id {self.training_run_id!r} contains '/'")
        _check_kind(self.kind, where)
        _check_name(self.name, where)

    @classmethod
    def parse(cls, path: str) -> TinkerPath:
        """Parse ``tinker://run/kind/name``; ValueError names what is wrong."""
        if not isinstance(path, str):
            raise TypeError(f"a tinker path must be a str, got {type(path).__name__}")
        if not path.startswith(TINKER_SCHEME):
            raise ValueError(f"tinker path {path!r} must start with {TINKER_SCHEME!r}")
        parts = path[len(TINKER_SCHEME) :].split("/")
        if len(parts) != 3:
            raise ValueError(
                f"tinker path {path!r} must have exactly 3 parts after the scheme "
                f"(<training_run_id>/<kind>/<name>), got {len(parts)}"
                + (" (names must not contain '/')" if len(parts) > 3 else "")
            )
        run, kind, name = parts
        for label, part in (("training run id", run), ("kind", kind), ("name", name)):
            if not part:
                raise ValueError(f"tinker path {path!r}: the {label} part is empty")
        return cls(training_run_id=run, kind=_check_kind(kind, f"tinker path {path!r}"), name=name)

    @classmethod
    def for_checkpoint(cls, training_run_id: str, checkpoint_type: str, name: str) -> TinkerPath:
        """Build from a checkpoint type (``training``/``sampler``) instead of a kind."""
        return cls(training_run_id, kind_for_checkpoint_type(checkpoint_type), name)

    @property
    def checkpoint_type(self) -> CheckpointType:
        return _TYPE_BY_KIND[self.kind]

    @property
    def checkpoint_id(self) -> str:
        """``<kind>/<name>``."""
        return f"{self.kind}/{self.name}"

    def __str__(self) -> str:
        return f"{TINKER_SCHEME}{self.training_run_id}/{self.kind}/{self.name}"

    def to_parsed(self) -> ParsedCheckpointTinkerPath:
        return ParsedCheckpointTinkerPath(
            tinker_path=str(self),
            training_run_id=self.training_run_id,
            checkpoint_type=self.checkpoint_type,
            checkpoint_id=self.checkpoint_id,
        )


@dataclass(frozen=True, slots=True)
class ParsedCheckpointTinkerPath:
    """The official SDK's parsed form: ``checkpoint_id`` is ``<kind>/<name>``."""

    tinker_path: str
    training_run_id: str
    checkpoint_type: CheckpointType
    checkpoint_id: str

    @classmethod
    def from_tinker_path(cls, tinker_path: str) -> ParsedCheckpointTinkerPath:
        return TinkerPath.parse(tinker_path).to_parsed()


def check_tinker_path(path: object) -> str:
    """``path`` itself if it is ``tinker://`` and something; ValueError/TypeError otherwise."""
    if not isinstance(path, str):
        raise TypeError(f"a tinker path must be a str, got {type(path).__name__}")
    if not path.startswith(TINKER_SCHEME):
        raise ValueError(f"tinker path {path!r} must start with {TINKER_SCHEME!r}")
    rest = path[len(TINKER_SCHEME) :]
    if not rest.strip("/"):
        raise ValueError(f"tinker path {path!r} is empty after {TINKER_SCHEME!r}")
    if rest.startswith("/"):
        raise ValueError(f"tinker path {path!r}: the training run id (first part) is empty")
    return path


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """Any server's checkpoint path: ``tinker://<training_run_id>/<checkpoint_id>``.

    ``checkpoint_id`` is everything after the first ``/`` (``weights/step-1`` on tinkex
    and the hosted service, ``diag_s`` on skyrl-tx); ``str()`` gives the path back as given.
    """

    training_run_id: str
    checkpoint_id: str

    @classmethod
    def parse(cls, path: object, *, need_checkpoint: bool = True) -> CheckpointRef:
        """Split a path; ValueError if it has no run or (``need_checkpoint``) no checkpoint."""
        text = check_tinker_path(path)
        run, _, checkpoint = text[len(TINKER_SCHEME) :].partition("/")
        if need_checkpoint and not checkpoint.strip("/"):
            raise ValueError(
                f"tinker path {text!r} names no checkpoint after the training run id {run!r}"
            )
        return cls(training_run_id=run, checkpoint_id=checkpoint)

    def __str__(self) -> str:
        if not self.checkpoint_id:
            return f"{TINKER_SCHEME}{self.training_run_id}"
        return f"{TINKER_SCHEME}{self.training_run_id}/{self.checkpoint_id}"
