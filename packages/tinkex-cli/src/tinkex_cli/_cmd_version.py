"""``tinkex version``: every installed tinkex package and its version."""

from __future__ import annotations

import platform
import re
from importlib.metadata import Distribution, distributions, entry_points

import click

from tinkex_cli._context import CLIState, format_option, pass_state
from tinkex_cli._output import Output

__all__ = ["installed_packages", "version_command"]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_packages() -> list[dict[str, str]]:
    """``[{"name", "version"}]`` for every ``tinkex*`` distribution and every distribution
    that provides a ``tinkex`` entry point (third-party plugins), sorted by name."""
    plugin_dists: set[str] = set()
    for ep in entry_points(group="tinkex"):
        dist = getattr(ep, "dist", None)
        if dist is not None:
            plugin_dists.add(_normalize(dist.metadata["Name"]))
    found: dict[str, str] = {}
    installed: Distribution
    for installed in distributions():
        raw = installed.metadata["Name"]
        if not raw:
            continue
        name = _normalize(raw)
        if name == "tinkex" or name.startswith("tinkex-") or name in plugin_dists:
            found.setdefault(name, installed.version)
    return [{"name": n, "version": v} for n, v in sorted(found.items())]


@click.command("version")
@format_option
@pass_state
def version_command(state: CLIState) -> None:
    """Show the installed tinkex packages (and plugins) with their versions."""
    packages = installed_packages()
    doc = {
        "packages": packages,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }

    def render(out: Output) -> None:
        out.table(
            ["Package", "Version"],
            [(p["name"], p["version"]) for p in packages],
            title=f"tinkex packages (Python {doc['python']})",
        )

    state.output.emit(doc, render)
