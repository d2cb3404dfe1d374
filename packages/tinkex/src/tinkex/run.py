"""Run a program written for ``tinker`` on tinkex, unmodified.

    python -m tinkex.run script.py [args...]
    python -m tinkex.run -m package.module [args...]

``tinker`` and every ``tinker.*`` module path resolve to tinkex for the whole program
(:func:`tinkex.install_as_tinker`); the script runs as ``__main__`` with ``sys.argv`` set as
if it had been started directly. See ``docs/tinker-as-tinkex.md`` for the limits.
"""

from __future__ import annotations

import os
import runpy
import sys

from tinkex._as_tinker import install_as_tinker

USAGE = "usage: python -m tinkex.run SCRIPT.py [args...] | -m MODULE [args...]"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not args else sys.stdout)
        return 2 if not args else 0
    install_as_tinker()
    if args[0] == "-m":
        if len(args) < 2:
            print(USAGE, file=sys.stderr)
            return 2
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        return 0
    sys.argv = args
    sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))
    runpy.run_path(args[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
