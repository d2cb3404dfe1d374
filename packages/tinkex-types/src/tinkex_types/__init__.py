"""tinkex-types: wire models, errors, ``tinker://`` paths and the plugin system of tinkex."""

from __future__ import annotations

from tinkex_types._errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    PluginError,
    RateLimitError,
    RequestErrorCategory,
    RequestFailedError,
    TinkexError,
    TinkexValidationError,
    UnprocessableEntityError,
    status_error_class,
)
from tinkex_types._events import FutureEvent, QueueStateEvent, RegularizerEvent, RequestEvent
from tinkex_types._not_given import NOT_GIVEN, NotGiven, NotGivenOr
from tinkex_types._plugins import (
    ENTRY_POINT_GROUP,
    Hooks,
    Registry,
    get_hooks,
    make_plugin_manager,
    set_hooks,
)
from tinkex_types.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "ENTRY_POINT_GROUP",
    "NOT_GIVEN",
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "FutureEvent",
    "Hooks",
    "InternalServerError",
    "NotFoundError",
    "NotGiven",
    "NotGivenOr",
    "PermissionDeniedError",
    "PluginError",
    "QueueStateEvent",
    "RateLimitError",
    "RegularizerEvent",
    "Registry",
    "RequestErrorCategory",
    "RequestEvent",
    "RequestFailedError",
    "TinkexError",
    "TinkexValidationError",
    "UnprocessableEntityError",
    "__version__",
    "get_hooks",
    "hookimpl",
    "make_plugin_manager",
    "set_hooks",
    "status_error_class",
]
