"""Regenerate tinkex_types/proto/tinker_public_pb2.py and .pyi from tinker_public.proto.

The generator is pinned: grpcio-tools 1.64.1 (libprotoc 26.1), whose code runs on every
protobuf runtime from 5.26 on (it has no runtime-version check). Run it from the repo root:

    python -m venv /tmp/protogen && /tmp/protogen/bin/pip install grpcio-tools==1.64.1 ruff==0.17.6
    /tmp/protogen/bin/python packages/tinkex-types/scripts/gen_proto.py          # write
    /tmp/protogen/bin/python packages/tinkex-types/scripts/gen_proto.py --check  # compare

After protoc, these edits are made: the descriptor goes into a private ``DescriptorPool``
instead of the process-wide default one, and the message classes are registered in a symbol
database over that pool (so the official ``tinker`` package, which registers the same
``tinker_public`` names, can be imported in the same process, with the upb and the
pure-Python runtime alike); the files are formatted with ruff. Nothing else is changed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

GENERATOR = "grpcio-tools"
GENERATOR_VERSION = "1.64.1"
PROTO_DIR = Path(__file__).resolve().parents[1] / "src" / "tinkex_types" / "proto"
PROTO = "tinker_public.proto"
OUTPUTS = ("tinker_public_pb2.py", "tinker_public_pb2.pyi")

HEADER = (
    "# Generated from tinker_public.proto by packages/tinkex-types/scripts/gen_proto.py\n"
    f"# ({GENERATOR}=={GENERATOR_VERSION}, then: private descriptor pool, ruff format).\n"
    "# DO NOT EDIT: change the .proto and regenerate.\n"
    "# ruff: noqa\n"
)
DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
PRIVATE_POOL = "POOL.AddSerializedFile("


def _check_generator() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version(GENERATOR)
    except PackageNotFoundError:
        sys.exit(f"install {GENERATOR}=={GENERATOR_VERSION} in the Python that runs this script")
    if found != GENERATOR_VERSION:
        sys.exit(f"{GENERATOR} {found} found; the generated code is pinned to {GENERATOR_VERSION}")


def _postprocess_py(text: str) -> str:
    if text.count(DEFAULT_POOL) != 1:
        raise SystemExit("unexpected protoc output: no single default-pool registration")
    text = text.replace(
        DEFAULT_POOL,
        "POOL.AddSerializedFile(",
    )
    marker = "_sym_db = _symbol_database.Default()\n"
    pool = (
        "#: A private pool: the official client registers the same names in the default one.\n"
        "POOL = _descriptor_pool.DescriptorPool()\n"
    )
    text = text.replace(marker, marker + pool)
    build = "_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'tinker_public_pb2', _globals)\n"
    if text.count(build) != 1:
        raise SystemExit("unexpected protoc output: no single BuildTopDescriptorsAndMessages")
    private_build = (
        "# The builder registers each class in its symbol database, which the pure-Python\n"
        "# runtime copies into that database's pool: point it at the private pool meanwhile.\n"
        "_default_sym_db = _builder._sym_db\n"
        "_builder._sym_db = _symbol_database.SymbolDatabase(pool=POOL)\n"
        "try:\n"
        "    " + build + "finally:\n"
        "    _builder._sym_db = _default_sym_db\n"
    )
    text = text.replace(build, private_build)
    return HEADER + text


def _postprocess_pyi(text: str) -> str:
    text = text.replace(
        "DESCRIPTOR: _descriptor.FileDescriptor\n",
        "from google.protobuf import descriptor_pool as _descriptor_pool\n\n"
        "POOL: _descriptor_pool.DescriptorPool\nDESCRIPTOR: _descriptor.FileDescriptor\n",
    )
    # protoc's stubs leave ``Mapping`` unparametrised; mypy --strict would flag each one.
    return HEADER + '# mypy: disable-error-code="type-arg"\n' + text


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc

    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        str(PROTO_DIR / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    py = out_dir / OUTPUTS[0]
    pyi = out_dir / OUTPUTS[1]
    py.write_text(_postprocess_py(py.read_text()))
    pyi.write_text(_postprocess_pyi(pyi.read_text()))
    ruff = shutil.which("ruff")
    if ruff is None:
        raise SystemExit("ruff (0.17.6) is needed on PATH to format the generated files")
    for path in (py, pyi):
        subprocess.run([ruff, "format", "--quiet", str(path)], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    opts = parser.parse_args()
    _check_generator()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        stale = [n for n in OUTPUTS if (out / n).read_text() != _read(PROTO_DIR / n)]
        if opts.check:
            for name in stale:
                print(f"{name} is out of date: run {Path(__file__).name}")
            return 1 if stale else 0
        for name in OUTPUTS:
            shutil.copyfile(out / name, PROTO_DIR / name)
        print("wrote", ", ".join(OUTPUTS) if stale else "nothing (up to date)")
    return 0


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


if __name__ == "__main__":
    raise SystemExit(main())
