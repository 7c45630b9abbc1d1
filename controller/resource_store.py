"""Resources on the key/value store: the etcd key layout, the value codec and CAS writes.

Owns `KeyLayout` (one cluster's etcd keys), the mapping between a `Resource` and its etcd key and
bytes, and typed create / replace / apply / delete / get / list on top of
`iokit.store.KeyValueStore`. It does not own validation rules (`policycore.model`), watching
(`iokit.syncer` + `controller.engine`) or the cluster name's rules (`iokit.cluster_name`).

Key layout of cluster ``<cluster>`` (documented in ARCHITECTURE.md; the default cluster is
``kaliko``, so its keys are ``/kaliko/v1/...``)::

    /<cluster>/v1/resources/<Kind>/<namespace or "_">/<name>   JSON document, no resourceVersion
    /<cluster>/v1/leader                                     leader's id, under its lease
    /<cluster>/v1/epoch                                      last epoch taken by a leader

Clusters sharing one etcd never see each other's keys: a key outside this cluster's resource
prefix names no resource (`KeyLayout.resource_key` is None; `decode` says so).

``metadata.resourceVersion`` is the entry's mod_revision; it is added on read and never stored.
A value that is not a valid resource for its key (bad JSON, wrong schema, too big, key and
document disagree) decodes to `InvalidEntry`, so the engine treats it as absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from iokit.cluster_name import DEFAULT_CLUSTER, check_cluster_name
from iokit.store import Conflict, Entry, KeyValueStore
from policycore.model import (
    KINDS,
    Problem,
    Resource,
    ResourceKey,
    ValidationFailed,
    key_of,
    parse_resource,
    to_document,
)

MAX_VALUE_BYTES = 512 * 1024
CLUSTER_SCOPE = "_"


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """The etcd keys of one cluster, all under ``/<cluster>/v1/``."""

    cluster: str = DEFAULT_CLUSTER

    def __post_init__(self) -> None:
        check_cluster_name(self.cluster)

    @property
    def root(self) -> str:
        return f"/{self.cluster}/v1/"

    @property
    def resources(self) -> str:
        """The prefix the controller lists and watches: every resource, and nothing else."""
        return f"{self.root}resources/"

    @property
    def leader(self) -> str:
        return f"{self.root}leader"

    @property
    def epoch(self) -> str:
        return f"{self.root}epoch"

    def etcd_key(self, key: ResourceKey) -> str:
        return f"{self.resources}{key.kind}/{key.namespace or CLUSTER_SCOPE}/{key.name}"

    def kind_prefix(self, kind: str, namespace: str = "") -> str:
        return f"{self.resources}{kind}/" + (f"{namespace}/" if namespace else "")

    def resource_key(self, etcd: str) -> ResourceKey | None:
        """The resource key an etcd key names, or None for a key outside this cluster's layout."""
        if not etcd.startswith(self.resources):
            return None
        parts = etcd[len(self.resources) :].split("/")
        if len(parts) != 3 or parts[0] not in KINDS or not parts[2]:
            return None
        return ResourceKey(parts[0], "" if parts[1] == CLUSTER_SCOPE else parts[1], parts[2])


@dataclass(frozen=True, slots=True)
class InvalidEntry:
    """A stored value that is not a valid resource; the engine treats the key as absent."""

    key: str
    reason: str


def encode(resource: Resource) -> bytes:
    doc = to_document(resource)
    doc.get("metadata", {}).pop("resourceVersion", None)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode(layout: KeyLayout, etcd: str, value: bytes, mod_revision: int) -> Resource | InvalidEntry:
    """The resource stored under ``etcd`` (with resourceVersion set), or why it is not one.

    The verdict is `parse_resource`'s on the JSON document. Values are first validated straight
    from their bytes by their key's model (`_from_json`, about twice as fast: no Python document
    is built); anything that path does not accept as is — including every invalid value — gets
    the full check, which gives the verdict and the reason.
    """
    key = layout.resource_key(etcd)
    if key is None:
        return InvalidEntry(etcd, f"key is outside the resource layout {layout.resources}")
    if len(value) > MAX_VALUE_BYTES:
        return InvalidEntry(etcd, f"value is {len(value)} bytes, over the {MAX_VALUE_BYTES}-byte limit")
    fast = _from_json(key, value, mod_revision)
    return fast if fast is not None else _from_document(key, etcd, value, mod_revision)


def _from_json(key: ResourceKey, value: bytes, mod_revision: int) -> Resource | None:
    """The resource, validated from the raw bytes by the model of the key's kind; None when that
    model refuses it or the result needs `parse_resource`'s adjustments (a namespace to default
    or refuse, a key to disagree with), so the full check decides.

    Equivalent to `_from_document` whenever it returns a resource: in strict mode pydantic applies
    the same rules to JSON as to the parsed document for every type the models use (str, int,
    float, bool, None, lists, dicts, literals, nested models; no dates, tuples, sets or enums,
    which strict JSON mode would coerce), the kind's model only accepts the (apiVersion, kind)
    pairs that `canonical_kind` maps to that kind, and JSON this parser refuses but `json.loads`
    accepts (UTF-16, a BOM, lone surrogates) just takes the full path.
    """
    model, namespaced = KINDS[key.kind]
    try:
        resource: Resource = model.model_validate_json(value)  # type: ignore[assignment]
    except ValidationError:
        return None
    if bool(resource.metadata.namespace) != namespaced or key_of(resource) != key:
        return None
    _stamp_revision(resource, mod_revision)
    return resource


def _stamp_revision(resource: Resource, mod_revision: int) -> None:
    """Set resourceVersion on a resource this module has just validated and not yet handed out.

    The models are frozen; `with_revision` (two `model_copy` calls) would cost a third of the
    validation, and nothing else can hold this instance yet. The result is field-for-field what
    validating a document with that resourceVersion gives (set fields included).
    """
    meta = resource.metadata
    object.__setattr__(meta, "resource_version", str(mod_revision))
    meta.__pydantic_fields_set__.add("resource_version")


def _from_document(key: ResourceKey, etcd: str, value: bytes, mod_revision: int) -> Resource | InvalidEntry:
    """`parse_resource` on the JSON document, with resourceVersion = ``mod_revision``."""
    try:
        doc: Any = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return InvalidEntry(etcd, f"value is not JSON: {err}")
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        return InvalidEntry(etcd, "value is not a resource document")
    doc["metadata"]["resourceVersion"] = str(mod_revision)
    try:
        resource = parse_resource(doc)
    except ValidationFailed as err:
        return InvalidEntry(etcd, str(err))
    if key_of(resource) != key:
        return InvalidEntry(etcd, f"document is {key_of(resource)}, key says {key}")
    return resource


def with_revision(resource: Resource, revision: int) -> Resource:
    meta = resource.metadata.model_copy(update={"resource_version": str(revision)})
    return resource.model_copy(update={"metadata": meta})


def expected_revision(resource: Resource) -> int | None:
    """The resourceVersion a write must match, if the document names one."""
    rv = resource.metadata.resource_version
    if rv is None or rv == "":
        return None
    if not rv.isdigit():
        raise ValidationFailed([Problem("metadata.resourceVersion", f"{rv!r} is not a revision number")])
    return int(rv)


class ResourceStore:
    """Typed CRUD over one cluster's keys in a `KeyValueStore`; every write is a single compare-and-swap."""

    def __init__(self, store: KeyValueStore, layout: KeyLayout = KeyLayout()) -> None:
        self.kv = store
        self.layout = layout

    def decode(self, entry: Entry) -> Resource | InvalidEntry:
        return decode(self.layout, entry.key, entry.value, entry.mod_revision)

    async def create(self, resource: Resource) -> int:
        return await self.kv.create(self.layout.etcd_key(key_of(resource)), encode(resource))

    async def replace(self, resource: Resource) -> int:
        return await self.kv.replace(
            self.layout.etcd_key(key_of(resource)), encode(resource), expected_revision(resource)
        )

    async def apply(self, resource: Resource) -> tuple[int, str]:
        """Create or replace; returns (revision, "created" | "replaced" | "unchanged")."""
        etcd = self.layout.etcd_key(key_of(resource))
        current = await self.kv.get(etcd)
        value = encode(resource)
        expected = expected_revision(resource)
        if current is None:
            return await self.kv.create(etcd, value), "created"
        if expected is not None and expected != current.mod_revision:
            raise Conflict(etcd, expected, current.mod_revision)
        if current.value == value:
            return current.mod_revision, "unchanged"
        return await self.kv.replace(etcd, value, current.mod_revision), "replaced"

    async def delete(self, key: ResourceKey, expected: int | None = None) -> int:
        return await self.kv.delete(self.layout.etcd_key(key), expected)

    async def get(self, key: ResourceKey) -> Resource | InvalidEntry | None:
        entry = await self.kv.get(self.layout.etcd_key(key))
        return None if entry is None else self.decode(entry)

    async def list(self, kind: str, namespace: str = "") -> tuple[list[Resource | InvalidEntry], int]:
        entries, revision = await self.kv.list(self.layout.kind_prefix(kind, namespace))
        return [self.decode(e) for e in entries], revision
