"""Printing for every kalikoctl command: JSON documents, rich tables, problems, exit codes.

Owns the output formats (``-o json`` prints one JSON document and nothing else; the default is
human-readable rich text), the exit codes and the one way problems are printed. It does not own
what a command computes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from enum import StrEnum
from typing import Any, NoReturn

import typer
from rich.console import Console

from policycore.model import Problem

EXIT_OK = 0
EXIT_NO = 1
EXIT_ERROR = 2
PIPE_WIDTH = 1000


class Format(StrEnum):
    text = "text"
    json = "json"


class MatrixFormat(StrEnum):
    table = "table"
    json = "json"


def console() -> Console:
    """A console on the current stdout (so test runners capture it) that wraps and truncates
    nothing when stdout is not a terminal (tables keep their natural width in pipes and files)."""
    return Console(
        file=sys.stdout, highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else PIPE_WIDTH
    )


def error_console() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, sort_keys=False))


def problem_json(problem: Problem) -> dict[str, str]:
    return {"source": problem.source, "path": problem.path, "reason": problem.reason}


def print_problems(problems: Iterable[Problem]) -> None:
    out = console()
    for problem in problems:
        out.print(f"[red]error[/red]: {escape(str(problem))}")


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``."""
    error_console().print(f"[red]error[/red]: {escape(message)}")
    raise typer.Exit(code)


def escape(text: str) -> str:
    """``text`` with rich markup disabled (selectors and paths contain ``[`` and ``]``)."""
    return text.replace("[", r"\[")
