"""The public surface of an installed ``tinker`` package, as JSON (standard library only).

Run with the official client's interpreter to refresh the committed snapshot::

    /work/venvs/t0.38.0/bin/python packages/tinkex/tests/compat/tinker_surface.py \
        > packages/tinkex/tests/compat/tinker-0.38.0-surface.json

The parity test runs the same walk over tinkex installed as ``tinker`` (``tinkex.run``) and
compares: ``python -m tinkex.run tinker_surface.py --compare SNAPSHOT`` prints the differences.

What is recorded: every module path code imports (``tinker``, ``tinker.types``, each public
``tinker.types.<module>``, ``tinker.lib.public_interfaces`` and its modules,
``tinker.lib.retry_handler``), the names each offers (``__all__``, or the names a package
imports from that module), and per object its kind, constructor/function parameters (name,
kind, whether it has a default), public methods and properties, and model fields.
Annotations are not compared (the two packages name their types differently).
"""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import json
import pkgutil
import sys
from types import ModuleType
from typing import Any

ROOTS = ("tinker", "tinker.types", "tinker.lib.public_interfaces")
EXTRA_MODULES = ("tinker.lib.retry_handler",)
#: The HTTP resource layer and the generated protobuf code: implementation, not interface.
INTERNAL_MODULES = ("tinker.proto", "tinker.resources")
_PARAM_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional_only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword_only",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}
_SKIP_MEMBERS = {"model_config", "model_fields", "model_computed_fields"}


def _ours(obj: Any) -> bool:
    return str(getattr(obj, "__module__", "") or "").startswith(("tinker", "tinkex"))


def params(fn: Any) -> list[list[Any]] | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    out = []
    for i, p in enumerate(sig.parameters.values()):
        if (i == 0 and p.name in ("self", "cls")) or p.name.startswith("_"):
            continue
        out.append([p.name, _PARAM_KINDS[p.kind], p.default is not inspect.Parameter.empty])
    return out


def _model_fields(cls: type) -> dict[str, bool] | None:
    fields = getattr(cls, "model_fields", None)
    if not isinstance(fields, dict):
        return None
    return {name: bool(info.is_required()) for name, info in fields.items()}


def _member(cls: type, name: str) -> dict[str, Any] | None:
    for klass in cls.__mro__:
        if name in vars(klass):
            raw = vars(klass)[name]
            break
    else:
        return None
    if not _ours(klass):
        return None
    if isinstance(raw, property) or type(raw).__name__ == "cached_property":
        return {"kind": "property"}
    if isinstance(raw, (classmethod, staticmethod)):
        return {"kind": type(raw).__name__, "params": params(getattr(cls, name))}
    if inspect.isfunction(raw):
        return {"kind": "method", "params": params(raw)}
    return None


def describe(obj: Any) -> dict[str, Any]:
    if isinstance(obj, ModuleType):
        return {"kind": "module"}
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            kind = "exception"
        elif issubclass(obj, enum.Enum):
            kind = "enum"
        else:
            kind = "class"
        info: dict[str, Any] = {"kind": kind}
        if kind == "enum":
            info["members"] = sorted(m.name for m in obj)  # type: ignore[var-annotated]
        else:
            info["params"] = params(obj)
        fields = _model_fields(obj) or {}
        members = {}
        for name in sorted(dir(obj)):
            if name.startswith("_") or name in _SKIP_MEMBERS or name in fields:
                continue
            m = _member(obj, name)
            if m is not None:
                members[name] = m
        info["members"] = members if kind != "enum" else info["members"]
        if fields:
            info["fields"] = sorted(fields)
        return info
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return {"kind": "function", "params": params(obj)}
    return {"kind": "alias"}


def _imported_from(package: ModuleType) -> dict[str, list[str]]:
    """Names a package's ``__init__`` imports from each of its own public submodules."""
    try:
        tree = ast.parse(inspect.getsource(package))
    except (OSError, TypeError):
        return {}
    found: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            head = node.module.split(".")[0]
            if head.startswith("_"):
                continue
            mod = f"{package.__name__}.{node.module}"
            found.setdefault(mod, []).extend(a.asname or a.name for a in node.names)
    return found


def public_names(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return sorted(n for n in names if not n.startswith("__"))


def module_paths(official: bool) -> dict[str, list[str]]:
    """Module path -> names to record.  ``official``: discover submodules from the package."""
    out: dict[str, list[str]] = {}
    for root in ROOTS:
        mod = importlib.import_module(root)
        out[root] = [n for n in public_names(mod) if f"{root}.{n}" not in INTERNAL_MODULES]
        for sub, names in _imported_from(mod).items():
            if sub.count(".") - root.count(".") == 1 and sub not in ROOTS:
                out.setdefault(sub, []).extend(names)
        if official and hasattr(mod, "__path__"):
            for info in pkgutil.iter_modules(mod.__path__):
                name = f"{root}.{info.name}"
                if info.name.startswith("_") or info.name.endswith("_test"):
                    continue
                if name not in INTERNAL_MODULES:
                    out.setdefault(name, [])
    for extra in EXTRA_MODULES:
        out.setdefault(extra, [])
    out["tinker.lib.retry_handler"] = sorted({*out["tinker.lib.retry_handler"], "RetryConfig"})
    return {k: sorted(set(v)) for k, v in sorted(out.items())}


def snapshot() -> dict[str, Any]:
    import tinker

    modules = module_paths(official=True)
    objects: dict[str, dict[str, Any]] = {}
    paths: dict[str, str] = {}
    seen: dict[int, str] = {}
    for mod_name, names in modules.items():
        mod = importlib.import_module(mod_name)
        for name in names:
            obj = getattr(mod, name)
            path = f"{mod_name}.{name}"
            key = seen.get(id(obj)) if not isinstance(obj, (str, int, float)) else None
            if key is None or describe(obj)["kind"] == "alias":
                key = path
                seen[id(obj)] = key
                objects[key] = describe(obj)
            paths[path] = key
    return {
        "package": "tinker",
        "version": tinker.__version__,
        "modules": list(modules),
        "paths": paths,
        "objects": objects,
    }


def _diff_params(key: str, want: list[list[Any]] | None, got: list[list[Any]] | None) -> list[str]:
    if want is None or got is None:
        return []
    out = []
    have = {p[0]: p for p in got}
    have_kw = any(p[1] == "var_keyword" for p in got) and not any(
        p[1] == "var_keyword" for p in want
    )
    for name, kind, has_default in want:
        if kind in ("var_positional", "var_keyword"):
            if not any(p[1] == kind for p in got):
                star = "**" if kind == "var_keyword" else "*"
                out.append(f"{key}({star}{name}): missing")
            continue
        mine = have.get(name)
        if mine is None:
            if not have_kw:
                out.append(f"{key}({name}): missing")
            continue
        if mine[1] != kind and not (kind == "keyword_only" and mine[1] == "positional_or_keyword"):
            out.append(f"{key}({name}): {mine[1]}, tinker: {kind}")
        if has_default and not mine[2]:
            out.append(f"{key}({name}): required, tinker: optional")
    wanted = {p[0] for p in want}
    for name, kind, has_default in got:
        if name not in wanted and not has_default and kind not in ("var_positional", "var_keyword"):
            out.append(f"{key}({name}): required extra parameter")
    want_pos = [p[0] for p in want if p[1] in ("positional_or_keyword", "positional_only")]
    got_pos = [p[0] for p in got if p[1] in ("positional_or_keyword", "positional_only")]
    if got_pos[: len(want_pos)] != want_pos and all(n in got_pos for n in want_pos):
        out.append(f"{key}: positional order {got_pos}, tinker: {want_pos}")
    return out


def _diff_object(key: str, want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    if want["kind"] == "alias":
        return []
    if want["kind"] != got["kind"]:
        return [f"{key}: {got['kind']}, tinker: {want['kind']}"]
    out = _diff_params(key, want.get("params"), got.get("params"))
    if want["kind"] == "enum":
        missing = sorted(set(want["members"]) - set(got["members"]))
        out.extend(f"{key}.{m}: missing enum member" for m in missing)
        return out
    members = got.get("members") or {}
    for name, info in (want.get("members") or {}).items():
        mine = members.get(name)
        if mine is None and info["kind"] == "property" and name in got.get("fields", ()):
            continue  # a pydantic field reads as the attribute tinker's property gives
        if mine is None:
            out.append(f"{key}.{name}: missing {info['kind']}")
            continue
        if info["kind"] != mine["kind"]:
            out.append(f"{key}.{name}: {mine['kind']}, tinker: {info['kind']}")
        else:
            out.extend(_diff_params(f"{key}.{name}", info.get("params"), mine.get("params")))
    return out


def compare(snap: dict[str, Any]) -> list[str]:
    """Differences of the ``tinker`` importable now (tinkex) from the snapshot."""
    out: list[str] = []
    modules: dict[str, ModuleType] = {}
    for mod_name in snap["modules"]:
        try:
            modules[mod_name] = importlib.import_module(mod_name)
        except ImportError:
            out.append(f"{mod_name}: missing module")
    by_key: dict[str, list[str]] = {}
    for path, key in snap["paths"].items():
        by_key.setdefault(key, []).append(path)
    for key, paths in by_key.items():
        found = []
        for path in paths:
            mod_name, name = path.rsplit(".", 1)
            mod = modules.get(mod_name)
            if mod is not None and hasattr(mod, name):
                found.append(getattr(mod, name))
            elif mod is not None:
                out.append(f"{path}: missing")
        if not found:
            out = [d for d in out if not any(d == f"{p}: missing" for p in paths)]
            out.append(f"{key}: missing")
            continue
        out.extend(_diff_object(key, snap["objects"][key], describe(found[0])))
    return sorted(set(out))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--compare"]:
        with open(argv[1], encoding="utf-8") as fh:
            snap = json.load(fh)
        json.dump(compare(snap), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    json.dump(snapshot(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
