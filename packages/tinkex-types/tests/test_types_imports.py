"""Importing tinkex_types pulls in no heavy or transport dependency."""

from __future__ import annotations

import subprocess
import sys

import tinkex_types


def test_import_is_light() -> None:
    code = (
        "import sys, tinkex_types; "
        "print(','.join(m for m in ('numpy', 'torch', 'httpx', 'tokenizers', 'jinja2') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


def test_all_names_exist_and_are_unique() -> None:
    assert len(set(tinkex_types.__all__)) == len(tinkex_types.__all__)
    for name in tinkex_types.__all__:
        assert hasattr(tinkex_types, name), name
