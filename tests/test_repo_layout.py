"""Repository-wide checks: dependency direction, declared imports, versions, hook docs."""

from __future__ import annotations

import ast
import inspect
import re
import tomllib
from pathlib import Path

import pytest

from tinkex_types import hookspecs

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = sorted([*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("plugins/*/pyproject.toml")])

# What each module may import among the tinkex modules (DESIGN.md §2). Nothing imports upward.
ALLOWED: dict[str, set[str]] = {
    "tinkex_types": set(),
    "tinkex_http": {"tinkex_types"},
    "tinkex_clients": {"tinkex_types", "tinkex_http"},
    "tinkex_regularizers": {"tinkex_types"},
    "tinkex_telemetry": {"tinkex_types", "tinkex_http"},
    "tinkex_cli": {"tinkex_types", "tinkex_http", "tinkex_clients"},
    "tinkex_server": {"tinkex_types"},
    "tinkex_chaos": {"tinkex_types", "tinkex_http"},
    "tinkex": {"tinkex_types", "tinkex_http", "tinkex_clients"},
}
DIST_OF = {mod: mod.replace("_", "-") for mod in ALLOWED}


def _member_info(pyproject: Path) -> tuple[str, str, dict[str, object]]:
    data = tomllib.loads(pyproject.read_text())
    src = pyproject.parent / "src"
    (module,) = [p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return data["project"]["name"], module, data


def _tinkex_imports(src_dir: Path) -> set[str]:
    found: set[str] = set()
    for path in src_dir.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top == "tinkex" or top.startswith("tinkex_"):
                    found.add(top)
    return found


def test_every_member_is_known() -> None:
    modules = {_member_info(p)[1] for p in MEMBERS}
    assert modules == set(ALLOWED), "update ALLOWED when adding a package"


@pytest.mark.parametrize("pyproject", MEMBERS, ids=lambda p: p.parent.name)
def test_dependency_direction_and_declared_imports(pyproject: Path) -> None:
    dist, module, data = _member_info(pyproject)
    imported = _tinkex_imports(pyproject.parent / "src" / module) - {module}
    upward = imported - ALLOWED[module]
    assert not upward, f"{dist} imports {sorted(upward)}, which DESIGN.md §2 forbids"
    project = data["project"]
    assert isinstance(project, dict)
    declared = {re.split(r"[=<>!~\[ ;]", d)[0] for d in project.get("dependencies", [])}
    missing = {DIST_OF[m] for m in imported} - declared
    assert not missing, f"{dist} imports {sorted(missing)} without declaring them"


@pytest.mark.parametrize("pyproject", MEMBERS, ids=lambda p: p.parent.name)
def test_member_shape(pyproject: Path) -> None:
    dist, module, data = _member_info(pyproject)
    project = data["project"]
    assert isinstance(project, dict)
    assert project["version"] == "0.1.0"
    for dep in project.get("dependencies", []):
        if dep.startswith("tinkex"):
            assert "==0.1.0" in dep, f"{dist}: sibling {dep} must be pinned with =="
    pkg = pyproject.parent / "src" / module
    assert (pkg / "py.typed").exists()
    assert (pyproject.parent / "README.md").read_text().strip()
    init = (pkg / "__init__.py").read_text()
    assert "__all__" in init, f"{dist}: __init__.py must define __all__"


def test_test_file_names_are_unique() -> None:
    names: dict[str, Path] = {}
    for path in ROOT.glob("**/tests/**/test_*.py"):
        if {".hatch-data", "tmp", ".venv"} & set(path.relative_to(ROOT).parts):
            continue
        assert path.name not in names, f"{path} and {names[path.name]} share a name"
        names[path.name] = path


def _hook_names() -> list[str]:
    return [
        name
        for name, obj in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("tinkex_")
    ]


@pytest.mark.parametrize("name", _hook_names())
def test_hookspec_documented(name: str) -> None:
    func = getattr(hookspecs, name)
    assert (func.__doc__ or "").strip(), f"{name} needs a docstring"
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert f"## {name}\n" in docs, f"docs/plugins.md needs a '## {name}' heading"


def test_changelog_has_unreleased() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## Unreleased" in text


# Size limits (issue 14): a module, a class and a function each fit in one reading.
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400
MAX_FUNCTION_LINES = 80


def _source_files() -> list[Path]:
    files = [*ROOT.glob("packages/*/src/**/*.py"), *ROOT.glob("plugins/*/src/**/*.py")]
    # Generated protobuf code comes from a pinned generator, it is not written by hand.
    return sorted(p for p in files if not p.name.endswith("_pb2.py"))


def _oversized(text: str, where: str) -> list[str]:
    found: list[str] = []
    lines = text.count("\n")
    if lines > MAX_MODULE_LINES:
        found.append(f"{where}: module of {lines} lines")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            is_class = isinstance(node, ast.ClassDef)
            if size > (MAX_CLASS_LINES if is_class else MAX_FUNCTION_LINES):
                kind = "class" if is_class else "function"
                found.append(f"{where}:{node.lineno}: {kind} {node.name} of {size} lines")
    return found


def test_sizes_within_limits() -> None:
    offenders = [
        item
        for path in _source_files()
        for item in _oversized(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert offenders == [], "split these:\n" + "\n".join(offenders)


def test_size_check_finds_each_kind() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    method = "    def m(self):\n" + "".join(f"        y{i} = {i}\n" for i in range(10))
    text = f"def long():\n{body}\nclass Big:\n" + method * 60
    found = _oversized(text, "probe.py")
    assert any("function long of 81 lines" in item for item in found)
    assert any("class Big of" in item for item in found)
    assert any("module of" in item for item in found)
    assert _oversized("def short():\n    return 1\n", "ok.py") == []
