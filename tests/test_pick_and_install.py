"""Pick-and-install: every member installs ALONE into a fresh virtual environment.

For each member (``packages/*`` and ``plugins/*``) a fresh venv (no system site packages)
gets ``pip install`` of the member's folder plus the folders of the tinkex siblings it
depends on, transitively, and nothing else. Third-party dependencies come from the package
registry pip is configured with on this machine; ``torch`` is constrained to 2.13.0 (the CPU
build on disk) but only installed where a member's own dependencies need it.

Then, inside that venv and with warnings as errors, the module imports, every name in its
``__all__`` resolves, every submodule imports, its ``tinkex`` entry points load and a plugin
manager over everything installed builds. Some members get specific checks: tinkex-types
without httpx/torch (and without importing numpy), tinkex-clients without torch and without tinkex-telemetry,
tinkex-cli without tinkex-server, and the ``tinkex`` meta package.

The venvs are built, checked and removed again once per module run, two members at a time
(the CI machine has 2 cores), slow torch members first; the tests then only read the results.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Building nine venvs (two with torch) takes minutes; the default per-test timeout is 300 s.
pytestmark = [pytest.mark.install, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[1]
TORCH_PIN = "torch==2.13.0"
PIP_TAIL_LINES = 60
WORKERS = 2


# -- members and their sibling closure ----------------------------------------------------


@dataclass(frozen=True)
class Member:
    dist: str
    module: str
    folder: Path
    siblings: frozenset[str]  # direct tinkex dependencies (extras not included)
    third_party: tuple[str, ...]


def _requirement_name(req: str) -> str:
    return re.split(r"[=<>!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _discover() -> dict[str, Member]:
    raw: dict[str, tuple[Path, str, list[str]]] = {}
    pyprojects = [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("plugins/*/pyproject.toml")]
    for pyproject in sorted(pyprojects):
        project = tomllib.loads(pyproject.read_text())["project"]
        src = pyproject.parent / "src"
        modules = [p.name for p in src.iterdir() if (p / "__init__.py").exists()]
        assert len(modules) == 1, f"{pyproject.parent}: expected one package in src/, got {modules}"
        raw[project["name"]] = (pyproject.parent, modules[0], list(project.get("dependencies", [])))
    members: dict[str, Member] = {}
    for dist, (folder, module, deps) in raw.items():
        names = [_requirement_name(d) for d in deps]
        members[dist] = Member(
            dist=dist,
            module=module,
            folder=folder,
            siblings=frozenset(n for n in names if n in raw),
            third_party=tuple(d for d, n in zip(deps, names, strict=True) if n not in raw),
        )
    return members


MEMBERS = _discover()


def closure(dist: str) -> list[str]:
    """``dist`` and every tinkex sibling it depends on, transitively (no extras)."""
    seen: set[str] = set()
    todo = [dist]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(MEMBERS[name].siblings)
    return sorted(seen)


def needs_torch(dist: str) -> bool:
    return any(
        _requirement_name(req) == "torch"
        for name in closure(dist)
        for req in MEMBERS[name].third_party
    )


def test_closure_of_known_members() -> None:
    assert closure("tinkex-types") == ["tinkex-types"]
    assert closure("tinkex-cli") == ["tinkex-cli", "tinkex-clients", "tinkex-http", "tinkex-types"]
    assert "tinkex-server" not in closure("tinkex")  # only through the `local` extra
    assert {d for d in MEMBERS if needs_torch(d)} == {"tinkex-regularizers", "tinkex-server"}


# -- one venv per member ------------------------------------------------------------------

_DROPPED_ENV = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE"}


@dataclass
class Venv:
    member: Member
    path: Path
    ok: bool = False
    log: str = ""
    seconds: float = 0.0
    installed: list[str] = field(default_factory=list)
    checks: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def env(self) -> dict[str, str]:
        """Environment of a process inside this venv: nothing of hatch's venv leaks in."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in _DROPPED_ENV and not k.startswith(("TINKEX_", "TINKER_", "HATCH_ENV"))
        }
        env["VIRTUAL_ENV"] = str(self.path)
        env["PATH"] = os.pathsep.join([str(self.bin), env.get("PATH", "")])
        env["PYTHONNOUSERSITE"] = "1"
        env["PIP_NO_INPUT"] = "1"
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        return env

    def run(self, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=self.path,  # keeps the repository off sys.path
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run_python(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run([str(self.python), "-W", "error", "-c", textwrap.dedent(code), *args])

    def tail(self) -> str:
        return "\n".join(self.log.rstrip().splitlines()[-PIP_TAIL_LINES:])


def _build(venv: Venv, constraints: Path) -> None:
    """Create the venv and pip install the member with its sibling closure; never raises."""
    start = time.monotonic()
    chunks: list[str] = []
    try:
        created = subprocess.run(
            [sys.executable, "-m", "venv", str(venv.path)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={k: v for k, v in os.environ.items() if k not in _DROPPED_ENV},
        )
        chunks.append(created.stdout + created.stderr)
        if created.returncode != 0:
            chunks.append(f"`python -m venv` exited with {created.returncode}")
            return
        folders = [str(MEMBERS[name].folder) for name in closure(venv.member.dist)]
        cmd = [str(venv.python), "-m", "pip", "install", "--no-compile", "--progress-bar", "off"]
        cmd += ["-c", str(constraints), *folders]
        chunks.append("$ " + " ".join(cmd))
        pip = subprocess.run(
            cmd,
            cwd=venv.path,
            env=venv.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=900,
            check=False,
        )
        # pip warns once per package that the second file index lacks it: noise.
        chunks.extend(
            line
            for line in pip.stdout.splitlines()
            if "is neither a file nor a directory" not in line
        )
        if pip.returncode != 0:
            chunks.append(f"pip install exited with {pip.returncode}")
            return
        listed = venv.run_python(
            """
            import importlib.metadata as md, json
            print(json.dumps(sorted({d.metadata["Name"].lower() for d in md.distributions()})))
            """
        )
        if listed.returncode != 0:
            chunks.append(listed.stdout + listed.stderr)
            return
        venv.installed = json.loads(listed.stdout)
        venv.ok = True
    except (OSError, subprocess.SubprocessError) as exc:
        chunks.append(f"{type(exc).__name__}: {exc}")
    finally:
        venv.seconds = time.monotonic() - start
        venv.log = "\n".join(chunks)


def _build_and_check(venv: Venv, constraints: Path) -> Venv:
    """Build the venv, run its checks, keep their output and remove the venv (the torch
    ones hold 26k files each: deleting them while the next venvs build saves wall time)."""
    _build(venv, constraints)
    if venv.ok:
        dist = venv.member.dist
        checks: dict[str, Callable[[Venv], subprocess.CompletedProcess[str]]] = {
            "import": lambda v: v.run_python(_GENERIC_CHECK, v.member.module, dist),
            **SPECIFIC_CHECKS.get(dist, {}),
        }
        for name, check in checks.items():
            try:
                venv.checks[name] = check(venv)
            except (OSError, subprocess.SubprocessError) as exc:
                venv.checks[name] = subprocess.CompletedProcess([name], 1, "", repr(exc))
    shutil.rmtree(venv.path, ignore_errors=True)
    return venv


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Venv]]:
    """Every member in its own fresh venv, checks already run; two at a time, torch first."""
    base = tmp_path_factory.mktemp("pick-and-install")
    constraints = base / "constraints.txt"
    constraints.write_text(TORCH_PIN + "\n")
    todo = {dist: Venv(member, base / dist) for dist, member in MEMBERS.items()}
    order = sorted(todo, key=lambda d: (not needs_torch(d), -len(closure(d)), d))
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="pick-install") as pool:
        list(pool.map(lambda d: _build_and_check(todo[d], constraints), order))
    timings = ", ".join(f"{d} {todo[d].seconds:.0f}s" for d in order)
    print(
        f"\npick-and-install: {len(todo)} venvs built, checked and removed in "
        f"{time.monotonic() - start:.0f}s (installs: {timings})"
    )
    yield todo
    shutil.rmtree(base, ignore_errors=True)


def _installed(venvs: dict[str, Venv], dist: str) -> Venv:
    venv = venvs[dist]
    if not venv.ok:
        pytest.fail(
            f"{dist}: installing {closure(dist)} into a fresh venv failed; "
            f"last {PIP_TAIL_LINES} lines of the log:\n{venv.tail()}",
            pytrace=False,
        )
    return venv


def _passed(venv: Venv, check: str, what: str) -> str:
    """stdout of a check that exited 0; otherwise fail naming the package and the check."""
    proc = venv.checks[check]
    if proc.returncode != 0:
        pytest.fail(
            f"{venv.member.dist}: {what} failed (exit {proc.returncode}) in its own venv\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}",
            pytrace=False,
        )
    return proc.stdout


# -- the checks (run inside the venvs) ----------------------------------------------------

_GENERIC_CHECK = """
import importlib, importlib.metadata as md, json, pkgutil, sys

module_name, dist = sys.argv[1], sys.argv[2]
module = importlib.import_module(module_name)
where = module.__file__ or ""
assert "site-packages" in where, f"{module_name} was not installed from a wheel: {where}"
names = getattr(module, "__all__", None)
assert isinstance(names, list) and names and all(isinstance(n, str) for n in names), (
    f"{module_name}.__all__ must be a non-empty list of names, got {names!r}"
)
missing = [n for n in names if not hasattr(module, n)]
assert not missing, f"{module_name}.__all__ names that do not resolve: {missing}"
submodules = [
    info.name
    for info in pkgutil.walk_packages(module.__path__, module_name + ".")
    if not info.name.endswith(".__main__")  # running it would start the program
]
for sub in submodules:
    importlib.import_module(sub)
eps = [ep for ep in md.distribution(dist).entry_points if ep.group == "tinkex"]
for ep in eps:
    ep.load()
import tinkex_types
hooks = tinkex_types.Hooks(tinkex_types.make_plugin_manager())
print(json.dumps({
    "submodules": len(submodules),
    "entry_points": [ep.name for ep in eps],
    "transports": hooks.transports().names(),
    "regularizers": hooks.regularizers().names(),
    "telemetry_sinks": hooks.telemetry_sinks().names(),
}))
"""

_TYPES_CHECK = """
import importlib.util, json, sys
absent = {m: importlib.util.find_spec(m) is None for m in ("httpx", "torch")}
assert all(absent.values()), f"installed although tinkex-types does not need them: {absent}"
# numpy is a dependency (the protobuf codec's buffers) but is not imported by models alone
from tinkex_types import AdamParams, Datum, ModelInput, TensorData
datum = Datum(
    model_input=ModelInput.from_ints([1, 2, 3]),
    loss_fn_inputs={"target_tokens": TensorData(data=[2, 3, 4], dtype="int64", shape=[3])},
)
again = Datum.model_validate_json(datum.model_dump_json())
assert again == datum, (again, datum)
assert AdamParams(learning_rate=1e-3).learning_rate == 1e-3
print(json.dumps(sorted(m for m in ("httpx", "torch", "numpy") if m in sys.modules)))
"""

_CLIENTS_CHECK = """
import importlib.util, json
assert importlib.util.find_spec("torch") is None, "torch must not be installed here"
assert importlib.util.find_spec("tinkex_telemetry") is None, "tinkex-telemetry must not be here"
import tinkex_clients
from tinkex_http import Config
config = Config(base_url="http://127.0.0.1:9", api_key="tml-pick-and-install-secret")
assert "pick-and-install-secret" not in repr(config), repr(config)
from tinkex_clients import TrainingClient
# torch is looked up before the client touches its session, so no session is needed here.
client = TrainingClient.__new__(TrainingClient)
try:
    client.forward_backward_custom([], lambda data, logprobs: (0.0, {}))
except ImportError as exc:
    print(json.dumps(str(exc)))
else:
    raise AssertionError("forward_backward_custom ran without torch installed")
"""

_META_CHECK = """
import tinkex
import tinkex_clients
assert "ServiceClient" in tinkex.__all__, f"tinkex.__all__ lacks ServiceClient: {tinkex.__all__}"
assert tinkex.ServiceClient is tinkex_clients.ServiceClient
"""


def _cli_help(venv: Venv) -> subprocess.CompletedProcess[str]:
    script = venv.bin / "tinkex"
    if not script.exists():
        return subprocess.CompletedProcess([str(script)], 1, "", f"{script} was not installed")
    return venv.run([str(script), "--help"])


SPECIFIC_CHECKS: dict[str, dict[str, Callable[[Venv], subprocess.CompletedProcess[str]]]] = {
    "tinkex-types": {"types": lambda v: v.run_python(_TYPES_CHECK)},
    "tinkex-clients": {"clients": lambda v: v.run_python(_CLIENTS_CHECK)},
    "tinkex-cli": {"help": _cli_help},
    "tinkex": {"meta": lambda v: v.run_python(_META_CHECK), "help": _cli_help},
}


# -- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("dist", sorted(MEMBERS))
def test_member_installs_alone_and_imports(venvs: dict[str, Venv], dist: str) -> None:
    venv = _installed(venvs, dist)
    tinkex_dists = sorted(d for d in venv.installed if d == "tinkex" or d.startswith("tinkex-"))
    assert tinkex_dists == closure(dist), (
        f"{dist}: its venv holds the tinkex dists {tinkex_dists}, expected {closure(dist)}"
    )
    has_torch = "torch" in venv.installed
    assert has_torch == needs_torch(dist), (
        f"{dist}: torch installed={has_torch}, but its dependencies "
        f"{'need' if needs_torch(dist) else 'do not need'} it"
    )
    report = json.loads(_passed(venv, "import", f"importing {venv.member.module}"))
    if "tinkex-http" in closure(dist):
        assert {"http", "https"} <= set(report["transports"]), (
            f"{dist}: tinkex-http is installed but no http/https transport registered: {report}"
        )


def test_types_needs_no_httpx_or_torch_and_imports_no_numpy(venvs: dict[str, Venv]) -> None:
    venv = _installed(venvs, "tinkex-types")
    out = _passed(venv, "types", "tinkex_types without httpx/torch, numpy not imported")
    assert json.loads(out) == [], f"tinkex_types imported {out}"


def test_clients_without_torch_or_telemetry(venvs: dict[str, Venv]) -> None:
    venv = _installed(venvs, "tinkex-clients")
    assert "torch" not in venv.installed
    assert "tinkex-telemetry" not in venv.installed
    message = json.loads(_passed(venv, "clients", "tinkex_clients without torch/telemetry"))
    assert "tinkex-clients[torch]" in message, f"the error must name the extra: {message!r}"


@pytest.mark.parametrize("dist", ["tinkex-cli", "tinkex"])
def test_cli_without_server_has_no_serve(venvs: dict[str, Venv], dist: str) -> None:
    venv = _installed(venvs, dist)
    assert "tinkex-server" not in venv.installed
    help_text = _passed(venv, "help", "`tinkex --help`")
    stderr = venv.checks["help"].stderr
    assert stderr == "", f"{dist}: `tinkex --help` wrote to stderr:\n{stderr}"
    listing = help_text.split("Commands:", 1)
    assert len(listing) == 2, f"{dist}: no command list in `tinkex --help`:\n{help_text}"
    commands = set(re.findall(r"^  (\S+)", listing[1], flags=re.MULTILINE))
    assert {"checkpoint", "run", "sample", "version", "plugins"} <= commands, help_text
    assert "serve" not in commands, f"{dist}: `serve` listed without tinkex-server:\n{help_text}"


def test_meta_package_exposes_service_client(venvs: dict[str, Venv]) -> None:
    venv = _installed(venvs, "tinkex")
    _passed(venv, "meta", "import tinkex; tinkex.ServiceClient")
