"""The package's modules import one way: each imports alone, and no import cycle exists."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import tinkex_regularizers

PACKAGE = "tinkex_regularizers"
SRC = Path(tinkex_regularizers.__file__).parent
MODULES = sorted(
    PACKAGE if p.stem == "__init__" else f"{PACKAGE}.{p.stem}" for p in SRC.glob("*.py")
)


def imported_modules(module: str) -> set[str]:
    """Every module of this package that ``module`` imports anywhere in its file.

    Imports inside functions and under ``TYPE_CHECKING`` count too: a lazy import that goes
    back up is still a circle.
    """
    path = SRC / "__init__.py" if module == PACKAGE else SRC / f"{module.rsplit('.', 1)[1]}.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom):  # relative imports: resolve against the package
            base = PACKAGE if not node.module else f"{PACKAGE}.{node.module}"
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found.update(n for n in names if n in MODULES and n != module)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that returns to its start), or ``None``."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_module_list_covers_the_core() -> None:
    for name in ("_base", "_spec", "_pipeline", "_builtins", "_regularizer", "_tensors"):
        assert f"{PACKAGE}.{name}" in MODULES


def test_no_import_cycle_among_the_modules() -> None:
    graph = {m: imported_modules(m) for m in MODULES}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
    # The layers the package is built on: nothing below imports what is above it.
    assert graph[f"{PACKAGE}._tensors"] == set()
    assert graph[f"{PACKAGE}._base"] == {f"{PACKAGE}._tensors"}
    assert f"{PACKAGE}._pipeline" not in graph[f"{PACKAGE}._spec"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# One fresh interpreter for all modules: before each import every module of the package is
# dropped from sys.modules, so each module is imported first, alone, exactly as by
# ``python -c "import tinkex_regularizers._spec"``; torch loads only once (a fresh
# interpreter per module would load it 16 times).
_IMPORT_EACH_ALONE = """
import importlib, sys, traceback
package, modules = sys.argv[1], sys.argv[2:]
failures = []
for module in modules:
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]
    try:
        importlib.import_module(module)
    except BaseException:
        failures.append(module + ":\\n" + traceback.format_exc())
    else:
        print("imported", module)
if failures:
    sys.exit("\\n".join(failures))
"""


def import_each_alone(
    package: str, modules: list[str], path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH_ALONE, package, *modules],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def test_each_module_imports_alone() -> None:
    """Every module imports with none of the package loaded before it, in a fresh process."""
    proc = import_each_alone(PACKAGE, MODULES)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:-1] == [f"imported {m}" for m in MODULES]


def test_importing_alone_catches_a_circle(tmp_path: Path) -> None:
    pkg = tmp_path / "circle_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from circle_pkg.b import B\nA = 1\n")
    (pkg / "b.py").write_text("from circle_pkg.a import A\nB = 2\n")
    proc = import_each_alone("circle_pkg", ["circle_pkg.a", "circle_pkg.b"], tmp_path)
    assert proc.returncode != 0
    assert "partially initialized module" in proc.stderr
    assert "circle_pkg.a:" in proc.stderr
    assert "circle_pkg.b:" in proc.stderr
