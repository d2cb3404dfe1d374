"""Meta-tests over ``tinkex_types.hookspecs`` (as datasette has): every hook is documented
under its own heading in docs/plugins.md, has a test named ``test_hook_<name>`` somewhere
in the repository's tests, and is typed (no argument is a bare ``Any``)."""

from __future__ import annotations

import ast
import inspect
import re
import typing
from pathlib import Path

import pytest

from tinkex_types import hookspecs

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs" / "plugins.md"


def _hook_names() -> list[str]:
    return sorted(
        name
        for name, obj in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("tinkex_")
    )


def _test_function_names() -> set[str]:
    names: set[str] = set()
    for pattern in (
        "packages/*/tests/**/test_*.py",
        "plugins/*/tests/**/test_*.py",
        "tests/**/test_*.py",
    ):
        for path in ROOT.glob(pattern):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(node.name)
    return names


HOOKS = _hook_names()


def test_there_are_hooks() -> None:
    assert "tinkex_register_transports" in HOOKS
    assert len(HOOKS) >= 13


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_is_documented_under_its_own_heading(name: str) -> None:
    docs = DOCS.read_text()
    assert f"\n## {name}\n" in docs, f"docs/plugins.md needs a '## {name}' heading"
    section = docs.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
    assert f"def {name}(" in section, f"the '## {name}' section shows the hook's signature"
    assert (getattr(hookspecs, name).__doc__ or "").strip(), f"{name} needs a docstring"


def test_every_documented_hook_exists() -> None:
    headings = re.findall(r"^## (tinkex_\w+)$", DOCS.read_text(), flags=re.MULTILINE)
    assert sorted(headings) == HOOKS


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_has_a_test(name: str) -> None:
    assert f"test_hook_{name}" in _TEST_NAMES, f"write a test named test_hook_{name}"


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_argument_is_typed(name: str) -> None:
    spec = getattr(hookspecs, name)
    hints = typing.get_type_hints(spec)
    params = inspect.signature(spec).parameters
    assert params, f"{name} takes no argument"
    for param in params:
        assert param in hints, f"{name}({param}) has no annotation"
        assert hints[param] is not typing.Any, f"{name}({param}) is typed Any: use a Protocol"


def test_observer_hooks_are_hooks() -> None:
    assert set(hookspecs.OBSERVER_HOOKS) <= set(HOOKS)
    assert {h for h in HOOKS if h.startswith("tinkex_on_")} <= hookspecs.OBSERVER_HOOKS


_TEST_NAMES = _test_function_names()
