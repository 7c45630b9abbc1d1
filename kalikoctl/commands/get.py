"""``kalikoctl get | label | diff``: read resources from the controller, edit their labels, compare.

Owns the read commands and their output formats:

* ``get KIND [NAME] [-n NS | -A] [-l SELECTOR] [-o ps|wide|yaml|json]``: ``KIND`` in any case,
  plural or alias (`kalikoctl.online.ALIASES`); namespaced kinds default to namespace ``default``;
  ``-l`` is a Calico selector over ``metadata.labels``. ``yaml``/``json`` print the document for
  ``get KIND NAME`` and a ``kind: List`` of documents otherwise — both apply back unchanged
  (their ``resourceVersion`` matches, so ``apply`` reports them unchanged). ``ps`` (the default)
  is a table of names, ``wide`` adds each kind's columns (calicoctl's).
* ``label KIND NAME key=value... key-... [--overwrite]``: changing a key's value needs
  ``--overwrite`` (calicoctl's rule); exit 1 when refused.
* ``diff -f FILE``: the live documents against what ``apply`` would store, as unified YAML diffs;
  kubectl's exit codes: 0 no differences, 1 differences, 2 an error.

It does not own transport (`kalikoctl.client`) or validation (the server's; ``diff`` uses the
same validator locally to show what would be stored).
"""

from __future__ import annotations

import difflib
import json
from enum import StrEnum
from typing import Annotated, Any

import grpc
import typer
import yaml
from rich import box
from rich.table import Table

from kalikoctl.client import ServerError
from kalikoctl.online import DEFAULT, ServerOption, connect, fail_server, read_manifests, resolve_kind
from kalikoctl.options import RecursiveOption
from kalikoctl.output import EXIT_ERROR, EXIT_NO, console, escape, print_problems
from policycore.model import ValidationFailed, is_namespaced, key_of, parse_documents, to_document
from wire.gen.kaliko.v1 import admin_pb2 as pb


class GetFormat(StrEnum):
    ps = "ps"
    wide = "wide"
    yaml = "yaml"
    json = "json"


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def _match_labels(selector: dict[str, Any] | None) -> str:
    if not selector:
        return "<none>"
    return _labels(selector.get("matchLabels", {})) if selector.get("matchLabels") else "<expressions>"


def wide_columns(kind: str, doc: dict[str, Any]) -> dict[str, str]:
    """The extra columns of ``-o wide`` for one document."""
    spec = doc.get("spec") or {}
    meta = doc.get("metadata") or {}
    if kind in ("NetworkPolicy", "GlobalNetworkPolicy"):
        order = spec.get("order")
        return {
            "TIER": spec.get("tier", "default"),
            "ORDER": "" if order is None else f"{order:g}",
            "SELECTOR": spec.get("selector") or "all()",
        }
    if kind == "KubernetesNetworkPolicy":
        return {
            "POD-SELECTOR": _match_labels(spec.get("podSelector")),
            "TYPES": ",".join(spec.get("policyTypes", [])),
        }
    if kind == "Pod":
        status = doc.get("status") or {}
        return {
            "NODE": spec.get("nodeName") or "",
            "IP": status.get("podIP") or "",
            "LABELS": _labels(meta.get("labels", {})),
        }
    if kind == "Service":
        ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports", []))
        return {"SELECTOR": _labels(spec.get("selector", {})), "PORTS": ports}
    if kind == "Tier":
        order = spec.get("order")
        return {
            "ORDER": "" if order is None else f"{order:g}",
            "DEFAULT-ACTION": spec.get("defaultAction", "Deny"),
        }
    return {"LABELS": _labels(meta.get("labels", {}))}


def table(kind: str, documents: list[dict[str, Any]], *, wide: bool) -> Table:
    out = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    columns = (["NAMESPACE"] if is_namespaced(kind) else []) + ["NAME"]
    extra = list(wide_columns(kind, documents[0])) if wide and documents else []
    for column in columns + extra:
        out.add_column(column, overflow="fold")
    for doc in documents:
        meta = doc["metadata"]
        cells = ([meta.get("namespace", "")] if is_namespaced(kind) else []) + [meta["name"]]
        cells += list(wide_columns(kind, doc).values()) if wide else []
        out.add_row(*(escape(str(c)) for c in cells))
    return out


def dump(document: Any, output: GetFormat) -> str:
    if output is GetFormat.json:
        return json.dumps(document, indent=2)
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def get(
    kind: Annotated[
        str, typer.Argument(help="Kind: networkpolicy/np, gnp, knp, tier, pod, ns, node, svc...")
    ],
    name: Annotated[str | None, typer.Argument(help="One resource's name (default: list them)")] = None,
    namespace: Annotated[str, typer.Option("-n", "--namespace", help="Namespace (default: default)")] = "",
    all_namespaces: Annotated[bool, typer.Option("-A", "--all-namespaces", help="Every namespace")] = False,
    selector: Annotated[str, typer.Option("-l", "--selector", help="Calico selector over labels")] = "",
    output: Annotated[
        GetFormat, typer.Option("-o", "--output", help="ps, wide, yaml or json")
    ] = GetFormat.ps,
    server: ServerOption = DEFAULT,
) -> None:
    """Show resources stored in the datastore (through the leading controller)."""
    canonical = resolve_kind(kind)
    scope = "" if all_namespaces else (namespace or "default") if is_namespaced(canonical) else ""
    with connect(server) as client:
        if name is not None:
            reply = client.call(
                "Get", pb.GetRequest(ref=pb.ResourceRef(kind=canonical, namespace=scope, name=name))
            )
        else:
            request = pb.ListRequest(kind=canonical, namespace=scope, label_selector=selector)
            reply = client.call("List", request)
    documents = [json.loads(d) for d in reply.documents_json]
    if output in (GetFormat.yaml, GetFormat.json):
        body = documents[0] if name is not None else {"apiVersion": "v1", "kind": "List", "items": documents}
        typer.echo(dump(body, output), nl=output is GetFormat.json)
        return
    if not documents:
        where = f" in namespace {scope}" if scope else ""
        typer.echo(f"No {canonical} resources found{where}.", err=True)
        return
    console().print(table(canonical, documents, wide=output is GetFormat.wide))


def parse_label_args(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """``key=value`` sets, ``key-`` removes; anything else is a usage error."""
    set_labels: dict[str, str] = {}
    remove: list[str] = []
    for arg in args:
        if "=" in arg:
            key, _, value = arg.partition("=")
            set_labels[key] = value
        elif arg.endswith("-") and len(arg) > 1:
            remove.append(arg[:-1])
        else:
            raise typer.BadParameter(f"{arg!r}: expected key=value or key-", param_hint="LABELS")
    return set_labels, remove


def label(
    kind: Annotated[str, typer.Argument(help="Kind (any alias)")],
    name: Annotated[str, typer.Argument(help="Resource name")],
    labels: Annotated[list[str], typer.Argument(help="key=value to set, key- to remove")],
    namespace: Annotated[str, typer.Option("-n", "--namespace", help="Namespace (default: default)")] = "",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Allow changing an existing key's value")
    ] = False,
    server: ServerOption = DEFAULT,
) -> None:
    """Set or remove labels of one resource."""
    canonical = resolve_kind(kind)
    set_labels, remove = parse_label_args(labels)
    scope = (namespace or "default") if is_namespaced(canonical) else ""
    ref = pb.ResourceRef(kind=canonical, namespace=scope, name=name)
    request = pb.LabelRequest(ref=ref, set=set_labels, remove=remove, overwrite=overwrite)
    with connect(server) as client:
        reply = client.call("Label", request)
    where = f"{scope}/{name}" if scope else name
    if reply.results and reply.results[0].outcome == "unchanged":
        console().print(f"Labels of {canonical} {escape(where)} unchanged")
    else:
        console().print(f"Successfully updated labels of {canonical} {escape(where)}")


def _without_version(document: dict[str, Any]) -> dict[str, Any]:
    meta = dict(document.get("metadata", {}))
    meta.pop("resourceVersion", None)
    return {**document, "metadata": meta}


def diff(
    filename: Annotated[
        list[str], typer.Option("-f", "--filename", help="Manifests to compare with the live state")
    ],
    recursive: RecursiveOption = False,
    server: ServerOption = DEFAULT,
) -> None:
    """Show how applying the files would change the live resources (exit 0: none, 1: some, 2: error)."""
    documents = read_manifests(filename, recursive=recursive)
    try:
        resources = parse_documents(documents)
    except ValidationFailed as err:
        print_problems(err.problems)
        raise typer.Exit(EXIT_ERROR) from None
    changed = False
    with connect(server) as client:
        for resource in resources:
            key = key_of(resource)
            ref = pb.ResourceRef(kind=key.kind, namespace=key.namespace, name=key.name)
            try:
                live_docs = client.call("Get", pb.GetRequest(ref=ref)).documents_json
                live: dict[str, Any] | None = _without_version(json.loads(live_docs[0]))
            except ServerError as err:
                if err.code is not grpc.StatusCode.NOT_FOUND:
                    fail_server(err, exit_code=EXIT_ERROR)
                live = None
            before = yaml.safe_dump(live, sort_keys=False).splitlines(keepends=True) if live else []
            merged = _without_version(to_document(resource))
            after = yaml.safe_dump(merged, sort_keys=False).splitlines(keepends=True)
            path = "/".join(part for part in (key.kind, key.namespace, key.name) if part)
            lines = list(difflib.unified_diff(before, after, f"live/{path}", f"merged/{path}"))
            if lines:
                changed = True
                typer.echo("".join(lines), nl=False)
    raise typer.Exit(EXIT_NO if changed else 0)


def register(app: typer.Typer) -> None:
    app.command("get")(get)
    app.command("label")(label)
    app.command("diff")(diff)
