"""Resources on the key/value store: the etcd key layout, the value codec and CAS writes.

Owns the mapping between a `Resource` and its etcd key and bytes, and typed create / replace /
apply / delete / get / list on top of `iokit.store.KeyValueStore`. It does not own validation
rules (`policycore.model`) or watching (`iokit.syncer` + `controller.engine`).

Key layout (documented in ARCHITECTURE.md)::

    /kaliko/v1/resources/<Kind>/<namespace or "_">/<name>   JSON document, no resourceVersion
    /kaliko/v1/leader                                     leader's id, under its lease
    /kaliko/v1/epoch                                      last epoch taken by a leader

``metadata.resourceVersion`` is the entry's mod_revision; it is added on read and never stored.
A value that is not a valid resource for its key (bad JSON, wrong schema, too big, key and
document disagree) decodes to `InvalidEntry`, so the engine treats it as absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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

RESOURCE_PREFIX = "/kaliko/v1/resources/"
LEADER_KEY = "/kaliko/v1/leader"
EPOCH_KEY = "/kaliko/v1/epoch"
MAX_VALUE_BYTES = 512 * 1024
CLUSTER_SCOPE = "_"


def etcd_key(key: ResourceKey) -> str:
    return f"{RESOURCE_PREFIX}{key.kind}/{key.namespace or CLUSTER_SCOPE}/{key.name}"


def kind_prefix(kind: str, namespace: str = "") -> str:
    return f"{RESOURCE_PREFIX}{kind}/" + (f"{namespace}/" if namespace else "")


def resource_key(etcd: str) -> ResourceKey | None:
    """The resource key an etcd key names, or None for a key outside the layout."""
    if not etcd.startswith(RESOURCE_PREFIX):
        return None
    parts = etcd[len(RESOURCE_PREFIX) :].split("/")
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


def decode(etcd: str, value: bytes, mod_revision: int) -> Resource | InvalidEntry:
    """The resource stored under ``etcd`` (with resourceVersion set), or why it is not one."""
    key = resource_key(etcd)
    if key is None:
        return InvalidEntry(etcd, "key is outside the resource layout")
    if len(value) > MAX_VALUE_BYTES:
        return InvalidEntry(etcd, f"value is {len(value)} bytes, over the {MAX_VALUE_BYTES}-byte limit")
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
    """Typed CRUD over a `KeyValueStore`; every write is a single compare-and-swap."""

    def __init__(self, store: KeyValueStore) -> None:
        self.kv = store

    async def create(self, resource: Resource) -> int:
        return await self.kv.create(etcd_key(key_of(resource)), encode(resource))

    async def replace(self, resource: Resource) -> int:
        return await self.kv.replace(
            etcd_key(key_of(resource)), encode(resource), expected_revision(resource)
        )

    async def apply(self, resource: Resource) -> tuple[int, str]:
        """Create or replace; returns (revision, "created" | "replaced" | "unchanged")."""
        etcd = etcd_key(key_of(resource))
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
        return await self.kv.delete(etcd_key(key), expected)

    async def get(self, key: ResourceKey) -> Resource | InvalidEntry | None:
        entry = await self.kv.get(etcd_key(key))
        return None if entry is None else decode(entry.key, entry.value, entry.mod_revision)

    async def list(self, kind: str, namespace: str = "") -> tuple[list[Resource | InvalidEntry], int]:
        entries, revision = await self.kv.list(kind_prefix(kind, namespace))
        return [_decode_entry(e) for e in entries], revision


def _decode_entry(entry: Entry) -> Resource | InvalidEntry:
    return decode(entry.key, entry.value, entry.mod_revision)
