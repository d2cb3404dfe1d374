"""Plugin manager factory, the typed facade over the hooks, and named registries."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import pluggy
import structlog

from tinkex_types import hookspecs
from tinkex_types._errors import PluginError
from tinkex_types._events import (
    FutureEvent,
    QueueStateEvent,
    RegularizerEvent,
    RequestEvent,
    SessionEvent,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Hooks",
    "Registry",
    "get_hooks",
    "make_plugin_manager",
    "set_hooks",
]

ENTRY_POINT_GROUP = "tinkex"
_log = structlog.get_logger("tinkex.plugins")

_T = TypeVar("_T")


class Registry(Generic[_T]):
    """Name → object mapping fed by a ``register`` callback; duplicate names are errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, _T] = {}

    def register(self, name: str, item: _T) -> None:
        """Add ``item`` under ``name``; raises :class:`PluginError` if the name is taken."""
        if not isinstance(name, str) or not name:
            raise PluginError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise PluginError(
                f"{self.kind} {name!r} is registered twice "
                f"(already by {self._items[name]!r}); rename one of them"
            )
        self._items[name] = item

    def get(self, name: str) -> _T:
        """The item registered as ``name``; the error lists the names that exist."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise PluginError(f"unknown {self.kind} {name!r}; registered: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, _T]]:
        return sorted(self._items.items())


def _env_list(name: str) -> set[str]:
    raw = os.environ.get(name, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def make_plugin_manager(
    *,
    load_entrypoints: bool = True,
    plugins: list[object] | None = None,
) -> pluggy.PluginManager:
    """Build a fresh plugin manager.

    Loads setuptools entry points of group ``tinkex`` (unless ``load_entrypoints`` is
    false), skipping the names in ``TINKEX_DISABLE_PLUGINS`` (comma list) and, when
    ``TINKEX_LOAD_PLUGINS`` is set, everything not in it. ``plugins`` are registered
    first (hand-written plugin objects, e.g. in tests). Unknown hooks fail at once
    (``check_pending``).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for plugin in plugins or []:
        pm.register(plugin)
    if load_entrypoints:
        disabled = _env_list("TINKEX_DISABLE_PLUGINS")
        only = _env_list("TINKEX_LOAD_PLUGINS")
        for name in disabled:
            pm.set_blocked(name)
        if only:
            from importlib.metadata import entry_points

            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name not in only:
                    pm.set_blocked(ep.name)
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


class Hooks:
    """Typed facade over the hooks: the one way tinkex packages call each other."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._cache: dict[str, Registry[Any]] = {}
        self._lock = threading.Lock()

    # -- contribute named things -------------------------------------------------
    def _registry(self, kind: str, call: Callable[..., Any]) -> Registry[Any]:
        with self._lock:
            reg = self._cache.get(kind)
            if reg is None:
                reg = Registry[Any](kind)
                call(register=reg.register)
                self._cache[kind] = reg
            return reg

    def transports(self) -> Registry[Callable[..., Any]]:
        """URL scheme → transport factory, from ``tinkex_register_transports``."""
        return self._registry("transport", self.pm.hook.tinkex_register_transports)

    def regularizers(self) -> Registry[Any]:
        """Name → regularizer class, from ``tinkex_register_regularizers``."""
        return self._registry("regularizer", self.pm.hook.tinkex_register_regularizers)

    def telemetry_sinks(self) -> Registry[Any]:
        """Name → sink factory, from ``tinkex_register_telemetry_sinks``."""
        return self._registry("telemetry sink", self.pm.hook.tinkex_register_telemetry_sinks)

    def register_commands(self, cli: Any) -> None:
        """Let plugins add commands to the CLI group ``cli``."""
        self.pm.hook.tinkex_register_commands(cli=cli)

    # -- wrap / pick one ---------------------------------------------------------
    def wrap_transport(self, transport: Any, config: Any) -> Any:
        """Apply every ``tinkex_wrap_transport`` implementation in turn."""
        for impl in reversed(self.pm.hook.tinkex_wrap_transport.get_hookimpls()):
            wrapped = impl.function(transport=transport, config=config)
            if wrapped is not None:
                transport = wrapped
        return transport

    def has_transport_wrappers(self) -> bool:
        return bool(self.pm.hook.tinkex_wrap_transport.get_hookimpls())

    def resolve_tokenizer(self, name: str) -> Any | None:
        """First tokenizer any plugin resolves for ``name``, or ``None``."""
        return self.pm.hook.tinkex_resolve_tokenizer(name=name)

    # -- observers ---------------------------------------------------------------
    def _notify(self, caller: Any, **kwargs: Any) -> list[Any]:
        # Each observer is called on its own (in hook-call order), so that one that raises
        # neither breaks the caller nor hides the event from the others. Returns the
        # non-None results, in hook-call order.
        results: list[Any] = []
        for impl in reversed(caller.get_hookimpls()):
            try:
                result = impl.function(**kwargs)
            except Exception as exc:  # an observer must never break the caller
                _log.warning(
                    "observer_failed", hook=caller.name, plugin=impl.plugin_name, error=repr(exc)
                )
                continue
            if result is not None:
                results.append(result)
        return results

    def on_queue_state_change(self, event: QueueStateEvent) -> None:
        self._notify(self.pm.hook.tinkex_on_queue_state_change, event=event)

    def on_request(self, event: RequestEvent) -> None:
        self._notify(self.pm.hook.tinkex_on_request, event=event)

    def on_future(self, event: FutureEvent) -> None:
        self._notify(self.pm.hook.tinkex_on_future, event=event)

    def on_regularizer(self, event: RegularizerEvent) -> None:
        self._notify(self.pm.hook.tinkex_on_regularizer, event=event)

    def on_session(self, event: SessionEvent) -> Any | None:
        """Tell ``tinkex_on_session`` observers a session started or ended; returns the
        first non-``None`` result (on ``start``: the session's telemetry handle)."""
        results = self._notify(self.pm.hook.tinkex_on_session, event=event)
        return results[0] if results else None

    def inject_headers(self, headers: dict[str, str]) -> None:
        self._notify(self.pm.hook.tinkex_inject_headers, headers=headers)

    @contextlib.contextmanager
    def operation_span(
        self,
        operation: str,
        attributes: Mapping[str, Any] | None = None,
        carrier: Mapping[str, str] | None = None,
    ) -> Iterator[None]:
        """Enter every span context manager plugins return for ``operation``."""
        caller = self.pm.hook.tinkex_operation_span
        if not caller.get_hookimpls():
            yield
            return
        managers = caller(operation=operation, attributes=dict(attributes or {}), carrier=carrier)
        with contextlib.ExitStack() as stack:
            for manager in managers:
                if manager is not None:
                    stack.enter_context(manager)
            yield


_default: Hooks | None = None
_default_lock = threading.Lock()


def get_hooks() -> Hooks:
    """The process-wide facade, built (and entry points loaded) on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Hooks(make_plugin_manager())
    return _default


def set_hooks(hooks: Hooks | None) -> Hooks | None:
    """Replace the process-wide facade (``None`` rebuilds it on next use); returns the old."""
    global _default
    with _default_lock:
        old, _default = _default, hooks
    return old
