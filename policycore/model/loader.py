"""Reading manifests: files, directories and ``-``, YAML or JSON, one or many documents each.

Owns turning paths into validated resources, collecting every problem of every document (with
the file and document index) before failing, so nothing partial is ever applied. Reading stdin
is the caller's job (pass its text as ``stdin_text``); this module never touches sys.stdin.
It does not own validation rules (`resources`).

Conventions (calicoctl's and kubectl's):

* a directory contributes its ``.yaml``, ``.yml`` and ``.json`` files, sorted; subdirectories
  only with ``recursive=True`` (``-R``);
* YAML text may hold many documents (``---``); JSON text may hold a stream of values; a top-level
  JSON array and a ``kind: ...List`` with ``items`` are flattened into their elements;
* a source with more than one document names each as ``file#i`` (0-based), list items as
  ``file#i.items[j]``; empty documents are skipped;
* YAML timestamps stay strings (``creationTimestamp`` is a string in every model).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from policycore.model.resources import Problem, Resource, ValidationFailed, parse_resource

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"
STDIN_SOURCE = "<stdin>"


class _ManifestLoader(yaml.SafeLoader):
    """SafeLoader that leaves timestamps as strings."""


_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True, slots=True)
class SourcedDocument:
    """One document and where it came from (``file.yaml#2`` = the third document)."""

    source: str
    doc: Any


def expand_paths(paths: Iterable[str], *, recursive: bool = False) -> tuple[list[str], list[Problem]]:
    """Files as given; directories listed (sorted) for manifest files; ``-`` passed through.

    Returns the files and a problem for every path that does not exist.
    """
    files: list[str] = []
    problems: list[Problem] = []
    for path in paths:
        p = Path(path)
        if path == STDIN:
            files.append(path)
        elif p.is_dir():
            found = p.rglob("*") if recursive else p.iterdir()
            files += [str(f) for f in sorted(found) if f.is_file() and f.suffix in MANIFEST_SUFFIXES]
        elif p.is_file():
            files.append(path)
        else:
            problems.append(Problem("", "no such file or directory", source=path))
    return files, problems


def split_documents(text: str, source: str) -> list[SourcedDocument]:
    """YAML (multi-document) or JSON (a stream of values) text → documents, lists flattened.

    Raises `ValidationFailed` naming the source and the line where the text stopped parsing.
    """
    try:
        docs = _json_values(text) if text.lstrip().startswith(("{", "[")) else _yaml_values(text)
    except json.JSONDecodeError as err:
        raise ValidationFailed([Problem("", f"not valid JSON: {err}", source=source)]) from None
    except yaml.YAMLError as err:
        raise ValidationFailed([Problem("", f"not valid YAML: {err}", source=source)]) from None
    out: list[SourcedDocument] = []
    for i, doc in enumerate(docs):
        name = f"{source}#{i}" if len(docs) > 1 else source
        items = (
            doc.get("items") if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") else None
        )
        if isinstance(items, list):
            out += [SourcedDocument(f"{name}.items[{j}]", item) for j, item in enumerate(items)]
        elif isinstance(doc, list):
            out += [SourcedDocument(f"{name}[{j}]", item) for j, item in enumerate(doc)]
        else:
            out.append(SourcedDocument(name, doc))
    return out


def _yaml_values(text: str) -> list[Any]:
    return [d for d in yaml.load_all(text, Loader=_ManifestLoader) if d is not None]


def _json_values(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    values: list[Any] = []
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return values
        value, at = decoder.raw_decode(text, at)
        values.append(value)


def read_documents(
    paths: Iterable[str], stdin_text: str | None = None, *, recursive: bool = False
) -> list[SourcedDocument]:
    """Every document in ``paths``; `ValidationFailed` lists every missing or unparsable source."""
    files, problems = expand_paths(paths, recursive=recursive)
    docs: list[SourcedDocument] = []
    for path in files:
        try:
            if path == STDIN:
                docs += split_documents(stdin_text or "", STDIN_SOURCE)
            else:
                docs += split_documents(Path(path).read_text(encoding="utf-8"), path)
        except ValidationFailed as err:
            problems += err.problems
        except (OSError, UnicodeDecodeError) as err:
            problems.append(Problem("", f"cannot read: {err}", source=path))
    if problems:
        raise ValidationFailed(problems)
    return docs


def parse_documents(
    docs: Iterable[SourcedDocument], *, default_namespace: str | None = None
) -> list[Resource]:
    """Every document validated, or `ValidationFailed` listing every problem with its source."""
    resources: list[Resource] = []
    problems: list[Problem] = []
    for sourced in docs:
        try:
            resources.append(parse_resource(sourced.doc, default_namespace=default_namespace))
        except ValidationFailed as err:
            problems += [Problem(p.path, p.reason, source=sourced.source) for p in err.problems]
    if problems:
        raise ValidationFailed(problems)
    return resources


def load_resources(
    paths: Iterable[str],
    *,
    stdin_text: str | None = None,
    default_namespace: str | None = None,
    recursive: bool = False,
) -> list[Resource]:
    """Every resource in ``paths``, or `ValidationFailed` listing every problem of every document."""
    docs = read_documents(paths, stdin_text, recursive=recursive)
    return parse_documents(docs, default_namespace=default_namespace)
