"""The server's codec seam: the one place request bodies are decoded and answers encoded.

* Requests: :func:`wire_body` (a FastAPI dependency) undoes ``Content-Encoding`` (identity
  or zstd) and decodes the body by ``Content-Type`` with the codec ``tinkex_types``
  registered for it (``codec_for``). JSON keeps pydantic's full error list: malformed JSON
  or a non-object is a 400, a schema mismatch a 422 naming every field. Any other media
  type is decoded by its codec when the codec carries the model (protobuf carries
  ``ForwardBackwardRequest`` …); an unknown media type, a model the codec does not carry
  or an undecodable body (``WireDecodeError``) is a 400 naming the problem, never a 500.
* Answers: :func:`reply` writes a response model as JSON. :func:`reply_result` writes a
  future's result in the first media type of the poll's ``Accept`` whose codec carries the
  result model (JSON otherwise), so a protobuf result needs a registered codec, not a new
  route.
* :func:`install_openapi` publishes the request body schema of every :func:`wire_body`
  route (JSON) next to FastAPI's response schemas.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, get_args

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from tinkex_server._problems import ApiProblem
from tinkex_types import (
    JSON_MEDIA_TYPE,
    PROTOBUF_MEDIA_TYPE,
    WireBodyTooLarge,
    WireDecodeError,
    WireModel,
    accepted_media_types,
    codec_for,
    decode_content,
    media_type_of,
)
from tinkex_types._base import _null_default_keys

__all__ = [
    "WireJSONResponse",
    "body_doc",
    "decode_request",
    "describe_errors",
    "install_openapi",
    "json_bytes",
    "ordered_ids",
    "raw_json",
    "reply",
    "reply_result",
    "wire_body",
]

_M = TypeVar("_M", bound=BaseModel)
#: openapi_extra key under which a route names its request body model (for install_openapi).
_BODY_KEY = "x-tinkex-body"
#: The models named by :func:`body_doc`.
_BODIES: dict[str, type[BaseModel]] = {}


def json_bytes(content: Any) -> bytes:
    """Compact JSON that keeps ``NaN``/``Infinity`` (a diverged loss is a result)."""
    return json.dumps(content, ensure_ascii=False, allow_nan=True, separators=(",", ":")).encode()


class WireJSONResponse(JSONResponse):
    """JSON that keeps ``NaN``/``Infinity`` (as Python's ``json`` writes them) instead of
    failing: a diverged loss is a result, not a server error."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


# -- requests ---------------------------------------------------------------------------------
def _plain(message: str) -> str:
    """A validator's message without pydantic's ``Value error, `` prefix."""
    return message.replace("Value error, ", "")


def describe_errors(errors: list[Any]) -> tuple[int, str]:
    """``(status, detail)`` of pydantic/FastAPI validation errors: 400 for malformed JSON or
    a body that is not an object, else 422 naming every field."""
    parts: list[str] = []
    for err in errors:
        kind = str(err.get("type", ""))
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if kind == "json_invalid":
            ctx = err.get("ctx") or {}
            return 400, f"body: malformed JSON ({ctx.get('error', 'cannot be parsed')})"
        if not loc and kind in ("model_type", "model_attributes_type", "dict_type"):
            return 400, "body: must be a JSON object (send Content-Type: application/json)"
        where = ".".join(loc) or "body"
        msg = "is required" if kind == "missing" else _plain(str(err.get("msg", "is invalid")))
        parts.append(f"{where}: {msg}")
    return 422, "; ".join(parts) or "the request body is invalid"


def _max_body(request: Request) -> int:
    runtime = getattr(request.app.state, "tinkex", None)
    limit = getattr(getattr(runtime, "config", None), "max_body_bytes", None)
    return limit if isinstance(limit, int) else 64 * 1024 * 1024


async def _content(request: Request) -> bytes:
    encoding = request.headers.get("content-encoding")
    try:
        return decode_content(await request.body(), encoding, max_size=_max_body(request))
    except WireBodyTooLarge as exc:
        raise ApiProblem(413, f"{exc}; send a smaller batch") from None
    except WireDecodeError as exc:
        raise ApiProblem(400, str(exc)) from None


def _is_json(media: str) -> bool:
    return media == JSON_MEDIA_TYPE or media.endswith("+json")


def _protobuf_enabled(request: Request) -> bool:
    runtime = getattr(request.app.state, "tinkex", None)
    return bool(getattr(getattr(runtime, "config", None), "protobuf", True))


async def decode_request(request: Request, model: type[_M]) -> _M:
    """The body of ``request`` as ``model`` (see the module docstring)."""
    media = media_type_of(request.headers.get("content-type"))
    if not _is_json(media) and not _protobuf_enabled(request):
        raise ApiProblem(
            415,
            f"Content-Type: {media!r} is not supported: this server speaks JSON only "
            "(started with --json-only); send application/json",
        )
    body = await _content(request)
    if _is_json(media):
        if not body.strip():
            raise ApiProblem(422, "body: is required (send a JSON object)")
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            status, detail = describe_errors(list(exc.errors()))
            raise ApiProblem(status, detail) from None
        except (TypeError, ValueError) as exc:  # a validator that raised something else
            raise ApiProblem(422, f"body: {exc}") from None
    codec = codec_for(media)
    if codec is None or not codec.carries(model):
        raise ApiProblem(
            400,
            f"Content-Type: {media!r} is not supported for {model.__name__} "
            "(send application/json)",
        )
    try:
        decoded = codec.decode(model, body)
    except WireDecodeError as exc:
        raise ApiProblem(400, _plain(str(exc))) from None
    return decoded


async def ordered_ids(request: Request) -> tuple[str | None, int | None]:
    """``(model_id, seq_id)`` of an ordered request's body, read leniently (any field may be
    missing or wrong), so that a body refused at decoding can still free its ``seq_id``."""
    try:
        body = decode_content(await request.body(), request.headers.get("content-encoding"))
    except WireDecodeError:
        return None, None
    media = media_type_of(request.headers.get("content-type"))
    model_id: object = None
    seq_id: object = None
    if _is_json(media):
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None, None
        if isinstance(data, dict):
            model_id, seq_id = data.get("model_id"), data.get("seq_id")
    elif media == PROTOBUF_MEDIA_TYPE:
        from tinkex_types.proto import tinker_public_pb2 as pb

        msg = pb.ForwardBackwardRequest()
        try:
            msg.ParseFromString(body)
        except Exception:
            return None, None
        model_id, seq_id = msg.model_id, msg.seq_id
    ok_seq = isinstance(seq_id, int) and not isinstance(seq_id, bool)
    return (
        model_id if isinstance(model_id, str) and model_id else None,
        seq_id if ok_seq else None,  # type: ignore[return-value]
    )


def wire_body(model: type[_M]) -> Callable[[Request], Awaitable[_M]]:
    """A FastAPI dependency that decodes the request body as ``model``."""

    async def dependency(request: Request) -> _M:
        return await decode_request(request, model)

    dependency.__name__ = f"decode_{model.__name__}"
    return dependency


async def raw_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object (routes whose body is free-form): 400 when it is missing,
    malformed or not an object."""
    body = await _content(request)
    media = media_type_of(request.headers.get("content-type"))
    if not _is_json(media):
        raise ApiProblem(400, f"Content-Type: {media!r} is not supported (send application/json)")
    if not body.strip():
        raise ApiProblem(400, "body: is required (send a JSON object)")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiProblem(400, f"body: malformed JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ApiProblem(400, "body: must be a JSON object")
    return data


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route whose body is ``model`` (see :func:`install_openapi`)."""
    _BODIES[model.__name__] = model
    return {_BODY_KEY: model.__name__}


# -- answers ----------------------------------------------------------------------------------
def reply(model: WireModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``model`` as a JSON answer."""
    return Response(json_bytes(model.to_json_dict()), status, headers, media_type=JSON_MEDIA_TYPE)


def reply_result(
    request: Request, status: int, model: type[WireModel], result: dict[str, Any]
) -> Response:
    """A future's stored ``result`` (JSON data of ``model``) in the media type the poll
    accepts: the first of its ``Accept`` whose codec carries ``model``, else JSON."""
    for media in accepted_media_types(request.headers.get("accept")):
        if _is_json(media) or media in ("*/*", "application/*"):
            break
        codec = codec_for(media)
        if codec is not None and codec.carries(model):
            body = codec.encode(model.model_validate(result))
            return Response(body, status, media_type=codec.media_type)
    return Response(json_bytes(result), status, media_type=JSON_MEDIA_TYPE)


# -- OpenAPI ----------------------------------------------------------------------------------
def _body_models(app: FastAPI) -> list[tuple[str, str, type[BaseModel]]]:
    out: list[tuple[str, str, type[BaseModel]]] = []
    for route in app.routes:
        extra = getattr(route, "openapi_extra", None) or {}
        model = _BODIES.get(str(extra.get(_BODY_KEY)))
        if model is not None:
            for method in getattr(route, "methods", ()):
                out.append((getattr(route, "path", ""), method.lower(), model))
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _model_classes(models: list[type[BaseModel]]) -> dict[str, type[BaseModel]]:
    """Every model reachable from ``models`` through field annotations, by name."""
    found: dict[str, type[BaseModel]] = {}
    stack = list(models)
    while stack:
        model = stack.pop()
        if model.__name__ not in found:
            found[model.__name__] = model
            for info in model.model_fields.values():
                stack.extend(_models_in(info.annotation))
    return found


def _null_means_default(defs: dict[str, Any], models: list[type[BaseModel]]) -> None:
    """Publish that ``null`` is accepted (as "absent") for every optional field with a
    non-null default, as the wire models parse it."""
    for name, model in _model_classes(models).items():
        props = defs.get(name, {}).get("properties", {})
        # The parser's own rule (tinkex_types._base), so the schema cannot drift from it.
        for key in _null_default_keys(model):
            if key not in props:
                continue
            schema = dict(props[key])
            outer = {k: schema.pop(k) for k in ("default", "title") if k in schema}
            props[key] = {"anyOf": [schema, {"type": "null"}], **outer}


def _base64_bytes(schema: Any) -> None:
    """JSON carries ``bytes`` fields (image data) as base64 text, not raw binary."""
    if isinstance(schema, dict):
        if schema.get("type") == "string" and schema.get("format") == "binary":
            del schema["format"]
            schema["contentEncoding"] = "base64"
        for value in schema.values():
            _base64_bytes(value)
    elif isinstance(schema, list):
        for value in schema:
            _base64_bytes(value)


def _rename_refs(value: Any, renames: dict[str, str]) -> Any:
    text = json.dumps(value)
    for old, new in renames.items():
        text = text.replace(f'"#/components/schemas/{old}"', f'"#/components/schemas/{new}"')
    return json.loads(text)


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` publish the request bodies decoded by :func:`wire_body`."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=app.routes,
        )
        bodies = _body_models(app)
        models = sorted({m for _, _, m in bodies}, key=lambda m: m.__name__)
        refs, defs = models_json_schema(
            [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        new = defs.get("$defs", {})
        _null_means_default(new, models)
        _base64_bytes(new)
        renames = {n: f"{n}-Input" for n, s in new.items() if n in schemas and schemas[n] != s}
        for name, schema in _rename_refs(new, renames).items():
            schemas[renames.get(name, name)] = schema
        for path, method, model in bodies:
            ref = _rename_refs(refs[(model, "validation")], renames)
            operation = doc["paths"][path][method]
            operation.pop(_BODY_KEY, None)
            operation["requestBody"] = {
                "required": True,
                "content": {JSON_MEDIA_TYPE: {"schema": ref}},
            }
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
