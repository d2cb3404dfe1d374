"""Fixtures of the tinkex-regularizers tests: an isolated plugin manager per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import torch

import tinkex_regularizers._plugin as builtin_plugin
from tinkex_types import Datum, Hooks, ModelInput, TensorData, make_plugin_manager, set_hooks


def make_hooks(*extra_plugins: object) -> Hooks:
    return Hooks(
        make_plugin_manager(load_entrypoints=False, plugins=[builtin_plugin, *extra_plugins])
    )


@pytest.fixture
def use_hooks() -> Iterator[Callable[..., Hooks]]:
    """``use_hooks(*plugins)`` installs a facade with the built-ins plus ``plugins``."""
    old = set_hooks(None)

    def install(*plugins: object) -> Hooks:
        hooks = make_hooks(*plugins)
        set_hooks(hooks)
        return hooks

    install()
    try:
        yield install
    finally:
        set_hooks(old)


@pytest.fixture
def make_datum() -> Callable[..., Datum]:
    return _datum


@pytest.fixture
def make_plain() -> Callable[..., dict[str, Any]]:
    return _plain


def _datum(**fields: Sequence[float]) -> Datum:
    """A Datum whose loss_fn_inputs hold ``fields`` (float lists)."""
    n = max((len(v) for v in fields.values()), default=0)
    return Datum(
        model_input=ModelInput.from_ints(list(range(1, n + 2))),
        loss_fn_inputs={
            k: TensorData.from_torch(torch.tensor(list(v), dtype=torch.float32))
            for k, v in fields.items()
        },
    )


def _plain(**fields: Any) -> dict[str, Any]:
    """A mapping-shaped datum (float64 values survive exactly)."""
    return {
        "loss_fn_inputs": {k: torch.tensor(list(v), dtype=torch.float64) for k, v in fields.items()}
    }
