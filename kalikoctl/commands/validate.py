"""``kalikoctl validate -f PATH...``: check manifests offline with the one validator.

Owns the command's output: calicoctl's "Successfully validated N 'Kind' resource(s)" on success,
every problem (``source: path: reason``) otherwise; ``-o json`` prints
``{"valid": bool, "resources": N, "problems": [{"source", "path", "reason"}]}``. Exit 0 when
every document is valid, 1 otherwise. It does not own the rules (`policycore.model`).
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated

import typer

from kalikoctl.options import FilesOption, RecursiveOption, load
from kalikoctl.output import EXIT_NO, Format, console, print_json, print_problems, problem_json
from policycore.model import Resource, ValidationFailed, kind_of


def validate(
    filename: FilesOption,
    recursive: RecursiveOption = False,
    output: Annotated[Format, typer.Option("-o", "--output", help="text or json")] = Format.text,
) -> None:
    """Validate manifests offline: syntax, structure, schema and Kaliko's policy rules."""
    try:
        resources = load(filename, recursive=recursive)
    except ValidationFailed as err:
        if output is Format.json:
            print_json({"valid": False, "resources": 0, "problems": [problem_json(p) for p in err.problems]})
        else:
            print_problems(err.problems)
            console().print(f"{len(err.problems)} problem(s) found; nothing is valid until all are fixed.")
        raise typer.Exit(EXIT_NO) from None
    if output is Format.json:
        print_json({"valid": True, "resources": len(resources), "problems": []})
    else:
        console().print(summary(resources))


def summary(resources: list[Resource]) -> str:
    kinds = Counter(kind_of(r) for r in resources)
    if len(kinds) == 1:
        ((kind, count),) = kinds.items()
        return f"Successfully validated {count} '{kind}' resource(s)"
    return f"Successfully validated {len(resources)} resource(s)"


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
