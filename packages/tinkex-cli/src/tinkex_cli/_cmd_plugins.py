"""``tinkex plugins``: the loaded plugins, their packages and the hooks they implement."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import click

from tinkex_cli._context import CLIState, format_option, pass_state
from tinkex_cli._output import Output

__all__ = ["describe_plugins", "plugins_command"]


def describe_plugins(pm: Any) -> dict[str, Any]:
    """``{"plugins": [{name, package, version, hooks}], "blocked": [names]}`` for a pluggy
    plugin manager. Plugins registered by hand (not from an entry point) have no package."""
    dists: dict[int, tuple[str, str]] = {}
    for plugin, dist in pm.list_plugin_distinfo():
        dists[id(plugin)] = (str(dist.project_name), str(dist.version))
    plugins: list[dict[str, Any]] = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin) or repr(plugin)
        callers = pm.get_hookcallers(plugin) or []
        package, version = dists.get(id(plugin), (None, None))
        plugins.append(
            {
                "name": name,
                "package": package,
                "version": version,
                "module": getattr(plugin, "__name__", type(plugin).__module__),
                "hooks": sorted(caller.name for caller in callers),
            }
        )
    plugins.sort(key=lambda p: (p["package"] is None, str(p["name"])))
    blocked = sorted({ep.name for ep in entry_points(group="tinkex") if pm.is_blocked(ep.name)})
    return {"plugins": plugins, "blocked": blocked}


@click.command("plugins")
@format_option
@pass_state
def plugins_command(state: CLIState) -> None:
    """List the loaded plugins, their package versions and the hooks each implements.

    Plugins are entry points of group "tinkex"; TINKEX_DISABLE_PLUGINS=name,... blocks some,
    TINKEX_LOAD_PLUGINS=name,... loads only those.
    """
    doc = describe_plugins(state.hooks.pm)

    def render(out: Output) -> None:
        rows = [
            (
                p["name"],
                p["package"] or "(registered in code)",
                p["version"] or "-",
                "\n".join(p["hooks"]) or "-",
            )
            for p in doc["plugins"]
        ]
        out.table(["Plugin", "Package", "Version", "Hooks"], rows, title="tinkex plugins")
        if doc["blocked"]:
            out.line("Blocked: " + ", ".join(doc["blocked"]))

    state.output.emit(doc, render)
