"""tinker 0.38's futures of clients, and clients that are their own (finished) future.

tinker 0.38's ``create_lora_training_client``, ``create_sampling_client``,
``save_weights_and_get_sampling_client``... return a *future* of the client
(``BackcompatTrainingClientFuture`` / ``BackcompatSamplingClientFuture``) that can still be
used, deprecated, as the client. tinkex's methods return the client itself, after it was
created; so that code written for 0.38 (``...create_lora_training_client(...).result()``,
``await service.create_sampling_client(...)``) runs unchanged, the clients are also a
finished future of themselves (:class:`ClientAsFuture`).

The two ``Backcompat*`` classes are offered for code that builds or annotates them: they
wrap a future of a client (an :class:`APIFuture`, ``concurrent.futures.Future`` or
awaitable of it) and forward client calls to the finished client with a ``FutureWarning``.
"""

from __future__ import annotations

import concurrent.futures
import warnings
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from tinkex_clients._future import APIFuture

if TYPE_CHECKING:  # pragma: no cover
    from tinkex_clients._loop import EventLoopThread

__all__ = [
    "AwaitableConcurrentFuture",
    "BackcompatSamplingClientFuture",
    "BackcompatTrainingClientFuture",
    "ClientAsFuture",
]

T = TypeVar("T")
C = TypeVar("C")
_Self = TypeVar("_Self", bound="ClientAsFuture")


class AwaitableConcurrentFuture(APIFuture[T]):
    """An :class:`APIFuture` over a ``concurrent.futures.Future`` (tinker's name for it)."""

    __slots__ = ()

    def __init__(
        self, future: concurrent.futures.Future[T], owner: EventLoopThread | None = None
    ) -> None:
        super().__init__(future, owner)


class ClientAsFuture:
    """A client that is also a finished future of itself (tinker 0.38's creation methods
    return futures of clients): ``result()``, ``await client``, ``future()``..."""

    def result(self: _Self, timeout: float | None = None) -> _Self:
        """The client itself (it already exists)."""
        return self

    async def result_async(self: _Self, timeout: float | None = None) -> _Self:  # noqa: ASYNC109
        return self

    async def coroutine(self: _Self) -> _Self:
        return self

    def __await__(self: _Self) -> Generator[Any, None, _Self]:
        return self.result_async().__await__()

    def future(self: _Self) -> concurrent.futures.Future[_Self]:
        """A finished ``concurrent.futures.Future`` holding the client."""
        fut: concurrent.futures.Future[_Self] = concurrent.futures.Future()
        fut.set_result(self)
        return fut


def _as_concurrent(future: Any) -> concurrent.futures.Future[Any]:
    if isinstance(future, concurrent.futures.Future):
        return future
    if isinstance(future, APIFuture):
        return future.future()
    fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
    fut.set_result(future)  # an already-made client
    return fut


_DEPRECATED = (
    "Using the future as the {client} is deprecated; call .result() on it, or await it, "
    "to get the {client} first"
)


class _ClientFuture(APIFuture[C]):
    """A future of a client that forwards client calls (deprecated) to the finished client."""

    __slots__ = ()
    _client_name = "client"

    def __init__(self, future: Any) -> None:
        fut = _as_concurrent(future)
        owner = future._owner if isinstance(future, APIFuture) else None
        super().__init__(fut, owner)

    def _warn(self) -> None:
        warnings.warn(_DEPRECATED.format(client=self._client_name), FutureWarning, stacklevel=3)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        self._warn()
        return getattr(self.result(), name)


def _forwarder(name: str) -> Callable[..., Any]:
    if name.endswith("_async"):

        async def forward_async(self: _ClientFuture[Any], *args: Any, **kwargs: Any) -> Any:
            self._warn()
            client = await self.result_async()
            return await getattr(client, name)(*args, **kwargs)

        forward_async.__name__ = forward_async.__qualname__ = name
        return forward_async

    def forward(self: _ClientFuture[Any], *args: Any, **kwargs: Any) -> Any:
        self._warn()
        return getattr(self.result(), name)(*args, **kwargs)

    forward.__name__ = forward.__qualname__ = name
    return forward


def _add_forwarders(cls: type[_ClientFuture[Any]], client: type, names: tuple[str, ...]) -> None:
    """One ``(*args, **kwargs)`` method per name the client has (tinker's shape)."""
    for name in names:
        if hasattr(client, name):
            setattr(cls, name, _forwarder(name))


class BackcompatTrainingClientFuture(_ClientFuture[Any]):
    """A future of a :class:`TrainingClient` (``future``: an :class:`APIFuture`, a
    ``concurrent.futures.Future`` or the client); client methods called on it forward to
    the finished client with a ``FutureWarning``."""

    __slots__ = ()
    _client_name = "TrainingClient"


class BackcompatSamplingClientFuture(_ClientFuture[Any]):
    """A future of a :class:`SamplingClient` (see :class:`BackcompatTrainingClientFuture`)."""

    __slots__ = ()
    _client_name = "SamplingClient"


_TRAINING_METHODS = (
    "create_sampling_client",
    "forward",
    "forward_backward",
    "forward_backward_custom",
    "get_console_url",
    "get_info",
    "get_telemetry",
    "get_tokenizer",
    "load_state",
    "load_state_with_optimizer",
    "optim_step",
    "save_state",
    "save_weights_and_get_sampling_client",
    "save_weights_external",
    "save_weights_for_sampler",
)
_SAMPLING_METHODS = (
    "compute_logprobs",
    "get_base_model",
    "get_sampler_handle",
    "get_telemetry",
    "get_tokenizer",
    "on_queue_state_change",
    "sample",
)


def install_forwarders(training: type, sampling: type) -> None:
    """Give the two future classes their forwarding methods (called once the client
    classes exist: ``tinkex_clients/__init__``)."""
    with_async = tuple(n for m in _TRAINING_METHODS for n in (m, f"{m}_async"))
    _add_forwarders(BackcompatTrainingClientFuture, training, with_async)
    sampling_names = tuple(
        n
        for m in _SAMPLING_METHODS
        for n in (
            (m, f"{m}_async") if m in ("sample", "compute_logprobs", "get_base_model") else (m,)
        )
    )
    _add_forwarders(BackcompatSamplingClientFuture, sampling, sampling_names)
    BackcompatSamplingClientFuture.create = staticmethod(sampling.create)  # type: ignore[attr-defined]
