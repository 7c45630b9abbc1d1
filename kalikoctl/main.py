"""The kalikoctl application: builds the typer app and registers every command group.

Owns the list of command modules and the top-level app object (the ``kalikoctl`` entry point).
It owns no command: each group lives in `kalikoctl.commands.<group>` and adds itself through
``register(app)``. To add a command group, write a module with ``register`` and list it below.

Exit codes (kubectl's diff convention, everywhere): 0 success, 1 the answer is "no" (invalid
manifests, an invalid selector), 2 usage errors and failures to run.
"""

from __future__ import annotations

from types import ModuleType

import typer

from kalikoctl.commands import demo, explain, get, lab, lab_probe, node, reach, selector, validate, write

COMMAND_MODULES: tuple[ModuleType, ...] = (
    validate,
    selector,
    reach,
    explain,
    demo,
    write,
    get,
    node,
    lab,
    lab_probe,
)


def build_app() -> typer.Typer:
    """A fresh app with every command group registered (tests may build their own)."""
    new = typer.Typer(
        name="kalikoctl",
        help="Kaliko's command-line tool: validate manifests, test selectors, evaluate policy offline.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for module in COMMAND_MODULES:
        module.register(new)
    return new


app = build_app()
