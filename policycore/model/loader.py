"""Reading manifests: files, directories and ``-``, YAML or JSON, one or many documents each.

Owns turning paths into validated resources, collecting every problem of every document (with
the file and document index) before failing, so nothing partial is ever applied. Reading stdin
is the caller's job (pass its text as ``stdin_text``); this module never touches sys.stdin.
It does not own validation rules (`resources`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from policycore.model.resources import Problem, Resource, ValidationFailed, parse_resource

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class SourcedDocument:
    """One document and where it came from (``file.yaml#2`` = the third document)."""

    source: str
    doc: Any


def expand_paths(paths: Iterable[str]) -> Iterator[str]:
    """Files as given; directories walked (sorted) for YAML/JSON files; ``-`` passed through."""
    for path in paths:
        if path == "-":
            yield path
            continue
        p = Path(path)
        if p.is_dir():
            yield from (str(f) for f in sorted(p.rglob("*")) if f.is_file() and f.suffix in MANIFEST_SUFFIXES)
        elif p.exists():
            yield str(p)
        else:
            raise ValidationFailed([Problem("", f"{path}: no such file or directory")])


def split_documents(text: str, source: str) -> list[SourcedDocument]:
    """YAML (multi-document) or JSON text → documents; a ``List`` kind is flattened into its items."""
    try:
        if text.lstrip().startswith(("{", "[")):
            loaded = json.loads(text)
            docs = loaded if isinstance(loaded, list) else [loaded]
        else:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ValidationFailed([Problem("", f"{source}: not valid YAML or JSON: {err}")]) from None
    out: list[SourcedDocument] = []
    for i, doc in enumerate(docs):
        if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
            out += [SourcedDocument(f"{source}#{i}.items[{j}]", d) for j, d in enumerate(doc["items"])]
        else:
            out.append(SourcedDocument(f"{source}#{i}" if len(docs) > 1 else source, doc))
    return out


def read_documents(paths: Iterable[str], stdin_text: str | None = None) -> list[SourcedDocument]:
    docs: list[SourcedDocument] = []
    for path in expand_paths(paths):
        if path == "-":
            docs += split_documents(stdin_text or "", "<stdin>")
        else:
            docs += split_documents(Path(path).read_text(), path)
    return docs


def load_resources(
    paths: Iterable[str], *, stdin_text: str | None = None, default_namespace: str | None = None
) -> list[Resource]:
    """Every resource in ``paths``, or `ValidationFailed` listing every problem of every document."""
    resources: list[Resource] = []
    problems: list[Problem] = []
    for sourced in read_documents(paths, stdin_text):
        try:
            resources.append(parse_resource(sourced.doc, default_namespace=default_namespace))
        except ValidationFailed as err:
            problems += [Problem(f"{sourced.source}: {p.path}" if p.path else sourced.source, p.reason)
                         for p in err.problems]
    if problems:
        raise ValidationFailed(problems)
    return resources
