"""Plugin manager factory, the typed facade over the hooks, and named registries."""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

import pluggy
import structlog

from tinkex_types import hookspecs
from tinkex_types._errors import PluginError
from tinkex_types._events import (
    CircuitBreakerEvent,
    FutureEvent,
    QueueStateEvent,
    RecoveryEvent,
    RegularizerEvent,
    RequestEvent,
    SessionEvent,
)
from tinkex_types._protocols import (
    AsyncTransport,
    CommandGroup,
    RegularizerFactory,
    TelemetrySinkFactory,
    TransportConfig,
    TransportFactory,
)
from tinkex_types._tokenizer import Tokenizer

__all__ = [
    "DEFAULT_PLUGINS",
    "ENTRY_POINT_GROUP",
    "DefaultPlugin",
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


@dataclass(frozen=True)
class DefaultPlugin:
    """A built-in plugin module of a tinkex package, registered whenever it is importable."""

    #: The plugin's name: that of its entry point, the one ``TINKEX_DISABLE_PLUGINS`` takes.
    name: str
    #: The module registered as the plugin.
    module: str
    #: The distribution that ships it (``TINKEX_DISABLE_PLUGINS`` also takes this name).
    distribution: str


#: The built-in plugins (as simonw/llm's ``DEFAULT_PLUGINS``): registered by
#: :func:`make_plugin_manager` even with ``load_entrypoints=False`` or a
#: ``TINKEX_LOAD_PLUGINS`` that does not list them, so a client always has the ``http``,
#: ``https`` and ``local`` transports, the tokenizers, ``tinkex serve`` and the built-in
#: regularizers of the packages that are installed. ``TINKEX_DISABLE_PLUGINS`` still blocks
#: them by name. tinkex-telemetry is not among them: it reports and traces rather than
#: provides, so it loads as an ordinary entry point (``TINKEX_LOAD_PLUGINS`` selects it).
DEFAULT_PLUGINS: tuple[DefaultPlugin, ...] = (
    DefaultPlugin("http", "tinkex_http._plugin", "tinkex-http"),
    DefaultPlugin("clients", "tinkex_clients._plugin", "tinkex-clients"),
    DefaultPlugin("server", "tinkex_server._plugin", "tinkex-server"),
    DefaultPlugin("regularizers", "tinkex_regularizers._plugin", "tinkex-regularizers"),
)


def _env_list(name: str) -> set[str]:
    raw = os.environ.get(name, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _dist_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return _canonical(dist.name) if dist is not None and dist.name else ""


def _named(ep: EntryPoint, names: set[str]) -> bool:
    """Whether ``names`` lists the entry point by its own name or by its distribution's."""
    return ep.name in names or _dist_name(ep) in {_canonical(n) for n in names}


def _is_default(ep: EntryPoint) -> bool:
    return any(ep.name == d.name and ep.value == d.module for d in DEFAULT_PLUGINS)


def _isolate(hook_name: str, impl: pluggy.HookImpl) -> None:
    """Make one observer implementation swallow (and log) its own exceptions.

    pluggy stops a hook call at the first implementation that raises; an observer must
    neither break its caller nor hide the event from the other observers. So each observer
    implementation's function is replaced, once, by a guard that calls it and logs
    ``observer_failed`` instead of raising. The hook is still one pluggy call: every
    implementation receives only its own argument names (pluggy read them from the original
    function), ``wrapper=True`` implementations wrap the whole call and tracing sees it.
    """
    original = impl.function
    if getattr(original, "_tinkex_isolated", False):
        return

    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except Exception as exc:  # an observer must never break the caller
            _log.warning(
                "observer_failed", hook=hook_name, plugin=impl.plugin_name, error=repr(exc)
            )
            return None

    guarded._tinkex_isolated = True  # type: ignore[attr-defined]
    # HookImpl.function is declared Final, but pluggy reads it on every call: replacing it
    # is how the guard runs inside pluggy's own call loop.
    impl.function = guarded  # type: ignore[misc]


def _isolate_plugin(pm: pluggy.PluginManager, plugin: object) -> None:
    """Isolate every plain observer implementation of ``plugin`` (see :func:`_isolate`)."""
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.name not in hookspecs.OBSERVER_HOOKS:
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                _isolate(caller.name, impl)


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager whose observer implementations are isolated on registration."""

    def register(self, plugin: object, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        if registered is not None:
            _isolate_plugin(self, plugin)
        return registered


def _block(pm: pluggy.PluginManager, eps: list[EntryPoint], defaults: bool) -> None:
    """Block the plugins ``TINKEX_DISABLE_PLUGINS`` names and, when ``TINKEX_LOAD_PLUGINS``
    is set, the entry points it does not name (the built-ins excepted, when ``defaults``)."""
    disabled = _env_list("TINKEX_DISABLE_PLUGINS")
    only = _env_list("TINKEX_LOAD_PLUGINS")
    for name in disabled:
        pm.set_blocked(name)
    for default in DEFAULT_PLUGINS:
        if _canonical(default.distribution) in {_canonical(n) for n in disabled}:
            pm.set_blocked(default.name)
    for ep in eps:
        kept = (defaults and _is_default(ep)) or _named(ep, only)
        if _named(ep, disabled) or (only and not kept):
            pm.set_blocked(ep.name)


def _register_default(pm: pluggy.PluginManager, default: DefaultPlugin) -> None:
    if pm.is_blocked(default.name) or pm.has_plugin(default.name):
        return
    package = default.module.partition(".")[0]
    if importlib.util.find_spec(package) is None:
        return  # that tinkex package is not installed
    module = importlib.import_module(default.module)
    if not pm.is_registered(module):
        pm.register(module, name=default.name)


def make_plugin_manager(
    *,
    load_entrypoints: bool = True,
    plugins: list[object] | None = None,
    defaults: bool = True,
) -> pluggy.PluginManager:
    """Build a fresh plugin manager.

    1. The built-in plugins (:data:`DEFAULT_PLUGINS`) of the installed tinkex packages are
       registered unless ``defaults`` is false -- through their entry point when
       ``load_entrypoints`` is true (so ``tinkex plugins`` shows their package), else by
       module.
    2. With ``load_entrypoints``, the other entry points of group ``tinkex``.
    3. ``plugins``: hand-written plugin objects (e.g. in tests); one already registered
       (a built-in module) is not registered again.

    pluggy calls the last registered implementation first, so ``plugins`` run before entry
    points, which run before the built-ins. ``TINKEX_DISABLE_PLUGINS`` (comma list of plugin
    or distribution names) blocks built-ins and entry points; ``TINKEX_LOAD_PLUGINS``, when
    set, loads only the entry points it names besides the built-ins. Unknown hooks fail at
    once (``check_pending``).
    """
    pm = _PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    eps = list(entry_points(group=ENTRY_POINT_GROUP)) if load_entrypoints else []
    _block(pm, eps, defaults)
    if defaults:
        for default in DEFAULT_PLUGINS:
            shipped = any(ep.name == default.name and ep.value == default.module for ep in eps)
            if shipped and not pm.is_blocked(default.name):
                pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=default.name)
            _register_default(pm, default)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in plugins or []:
        if not pm.is_registered(plugin):
            pm.register(plugin)
    pm.check_pending()
    return pm


class Hooks:
    """Typed facade over the hooks: the one way tinkex packages call each other.

    Every method calls through pluggy (``pm.hook.<name>``), so each implementation receives
    only the arguments it declares, ``wrapper=True`` implementations wrap the call and
    ``pm.add_hookcall_monitoring``/``pm.trace`` see it. ``pm`` should come from
    :func:`make_plugin_manager`, whose manager isolates observer implementations.
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        if not isinstance(pm, _PluginManager):
            # A manager built by hand: isolate the observers it holds now (plugins it
            # registers later are not; build managers with make_plugin_manager).
            for plugin in pm.get_plugins():
                _isolate_plugin(pm, plugin)
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

    def transports(self) -> Registry[TransportFactory]:
        """URL scheme → transport factory, from ``tinkex_register_transports``."""
        return self._registry("transport", self.pm.hook.tinkex_register_transports)

    def regularizers(self) -> Registry[RegularizerFactory]:
        """Name → regularizer class, from ``tinkex_register_regularizers``."""
        return self._registry("regularizer", self.pm.hook.tinkex_register_regularizers)

    def telemetry_sinks(self) -> Registry[TelemetrySinkFactory]:
        """Name → sink factory, from ``tinkex_register_telemetry_sinks``."""
        return self._registry("telemetry sink", self.pm.hook.tinkex_register_telemetry_sinks)

    def register_commands(self, cli: CommandGroup) -> None:
        """Let plugins add commands to the CLI group ``cli``."""
        self.pm.hook.tinkex_register_commands(cli=cli)

    # -- wrap / pick one ---------------------------------------------------------
    def _wrapping_plugins(self) -> list[object]:
        """The plugins with a plain ``tinkex_wrap_transport`` implementation, in call order."""
        plugins: list[object] = []
        for impl in reversed(self.pm.hook.tinkex_wrap_transport.get_hookimpls()):
            if not (impl.wrapper or impl.hookwrapper or any(p is impl.plugin for p in plugins)):
                plugins.append(impl.plugin)
        return plugins

    def wrap_transport(self, transport: AsyncTransport, config: TransportConfig) -> AsyncTransport:
        """Chain every ``tinkex_wrap_transport`` implementation, in hook-call order.

        Each implementation must see the transport the previous one returned, which one
        pluggy call cannot do; so each is its own pluggy call, on a subset caller that
        leaves out the other wrapping plugins (plugins whose implementation of this hook is
        ``wrapper=True`` only stay in, and so wrap every step). A plugin implements the hook
        once; its first non-``None`` result replaces the transport.
        """
        plugins = self._wrapping_plugins()
        for plugin in plugins:
            others = [p for p in plugins if p is not plugin]
            call = self.pm.subset_hook_caller("tinkex_wrap_transport", others)
            for wrapped in call(transport=transport, config=config):
                if wrapped is not None:
                    transport = wrapped
                    break
        return transport

    def has_transport_wrappers(self) -> bool:
        return bool(self._wrapping_plugins())

    def resolve_tokenizer(self, name: str) -> Tokenizer | None:
        """First tokenizer any plugin resolves for ``name``, or ``None``."""
        result: Tokenizer | None = self.pm.hook.tinkex_resolve_tokenizer(name=name)
        return result

    def setup_telemetry(self, service_name: str, required: bool = False) -> bool:
        """Ask plugins to set up telemetry export for this process (``tinkex serve``);
        ``True`` when one did, ``False`` when none did or none is installed."""
        result: bool | None = self.pm.hook.tinkex_setup_telemetry(
            service_name=service_name, required=required
        )
        return bool(result)

    # -- observers (a raising implementation is logged and skipped) -------------
    def on_queue_state_change(self, event: QueueStateEvent) -> None:
        self.pm.hook.tinkex_on_queue_state_change(event=event)

    def on_request(self, event: RequestEvent) -> None:
        self.pm.hook.tinkex_on_request(event=event)

    def on_future(self, event: FutureEvent) -> None:
        self.pm.hook.tinkex_on_future(event=event)

    def on_regularizer(self, event: RegularizerEvent) -> None:
        self.pm.hook.tinkex_on_regularizer(event=event)

    def on_circuit_breaker(self, event: CircuitBreakerEvent) -> None:
        """Tell ``tinkex_on_circuit_breaker`` observers a breaker changed state."""
        self.pm.hook.tinkex_on_circuit_breaker(event=event)

    def on_recovery(self, event: RecoveryEvent) -> None:
        """Tell ``tinkex_on_recovery`` observers about a step of a run's recovery."""
        self.pm.hook.tinkex_on_recovery(event=event)

    def on_session(self, event: SessionEvent) -> Any | None:
        """Tell ``tinkex_on_session`` observers a session started or ended; returns the
        first non-``None`` result (on ``start``: the session's telemetry handle)."""
        results: list[Any] = self.pm.hook.tinkex_on_session(event=event)
        return results[0] if results else None

    def inject_headers(self, headers: dict[str, str]) -> None:
        self.pm.hook.tinkex_inject_headers(headers=headers)

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
