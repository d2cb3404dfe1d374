"""Wire models whose one large list field may live as a numpy array until it is read.

``TensorData.data`` and ``EncodedTextChunk.tokens`` built from a numpy array (or a torch
tensor) keep a private, contiguous, little-endian, read-only copy of it and leave the field
out of ``__dict__``: the protobuf encoder writes the array's bytes, the input checks read it
vectorised, and the Python list is built only when something reads the field. It is then
cached in ``__dict__`` as an :class:`ArrayList` that still knows its array.

Whatever reads ``__dict__`` as a whole completes it first (dumps through
``WireModel._wire_complete``, equality, copies, pickling, iteration, repr), so such a
model reads, compares, dumps and pickles exactly as if the list had always been there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from pydantic import BaseModel

from tinkex_types._base import WireModel

if TYPE_CHECKING:  # pragma: no cover
    from pydantic.main import TupleGenerator

__all__ = ["ArrayList", "LazyListModel", "fill_model", "new_model", "stored_array"]

_setattr = object.__setattr__
#: Model classes checked to be built by plain state (see :func:`fill_model`).
_PLAIN_STATE: set[type[BaseModel]] = set()


def fill_model(model: BaseModel, values: dict[str, Any], fields_set: set[str]) -> None:
    """Give ``model`` the state ``model_construct`` would: ``values`` (every field, in field
    order, already checked; a :class:`LazyListModel`'s ``lazy_field`` may be left out) as
    ``__dict__``. For hot constructors of models with no private
    attributes, no ``model_post_init`` and no extra fields kept (checked once per class):
    ``model_construct`` walks every field's aliases and defaults in Python."""
    cls = type(model)
    if cls not in _PLAIN_STATE:
        if (
            cls.__private_attributes__
            or cls.__pydantic_post_init__
            or cls.__pydantic_root_model__
            or cls.model_config.get("extra") == "allow"
            or list(values) != [k for k in cls.model_fields if k in values]
            or set(cls.model_fields) - set(values) - {getattr(cls, "lazy_field", "")}
        ):
            raise TypeError(f"{cls.__name__} cannot be built from plain state")
        _PLAIN_STATE.add(cls)
    _setattr(model, "__dict__", values)
    _setattr(model, "__pydantic_fields_set__", fields_set)
    _setattr(model, "__pydantic_extra__", None)
    _setattr(model, "__pydantic_private__", None)


_M = TypeVar("_M", bound=BaseModel)


def new_model(cls: type[_M], values: dict[str, Any], fields_set: set[str]) -> _M:
    """A new ``cls`` with the state :func:`fill_model` gives."""
    model = cls.__new__(cls)
    fill_model(model, values, fields_set)
    return model


def _refuse_mutation(self: object, *_args: object, **_kwargs: object) -> Any:
    raise TypeError(
        "the data of a TensorData built from an array cannot be changed in place; "
        "build a new TensorData (TensorData.from_numpy / from_list)"
    )


class ArrayList(list[Any]):
    """``TensorData.data`` (or ``EncodedTextChunk.tokens``) whose values were checked or
    converted in bulk: a list (pydantic, JSON and user code read it as one) that also keeps

    * ``array``: the contiguous little-endian int64/float32 numpy array the values came
      from (:meth:`TensorData.from_numpy` / ``from_torch``), so the protobuf encoder writes
      that buffer as it is instead of converting the list back; ``None`` when there is none;
    * ``finite``: True when every value is known to be a finite number within the float32
      range (the loss-input rule), so that rule is not checked element by element again.

    In-place changes are refused (the list would drift from what was checked); a copy or a
    pickle is a plain list."""

    __slots__ = ("array", "finite")

    append = extend = insert = remove = clear = sort = reverse = pop = _refuse_mutation
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse_mutation

    def __init__(self, values: list[Any], array: Any = None, *, finite: bool = False) -> None:
        super().__init__(values)
        self.array = array
        self.finite = finite

    def __reduce__(self) -> tuple[type[list[Any]], tuple[list[Any]]]:
        return (list, (list(self),))

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, _memo: dict[int, Any]) -> list[Any]:
        return list(self)


_MISSING: Any = object()


class LazyListModel(WireModel):
    """A wire model whose field ``lazy_field`` (a list) may be held as a numpy array
    (``_array``) and built as a list on first read (:meth:`_list_from`)."""

    __slots__ = ("_array",)

    #: The field that may be held as an array.
    lazy_field: ClassVar[str] = ""
    wire_lazy: ClassVar[bool] = True

    @classmethod
    def _lazy(cls, array: Any, fields: dict[str, Any], fields_set: Iterable[str]) -> Self:
        """A model holding ``array`` (owned: never changed afterwards) for ``lazy_field``
        and the other ``fields`` (every one, in order, already checked) as they are."""
        array.flags.writeable = False
        model = new_model(cls, fields, set(fields_set))
        _ARRAY_SLOT.__set__(model, array)
        return model

    def _list_from(self, array: Any) -> list[Any]:
        """The field's list for ``array`` (an :class:`ArrayList` keeping it)."""
        raise NotImplementedError

    def _wire_complete(self) -> None:
        name = self.lazy_field
        if name in self.__dict__:
            return
        array = _held(self)
        if array is None:
            return
        values = self._list_from(array)
        # A new __dict__ swapped in at once (readers on other threads see the old or the
        # new one, never a half-built one), keys in field order (dumps follow it).
        old = self.__dict__
        new: dict[str, Any] = {}
        for key in type(self).model_fields:
            if key == name:
                new[key] = values
            elif key in old:
                new[key] = old[key]
        for key, value in old.items():
            new.setdefault(key, value)
        object.__setattr__(self, "__dict__", new)

    def _lazy_len(self) -> int:
        """The number of values of ``lazy_field``, without building its list."""
        values = self.__dict__.get(self.lazy_field, _MISSING)
        if values is not _MISSING:
            return len(values)
        array = _held(self)
        return 0 if array is None else int(array.size)

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            if name == self.lazy_field and _held(self) is not None:
                self._wire_complete()
                return self.__dict__[name]
            return super().__getattr__(name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyListModel):
            self._wire_complete()
            other._wire_complete()
        return super().__eq__(other)

    def __iter__(self) -> TupleGenerator:
        self._wire_complete()
        return super().__iter__()

    def __repr_args__(self) -> Any:
        self._wire_complete()
        return super().__repr_args__()

    def __getstate__(self) -> dict[Any, Any]:
        self._wire_complete()
        return super().__getstate__()

    def __copy__(self) -> Self:
        self._wire_complete()
        return super().__copy__()

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        self._wire_complete()
        return super().__deepcopy__(memo)


_ARRAY_SLOT: Any = LazyListModel.__dict__["_array"]


def _held(model: LazyListModel) -> Any:
    try:
        return _ARRAY_SLOT.__get__(model, type(model))
    except AttributeError:
        return None


def stored_array(model: LazyListModel, np_dtype: Any) -> Any:
    """The numpy array (of ``np_dtype``) that holds the values of ``model.lazy_field``:
    while the list is not built yet, or when the list was built from it; else ``None``
    (a list given or replaced by the caller is the only truth)."""
    values = model.__dict__.get(model.lazy_field, _MISSING)
    array = _held(model) if values is _MISSING else getattr(values, "array", None)
    if array is not None and array.dtype == np_dtype:
        return array
    return None
