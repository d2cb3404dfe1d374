"""``tinker`` as another name of ``tinkex`` for a whole program (:func:`install_as_tinker`)."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

ALIAS = "tinker"
TARGET = "tinkex"


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self._target = target
        self._spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self._target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the alias spec on the module: give tinkex its own back
        module.__spec__ = self._spec


class TinkerAliasFinder(importlib.abc.MetaPathFinder):
    """Answers ``tinker`` and ``tinker.<x>`` with the module ``tinkex`` / ``tinkex.<x>``."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        real = TARGET + fullname[len(ALIAS) :]
        try:
            spec = importlib.util.find_spec(real)
        except ModuleNotFoundError:
            return None
        if spec is None:
            return None
        is_package = spec.submodule_search_locations is not None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(real), is_package=is_package)


def install_as_tinker(*, replace: bool = False) -> None:
    """Make ``import tinker`` (and ``tinker.types``, ``tinker.types.datum``,
    ``tinker.lib.public_interfaces...``) give tinkex's modules, for this whole process.

    Call it before anything imports ``tinker``. If the official package is already
    imported, this refuses (its objects would mix with tinkex's) unless ``replace=True``,
    which drops the official modules from ``sys.modules`` (objects already made from them
    stay theirs). Calling it again is harmless.
    """
    loaded = sys.modules.get(ALIAS)
    if loaded is not None and loaded is not sys.modules.get(TARGET):
        if not replace:
            raise RuntimeError(
                "install_as_tinker: the official 'tinker' package is already imported "
                f"(from {getattr(loaded, '__file__', '?')}); call tinkex.install_as_tinker() "
                "before anything imports tinker, run the program with "
                "'python -m tinkex.run script.py', or pass replace=True"
            )
        for name in [n for n in sys.modules if n == ALIAS or n.startswith(ALIAS + ".")]:
            del sys.modules[name]
    if not any(isinstance(f, TinkerAliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, TinkerAliasFinder())
    importlib.import_module(ALIAS)


def uninstall_as_tinker() -> None:
    """Undo :func:`install_as_tinker`: ``import tinker`` finds the installed package again."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, TinkerAliasFinder)]
    for name in [n for n in sys.modules if n == ALIAS or n.startswith(ALIAS + ".")]:
        del sys.modules[name]


def is_installed_as_tinker() -> bool:
    """Whether ``import tinker`` gives tinkex in this process."""
    return sys.modules.get(ALIAS) is sys.modules.get(TARGET) is not None
