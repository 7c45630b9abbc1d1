"""Admin writes: apply, create, replace, delete and label as all-or-nothing batches, or dry runs.

Owns planning a batch (read every current entry, decide each outcome, check every precondition),
then either writing it (one compare-and-swap per resource, against exactly the entry the plan
read) or, for a dry run, asking the engine what each node would receive. It does not own input
checks (`admin_input`), the gRPC mapping (`admin`) or compiling (`Engine`).

::

    resources ──▶ plan: kv.get each ──▶ outcome per resource ──▶ every precondition ok?
                                                                   │ no: AdminError, nothing written
                          dry run: engine.dry_run(changes) ◀───────┤
                                    write: create / replace / delete (CAS on the planned entry)

Invariants: a batch that fails a check writes nothing; outcomes are ``created``, ``replaced``,
``unchanged`` (no write: the stored bytes are identical), ``deleted`` and ``absent`` (delete with
skip_not_exists); a store error during the write phase (only a concurrent writer or an outage
can cause one) is reported with how many resources were written before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import grpc

from controller.admin_input import REQUEST, AdminError, BatchProblem, invalid
from controller.engine import Engine
from controller.resource_store import InvalidEntry, ResourceStore, encode, expected_revision, with_revision
from iokit.store import AlreadyExists, Conflict, Entry, NotFound, StoreError, StoreUnavailable
from policycore.diff import Op
from policycore.model import (
    Resource,
    ResourceKey,
    ValidationFailed,
    key_of,
    parse_resource,
    to_document,
)

Mode = Literal["apply", "create", "replace"]
CHANGING = ("created", "replaced", "deleted")


@dataclass(frozen=True, slots=True)
class Written:
    """One resource's result: its key, the revision it is at, the outcome and its document."""

    key: ResourceKey
    revision: int
    outcome: str
    document: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class BatchResult:
    results: list[Written]
    revision: int
    dry_run_diffs: dict[str, tuple[Op, ...]]


@dataclass(frozen=True, slots=True)
class _Step:
    key: ResourceKey
    resource: Resource | None  # None: delete
    current: Entry | None
    outcome: str


def _stored_document(resources: ResourceStore, entry: Entry) -> dict[str, Any] | None:
    decoded = resources.decode(entry)
    return None if isinstance(decoded, InvalidEntry) else to_document(decoded)


def _conflict(index: int, key: ResourceKey, expected: int, current: Entry | None) -> BatchProblem:
    stored = f"the stored one is at {current.mod_revision}" if current else "it no longer exists"
    reason = f"{key}: resourceVersion {expected} is stale ({stored}); read it again"
    return BatchProblem(index, "metadata.resourceVersion", reason)


class WriteService:
    """Batch writes over one cluster's resource keys; dry runs ask the given engine."""

    def __init__(self, resources: ResourceStore) -> None:
        self.resources = resources
        self.kv = resources.kv
        self.layout = resources.layout

    async def _entries(self, keys: Sequence[ResourceKey]) -> list[Entry | None]:
        return [await self.kv.get(self.layout.etcd_key(key)) for key in keys]

    async def write(
        self, resources: Sequence[Resource], mode: Mode, engine: Engine, *, dry_run: bool
    ) -> BatchResult:
        """Apply, create or replace every resource, or none (see the module docstring)."""
        entries = await self._entries([key_of(r) for r in resources])
        steps: list[_Step] = []
        invalid_problems: list[BatchProblem] = []
        refused: list[tuple[grpc.StatusCode, BatchProblem]] = []
        for index, (resource, current) in enumerate(zip(resources, entries, strict=True)):
            key = key_of(resource)
            try:
                expected = expected_revision(resource)
            except ValidationFailed as err:
                invalid_problems += [BatchProblem(index, p.path, p.reason) for p in err.problems]
                continue
            if mode == "create" and current is not None:
                refused.append(
                    (grpc.StatusCode.ALREADY_EXISTS, BatchProblem(index, "", f"{key} already exists"))
                )
            elif mode == "replace" and current is None:
                refused.append((grpc.StatusCode.NOT_FOUND, BatchProblem(index, "", f"{key} does not exist")))
            elif (
                mode != "create"
                and expected is not None
                and (current is None or current.mod_revision != expected)
            ):
                refused.append((grpc.StatusCode.ABORTED, _conflict(index, key, expected, current)))
            unchanged = current is not None and current.value == encode(resource)
            outcome = "created" if current is None else "unchanged" if unchanged else "replaced"
            steps.append(_Step(key, resource, current, outcome))
        _raise_if_refused(invalid_problems, refused)
        return await self._finish(steps, engine, dry_run=dry_run)

    async def delete(
        self,
        targets: Sequence[tuple[ResourceKey, int | None]],
        engine: Engine,
        *,
        dry_run: bool,
        skip_not_exists: bool,
        collection: str = "refs",
    ) -> BatchResult:
        """Delete every (key, expected resourceVersion) target, or none."""
        entries = await self._entries([key for key, _ in targets])
        steps: list[_Step] = []
        refused: list[tuple[grpc.StatusCode, BatchProblem]] = []
        for index, ((key, expected), current) in enumerate(zip(targets, entries, strict=True)):
            if current is None and not skip_not_exists:
                problem = BatchProblem(index, "", f"{key} does not exist", collection)
                refused.append((grpc.StatusCode.NOT_FOUND, problem))
            elif expected is not None and current is not None and current.mod_revision != expected:
                refused.append((grpc.StatusCode.ABORTED, _conflict(index, key, expected, current)))
            steps.append(_Step(key, None, current, "absent" if current is None else "deleted"))
        _raise_if_refused([], refused)
        return await self._finish(steps, engine, dry_run=dry_run)

    async def label(
        self,
        key: ResourceKey,
        set_labels: dict[str, str],
        remove: Sequence[str],
        overwrite: bool,
        engine: Engine,
    ) -> BatchResult:
        """Set and remove labels of one resource (compare-and-swap on the entry read)."""
        current = await self.kv.get(self.layout.etcd_key(key))
        if current is None:
            raise AdminError(grpc.StatusCode.NOT_FOUND, f"{key} does not exist")
        decoded = self.resources.decode(current)
        if isinstance(decoded, InvalidEntry):
            message = f"{key}: the stored value is not a valid resource ({decoded.reason}); replace it"
            raise AdminError(grpc.StatusCode.FAILED_PRECONDITION, message)
        document = to_document(decoded)
        labels: dict[str, str] = dict(document["metadata"].get("labels", {}))
        taken = [k for k, v in set_labels.items() if k in labels and labels[k] != v]
        document["metadata"]["labels"] = {
            k: v for k, v in {**labels, **set_labels}.items() if k not in remove
        }
        try:
            resource = parse_resource(document)
        except ValidationFailed as err:
            raise invalid([BatchProblem(REQUEST, p.path, p.reason) for p in err.problems], "labels") from None
        if taken and not overwrite:
            problems = [
                BatchProblem(REQUEST, f"metadata.labels.{k}", f"already has the value {labels[k]!r}")
                for k in taken
            ]
            message = f"{key}: label key(s) {', '.join(taken)} already present; use overwrite (--overwrite)"
            raise AdminError(grpc.StatusCode.FAILED_PRECONDITION, message, problems)
        outcome = "unchanged" if encode(resource) == current.value else "replaced"
        return await self._finish([_Step(key, resource, current, outcome)], engine, dry_run=False)

    async def _finish(self, steps: list[_Step], engine: Engine, *, dry_run: bool) -> BatchResult:
        if dry_run:
            changes = [(s.key, s.resource) for s in steps if s.outcome in CHANGING]
            diffs = {node: ops for node, ops in engine.dry_run(changes).items() if ops}
            return BatchResult([_dry_result(self.resources, s) for s in steps], engine.revision, diffs)
        results: list[Written] = []
        for step in steps:
            try:
                results.append(await self._commit(step))
            except StoreError as err:
                raise _partial(err, len(results), len(steps)) from err
        revision = max((r.revision for r in results), default=0)
        return BatchResult(results, revision, {})

    async def _commit(self, step: _Step) -> Written:
        etcd, current = self.layout.etcd_key(step.key), step.current
        if step.outcome == "absent":
            return Written(step.key, 0, "absent", None)
        assert current is not None or step.outcome == "created"
        if step.resource is None:
            assert current is not None
            revision = await self.kv.delete(etcd, current.mod_revision)
            return Written(step.key, revision, "deleted", _stored_document(self.resources, current))
        if step.outcome == "unchanged":
            assert current is not None
            return Written(
                step.key, current.mod_revision, "unchanged", _stored_document(self.resources, current)
            )
        value = encode(step.resource)
        if current is None:
            revision = await self.kv.create(etcd, value)
        else:
            revision = await self.kv.replace(etcd, value, current.mod_revision)
        return Written(step.key, revision, step.outcome, to_document(with_revision(step.resource, revision)))


def _dry_result(resources: ResourceStore, step: _Step) -> Written:
    document: dict[str, Any] | None
    if step.resource is not None:
        document = to_document(step.resource)
        document["metadata"].pop("resourceVersion", None)
    else:
        document = _stored_document(resources, step.current) if step.current is not None else None
    revision = step.current.mod_revision if step.current is not None else 0
    return Written(step.key, revision, step.outcome, document)


def _raise_if_refused(
    invalid_problems: list[BatchProblem], refused: list[tuple[grpc.StatusCode, BatchProblem]]
) -> None:
    if invalid_problems:
        raise invalid(invalid_problems, "documents")
    if refused:
        code = refused[0][0]
        problems = [problem for _, problem in refused]
        what = {
            grpc.StatusCode.ALREADY_EXISTS: "already exist",
            grpc.StatusCode.NOT_FOUND: "do not exist",
            grpc.StatusCode.ABORTED: "changed since they were read",
        }
        counts = {k: sum(1 for c, _ in refused if c is k) for k in what}
        summary = "; ".join(f"{n} {what[k]}" for k, n in counts.items() if n)
        raise AdminError(code, f"nothing was written: {summary}", problems)


def _partial(err: StoreError, written: int, total: int) -> AdminError:
    code = grpc.StatusCode.UNAVAILABLE if isinstance(err, StoreUnavailable) else grpc.StatusCode.ABORTED
    if isinstance(err, AlreadyExists | NotFound | Conflict):
        cause = f"changed concurrently: {err}"
    else:
        cause = f"datastore error: {err}"
    return AdminError(code, f"{cause}; partial success: wrote the first {written} of {total} resource(s)")
