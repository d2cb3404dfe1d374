"""Sparse CSR tensors (SDK 0.38's ``TensorData(sparse_crow_indices, sparse_col_indices)``):
the checks of the layout, densifying with a pad value, and finding the CSR form of a dense
2-D array. numpy is imported by the functions, never at import time."""

from __future__ import annotations

import itertools
from typing import Any

__all__ = ["check_pad_value", "csr_of", "csr_problem", "densify"]


def check_pad_value(pad_value: Any) -> int:
    """``pad_value`` as an int: ints and numpy integers, never bools (as SDK 0.38)."""
    if isinstance(pad_value, bool) or not (
        isinstance(pad_value, int) or hasattr(pad_value, "__index__")
    ):
        raise TypeError(
            f"pad_value must be an integer, got {type(pad_value).__name__}: {pad_value!r}"
        )
    return int(pad_value)


def csr_problem(
    crow: list[int] | None, col: list[int] | None, nnz: int, shape: list[int] | None
) -> str | None:
    """What is wrong with a CSR layout of ``nnz`` stored values, or None when it is valid:
    both index lists or neither, a 2-D ``shape``, ``rows + 1`` non-decreasing row offsets
    from 0 to ``nnz``, ``nnz`` column indices within the columns."""
    if crow is None and col is None:
        return None
    if crow is None or col is None:
        return (
            "sparse_crow_indices and sparse_col_indices come together: give both (a CSR "
            "tensor) or neither (a dense one)"
        )
    if shape is None or len(shape) != 2:
        return f"a sparse CSR tensor needs a 2-D shape (the dense shape), got {shape}"
    rows, cols = shape
    if len(crow) != rows + 1 or crow[0] != 0 or crow[-1] != nnz:
        return (
            f"sparse_crow_indices must hold {rows + 1} row offsets from 0 to {nnz} (the "
            f"number of values in data), got {len(crow)} offsets"
        )
    if any(b < a for a, b in itertools.pairwise(crow)):
        return "sparse_crow_indices must be non-decreasing"
    if len(col) != nnz:
        return f"sparse_col_indices must hold one column per value ({nnz}), got {len(col)}"
    if col and (min(col) < 0 or max(col) >= cols):
        return f"sparse_col_indices must be column indices in [0, {cols})"
    return None


def densify(values: Any, crow: list[int], col: list[int], shape: list[int], pad: int) -> Any:
    """The dense numpy array (``shape``) of a CSR tensor whose unlisted entries are ``pad``."""
    import numpy as np

    rows, cols = shape
    dense = np.full(rows * cols, pad, dtype=values.dtype)
    counts: Any = np.diff(np.asarray(crow, dtype=np.int64))
    row_of = np.repeat(np.arange(rows, dtype=np.int64), counts)
    dense[row_of * cols + np.asarray(col, dtype=np.int64)] = values
    return dense.reshape(rows, cols)


def csr_of(dense: Any, pad: int) -> tuple[Any, list[int], list[int]] | None:
    """``(values, crow_indices, col_indices)`` of a 2-D array, leaving out the entries equal
    to ``pad``; None when CSR would not be smaller than the dense form (as SDK 0.38)."""
    import numpy as np

    rows, cols = dense.shape
    listed = dense != pad  # NaN != pad: NaN values are listed
    nnz = int(listed.sum())
    if (rows + 1) + 2 * nnz >= rows * cols:
        return None
    crow = np.concatenate([[0], np.cumsum(listed.sum(axis=1))]).astype(np.int64)
    col = np.nonzero(listed)[1].astype(np.int64)
    return dense[listed], crow.tolist(), col.tolist()
