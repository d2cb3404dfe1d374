"""The shared core of one ServiceClient: config, HTTP client, background loop, session,
heartbeats, counters and the helpers every client uses (submit, poll, retry, spans)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from typing import Any, Literal, TypeVar

import httpx
import structlog
from pydantic import BaseModel, ValidationError

from tinkex_clients._future import APIFuture
from tinkex_clients._loop import EventLoopThread
from tinkex_clients._protocol import WireProtocol, negotiate
from tinkex_clients._validate import ClientClosedError
from tinkex_http import (
    APIFutureResolver,
    Config,
    HTTPClient,
    PollPolicy,
    RetryConfig,
    retry_async,
)
from tinkex_types import (
    PROTOBUF_MEDIA_TYPE,
    APIResponseValidationError,
    APIStatusError,
    CreateSessionRequest,
    CreateSessionResponse,
    ForwardBackwardRequest,
    ForwardRequest,
    Hooks,
    SampleResponse,
    SessionEvent,
    get_hooks,
)

__all__ = ["Session"]

_log = structlog.get_logger("tinkex.clients")

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)

_ids = itertools.count()


class Session:
    """One backend session and everything shared by the clients created from it.

    All asynchronous work runs on :attr:`loop_thread`; public sync methods submit
    coroutines there, ``_async`` methods bridge to it from the caller's loop.
    """

    def __init__(
        self,
        config: Config,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        hooks: Hooks | None = None,
        poll_policy: PollPolicy | None = None,
    ) -> None:
        self.config = config
        self._hooks = hooks
        self.poll_policy = poll_policy or PollPolicy()
        self.loop_thread = EventLoopThread(name=f"tinkex-loop-{next(_ids)}")
        self.http = HTTPClient(config, transport=transport, hooks=hooks)
        self.session_id: str | None = None
        #: The wire generation spoken to this server (set by :meth:`start`; see
        #: :mod:`tinkex_clients._protocol`).
        self.protocol = WireProtocol(base_url=config.base_url)
        #: ``(type, detail)`` sent to ``sessions/{id}/finish`` on close.
        self.finish_reason: tuple[str, str | None] = ("success", None)
        self._lock = threading.Lock()
        self._model_seq = 0
        self._sampling_seq = 0
        self._closed = False
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._last_beat_ok: float | None = None
        #: What a ``tinkex_on_session`` plugin returned on start (e.g. the backend reporter).
        self.telemetry: Any | None = None
        self._announced = False

    # -- plumbing -------------------------------------------------------------------------
    @property
    def hooks(self) -> Hooks:
        return self._hooks if self._hooks is not None else get_hooks()

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self, what: str = "ServiceClient") -> None:
        if self._closed:
            raise ClientClosedError(what)

    def next_model_seq_id(self) -> int:
        with self._lock:
            value = self._model_seq
            self._model_seq += 1
            return value

    def next_sampling_session_seq_id(self) -> int:
        """The per-session counter shared by create_sampling_session and unnamed saves."""
        with self._lock:
            value = self._sampling_seq
            self._sampling_seq += 1
            return value

    def run(self, coro: Coroutine[Any, Any, _T], what: str = "ServiceClient") -> APIFuture[_T]:
        """Schedule ``coro`` on the background loop and return its :class:`APIFuture`."""
        if self._closed:
            coro.close()
            raise ClientClosedError(what)
        try:
            fut = self.loop_thread.submit(coro)
        except RuntimeError:
            raise ClientClosedError(what) from None
        return APIFuture(fut, self.loop_thread)

    def call(self, coro: Coroutine[Any, Any, _T], what: str = "ServiceClient") -> _T:
        """Run ``coro`` on the background loop and block until it is done."""
        if self.loop_thread.in_loop_thread():
            coro.close()
            raise RuntimeError(
                "a synchronous tinkex method was called on the tinkex event loop thread; "
                "use the `_async` variant there"
            )
        return self.run(coro, what).result()

    async def bridge(self, coro: Coroutine[Any, Any, _T], what: str = "ServiceClient") -> _T:
        """Await ``coro`` from any event loop: it runs on the background loop."""
        if self._closed:
            coro.close()
            raise ClientClosedError(what)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - always called from a coroutine
            running = None
        if running is self.loop_thread.loop:
            return await coro
        fut = self.run(coro, what).future()
        return await asyncio.wrap_future(fut)

    @contextlib.contextmanager
    def span(self, operation: str, **attributes: Any) -> Iterator[None]:
        attrs: dict[str, Any] = {"tinkex.session_id": self.session_id or ""}
        attrs.update({f"tinkex.{k}": v for k, v in attributes.items() if v is not None})
        with self.hooks.operation_span(operation, attrs, None):
            yield

    async def with_retries(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """The operation-level retry layer (protocol.md §2.13 layer 2)."""
        return await retry_async(call, RetryConfig.operation(), sleep=self.http.sleep)

    # -- requests -------------------------------------------------------------------------
    async def post(
        self,
        path: str,
        body: Any,
        *,
        retries: bool = True,
        **options: Any,
    ) -> Any:
        async def send() -> Any:
            return await self.http.post(path, body, **options)

        if retries:
            return await self.with_retries(send)
        return await send()

    async def get(self, path: str, *, retries: bool = True, **options: Any) -> Any:
        async def send() -> Any:
            return await self.http.get(path, **options)

        if retries:
            return await self.with_retries(send)
        return await send()

    async def resolve(
        self,
        submitted: Any,
        result_type: type[_M],
        *,
        request_type: str,
        model_id: str | None = None,
        started: float | None = None,
    ) -> _M:
        """Turn a submit answer into its result: poll the future when it is one, else the
        body is the result (accepted for servers that answer directly)."""
        result: Any = submitted
        request_id: str | None = None
        if isinstance(submitted, Mapping) and isinstance(submitted.get("request_id"), str):
            request_id = submitted["request_id"]
            roundtrip = None if started is None else max(time.monotonic() - started, 0.0)
            resolver = APIFutureResolver(
                self.http,
                request_id,
                request_type=request_type,
                model_id=model_id,
                create_roundtrip_time=roundtrip,
                policy=self.poll_policy,
                result_model=result_type,
                accept=self.protocol.result_accept(request_type),
            )
            result = await resolver.result()
        parsed = parse_result(result, result_type, request_id=request_id, what=request_type)
        if isinstance(parsed, SampleResponse) and isinstance(submitted, Mapping):
            stamp_sequence_ids(parsed, submitted.get("sample_sequence_ids"))
        return parsed

    async def submit_forward(
        self, request: ForwardRequest | ForwardBackwardRequest, *, request_type: str
    ) -> Any:
        """POST one forward/forward_backward chunk in the negotiated generation: protobuf to
        ``/forward_backward`` (``forward_only`` for a :class:`ForwardRequest`, zstd when the
        flags say so), or JSON to ``/forward`` / ``/forward_backward``. A refused protobuf
        body is re-sent once as JSON when :meth:`WireProtocol.may_fall_back` allows it."""
        forward_only = isinstance(request, ForwardRequest)
        json_path = "/api/v1/forward" if forward_only else "/api/v1/forward_backward"
        protocol = self.protocol
        if not protocol.protobuf:
            return await self.post(json_path, request.to_json_dict(), request_type=request_type)

        async def send() -> Any:
            return await self.http.post_model(
                "/api/v1/forward_backward",
                request,
                media_type=PROTOBUF_MEDIA_TYPE,
                compress="zstd" if protocol.compress else None,
                request_type=request_type,
            )

        try:
            submitted = await self.with_retries(send)
        except APIStatusError as exc:
            if not protocol.may_fall_back(exc):
                raise
            refused = exc
        else:
            protocol.accepted()
            return submitted
        # The refused request never ran: the same seq_id again, as JSON, with a new key.
        submitted = await self.post(json_path, request.to_json_dict(), request_type=request_type)
        self.protocol = protocol.fell_back(refused)
        return submitted

    # -- session lifecycle ------------------------------------------------------------------
    async def start(self, user_metadata: Mapping[str, str] | None) -> str:
        """Create the backend session and start heart-beating."""
        cfg = self.config
        request = CreateSessionRequest(
            tags=list(cfg.tags),
            user_metadata=dict(user_metadata or cfg.user_metadata or {}),
            sdk_version=cfg.sdk_version,
            project_id=cfg.project_id,
        )
        with self.hooks.operation_span("create_session", {"tinkex.base_url": cfg.base_url}, None):
            self.protocol = await negotiate(self.http, cfg)
            body = await self.http.post("/api/v1/create_session", request.to_json_dict())
        response = parse_result(body, CreateSessionResponse, what="create_session")
        self.session_id = response.session_id
        if response.info_message:
            _log.info("session_info", message=response.info_message)
        if response.warning_message:
            _log.warning("session_warning", message=response.warning_message)
        if response.error_message:
            _log.error("session_error", message=response.error_message)
        self._last_beat_ok = time.monotonic()
        self._heartbeat_task = asyncio.get_running_loop().create_task(self._heartbeat_loop())
        return response.session_id

    def _session_event(self, phase: Literal["start", "end"]) -> SessionEvent:
        return SessionEvent(
            session_id=self.session_id or "",
            phase=phase,
            base_url=self.config.base_url,
            config=self.config,
            sdk_version=self.config.sdk_version,
        )

    def announce_start(self) -> None:
        """Fire ``tinkex_on_session`` ``start`` (after :meth:`start` succeeded) and keep the
        telemetry handle a plugin returned."""
        self.telemetry = self.hooks.on_session(self._session_event("start"))
        self._announced = True

    def _announce_end(self) -> None:
        # Reached at most once: only the first close()/aclose() gets past the _closed check.
        if not self._announced:
            return
        self._announced = False
        self.hooks.on_session(self._session_event("end"))

    async def _heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_interval
        warn_after = self.config.heartbeat_warning_after
        while True:
            await asyncio.sleep(interval)
            try:
                await self.http.post("/api/v1/session_heartbeat", {"session_id": self.session_id})
            except asyncio.CancelledError:
                raise
            except APIStatusError as exc:
                if exc.status_code == 410:  # the server ended the session (tinker 0.38)
                    _log.debug("heartbeat_gone", session_id=self.session_id)
                    return
                self._beat_failed(exc, warn_after)
                continue
            except Exception as exc:
                self._beat_failed(exc, warn_after)
                continue
            self._last_beat_ok = time.monotonic()

    def _beat_failed(self, exc: Exception, warn_after: float) -> None:
        since = time.monotonic() - (self._last_beat_ok or 0.0)
        if since >= warn_after:
            _log.warning(
                "heartbeat_failing",
                session_id=self.session_id,
                seconds_since_success=round(since, 1),
                error=type(exc).__name__,
                hint="the session may be terminated by the server",
            )
        else:
            _log.debug("heartbeat_failed", error=type(exc).__name__)

    async def _aclose_inner(self) -> None:
        task = self._heartbeat_task
        self._heartbeat_task = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._finish()
        await self.http.aclose()

    async def _finish(self) -> None:
        """``POST sessions/{id}/finish`` (tinker 0.38) when the server has the later
        generations (it answered ``client/config``); any failure (a 404 included) is
        ignored: the session ends anyway."""
        if self.session_id is None or self.protocol.flags is None:
            return
        kind, detail = self.finish_reason
        body = {"reason": {"type": kind}, "detail": detail}
        try:
            await self.http.post(
                f"/api/v1/sessions/{self.session_id}/finish", body, max_retries=1, timeout=10.0
            )
        except Exception as exc:
            _log.debug("session_finish_failed", error=type(exc).__name__)

    def close(self) -> None:
        """Stop heart-beating, close connections, stop the loop thread, then fire
        ``tinkex_on_session`` ``end`` (idempotent)."""
        if self.loop_thread.in_loop_thread():
            raise RuntimeError("close() cannot run on the tinkex event loop thread; use aclose()")
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self.loop_thread.running:
                fut = self.loop_thread.submit(self._aclose_inner())
                with contextlib.suppress(Exception):
                    fut.result(15.0)
            self.loop_thread.stop()
        finally:
            self._announce_end()

    async def aclose(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self.loop_thread.running:
                fut = self.loop_thread.submit(self._aclose_inner())
                with contextlib.suppress(Exception):
                    await asyncio.wrap_future(fut)
            await asyncio.to_thread(self.loop_thread.stop)
        finally:
            if self._announced:  # observers may block briefly (a final flush): not on a loop
                await asyncio.to_thread(self._announce_end)


def stamp_sequence_ids(response: SampleResponse, ids: Any) -> None:
    """Give each sequence the id the ``/asample`` answer named for it (tinker 0.38
    ``sample_sequence_ids``, one per sample); absent or mismatched lists are ignored."""
    if not isinstance(ids, list) or len(ids) != len(response.sequences):
        return
    for sequence, sequence_id in zip(response.sequences, ids, strict=True):
        if isinstance(sequence_id, str):
            sequence.sequence_id = sequence_id


def parse_result(
    body: Any, result_type: type[_M], *, request_id: str | None = None, what: str = "response"
) -> _M:
    """Validate a response body; a mismatch is an :class:`APIResponseValidationError`."""
    try:
        return result_type.model_validate(body)
    except ValidationError as exc:
        raise APIResponseValidationError(
            f"the server's {what} answer does not match {result_type.__name__}: "
            f"{exc.error_count()} error(s), first: {exc.errors()[0].get('msg')} at "
            f"{'.'.join(str(p) for p in exc.errors()[0].get('loc', ()))}",
            request_id=request_id,
            body=body if isinstance(body, (dict, list)) else None,
        ) from None
