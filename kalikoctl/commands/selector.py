"""``kalikoctl selector EXPR [--labels JSON] [-o json]``: parse, print canonically, evaluate.

Owns the command's output. ``-o json`` prints ``{"valid": true, "canonical", "id", "matches"}``
(``matches`` is null without ``--labels``) and exits 0, or ``{"valid": false, "error"}`` and
exits 1. ``id`` is the content-hash id (the ip-set name equal selectors share). It does not own
the language (`policycore.selector`).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from kalikoctl.output import EXIT_ERROR, EXIT_NO, Format, console, escape, fail, print_json
from policycore.selector import SelectorError, parse


def selector(
    expression: Annotated[str, typer.Argument(help="A Calico selector, e.g. \"app == 'web' && has(tier)\".")],
    labels: Annotated[
        str | None,
        typer.Option("--labels", help='A JSON object of labels to evaluate, e.g. \'{"app": "web"}\'.'),
    ] = None,
    output: Annotated[Format, typer.Option("-o", "--output", help="text or json")] = Format.text,
) -> None:
    """Check a selector: its canonical form, its id and, with --labels, whether it matches."""
    label_map = parse_labels(labels) if labels is not None else None
    try:
        parsed = parse(expression)
    except SelectorError as err:
        if output is Format.json:
            print_json({"valid": False, "error": str(err)})
        else:
            out = console()
            out.print(f"[red]invalid[/red]: {escape(str(err))}")
            out.print(expression, markup=False)
            out.print(" " * err.position + "^", markup=False)
        raise typer.Exit(EXIT_NO) from None
    matches = None if label_map is None else parsed.evaluate(label_map)
    if output is Format.json:
        print_json({"valid": True, "canonical": parsed.canonical, "id": parsed.unique_id, "matches": matches})
        return
    out = console()
    out.print(f"canonical: {escape(parsed.canonical)}")
    out.print(f"id:        {parsed.unique_id}")
    if matches is not None:
        out.print("matches:   " + ("[green]yes[/green]" if matches else "[red]no[/red]"))


def parse_labels(text: str) -> dict[str, str]:
    """``--labels`` as a mapping of strings to strings, or exit 2 saying what is wrong."""
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError as err:
        fail(f"--labels: not valid JSON: {err}", EXIT_ERROR)
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        fail('--labels: must be a JSON object of strings, e.g. {"app": "web"}', EXIT_ERROR)
    return value


def register(app: typer.Typer) -> None:
    app.command("selector")(selector)
