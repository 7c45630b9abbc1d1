"""The etcd adapter of the store contract, on aetcd (asyncio over grpc.aio).

Owns one aetcd client and the translation between `iokit.store` and etcd's v3 API: CAS writes are
single transactions (create: ``create_revision == 0``; replace/delete: the key exists and, when an
expected revision is given, ``mod_revision == expected``), lists are paginated range reads pinned to
the revision of their first page, watches are aetcd prefix watches. gRPC and aetcd errors become the
store's error tree (`Compacted`, `StoreUnavailable`, ...). It does not retry: the syncer and the
admin API decide what to do about an unavailable store.

Invariants: a paginated list is one consistent snapshot (every page read at the same revision; if
compaction overtakes it the list restarts); keys round-trip any bytes (UTF-8 with surrogateescape);
a watch generator always cancels its etcd watch when closed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import aetcd
import aetcd.exceptions as etcd_errors
from aetcd import rpc
from aetcd.rtypes import EventKind
from aetcd.utils import prefix_range_end

from iokit.store import (
    AlreadyExists,
    Compacted,
    Conflict,
    Entry,
    NotFound,
    StoreError,
    StoreUnavailable,
    WatchEvent,
    check_key,
)

_RETRIABLE_CODES = {
    rpc.StatusCode.UNAVAILABLE,
    rpc.StatusCode.DEADLINE_EXCEEDED,
    rpc.StatusCode.INTERNAL,
    rpc.StatusCode.CANCELLED,
    rpc.StatusCode.UNKNOWN,
    rpc.StatusCode.RESOURCE_EXHAUSTED,
}
_PERMANENT_AETCD_ERRORS = (
    etcd_errors.InvalidArgumentError,
    etcd_errors.PreconditionFailedError,
    etcd_errors.UnauthenticatedError,
)
_LIST_ATTEMPTS = 3
_Snapshot = tuple[list[Entry], int]


def _encode(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def _decode(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")


def _entry(kv: Any) -> Entry:
    return Entry(_decode(kv.key), bytes(kv.value), kv.mod_revision, kv.create_revision)


def _from_detail(detail: str) -> StoreError | ValueError | None:
    if "required revision has been compacted" in detail:
        return Compacted(0)
    if "required revision is a future revision" in detail:
        return ValueError(f"revision: {detail}")
    return None


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Turn gRPC/aetcd failures into the store's error tree."""
    try:
        yield
    except etcd_errors.RevisionCompactedError as error:
        raise Compacted(error.compacted_revision) from error
    except _PERMANENT_AETCD_ERRORS as error:
        raise StoreError(f"etcd refused the request: {error}") from error
    except etcd_errors.ClientError as error:
        mapped = _from_detail(str(error))
        if mapped is not None:
            raise mapped from error
        raise StoreUnavailable(f"etcd: {error}") from error
    except rpc.AioRpcError as error:
        mapped = _from_detail(error.details() or "")
        if mapped is not None:
            raise mapped from error
        if error.code() in _RETRIABLE_CODES:
            raise StoreUnavailable(f"etcd: {error.code().name}: {error.details()}") from error
        raise StoreError(f"etcd refused the request: {error.code().name}: {error.details()}") from error
    except (TimeoutError, OSError) as error:
        raise StoreUnavailable(f"etcd: {error!r}") from error


def _compare_create(key: bytes, revision: int) -> Any:
    return rpc.Compare(key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=revision)


def _compare_exists(key: bytes) -> Any:
    return rpc.Compare(key=key, target=rpc.Compare.CREATE, result=rpc.Compare.GREATER, create_revision=0)


def _compare_mod(key: bytes, revision: int) -> Any:
    return rpc.Compare(key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=revision)


def _put_op(key: bytes, value: bytes) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))


def _delete_op(key: bytes) -> Any:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def _get_op(key: bytes) -> Any:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key))


class EtcdStore:
    """A `KeyValueStore` on an etcd v3 cluster (one endpoint, plaintext gRPC)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 2379,
        *,
        timeout: float = 5.0,
        page_size: int = 1000,
        keepalive_s: float = 10.0,
    ) -> None:
        options = {
            "grpc.keepalive_time_ms": int(keepalive_s * 1000),
            "grpc.keepalive_timeout_ms": int(timeout * 1000),
            "grpc.max_receive_message_length": 64 * 1024 * 1024,
        }
        self._client = aetcd.Client(host, port, timeout=timeout, options=options)
        self._timeout = timeout
        self._page_size = page_size
        self._closed = False

    @classmethod
    def from_endpoint(cls, endpoint: str, **kwargs: Any) -> EtcdStore:
        """Build from ``"host:port"`` (as in ``KALIKO_ETCD``)."""
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"etcd endpoint: expected host:port, got {endpoint!r}")
        return cls(host, int(port), **kwargs)

    async def _kv(self) -> Any:
        if self._closed:
            raise StoreUnavailable("store closed")
        with _translated():
            await self._client.connect()
        return self._client.kvstub

    async def _txn(self, compare: list[Any], success: list[Any], failure: list[Any]) -> Any:
        kv = await self._kv()
        with _translated():
            return await kv.Txn(
                rpc.TxnRequest(compare=compare, success=success, failure=failure), timeout=self._timeout
            )

    def _explain_failure(self, key: str, expected: int | None, response: Any) -> StoreError:
        kvs = response.responses[0].response_range.kvs if response.responses else []
        if not kvs:
            return NotFound(key)
        return Conflict(key, expected if expected is not None else 0, kvs[0].mod_revision)

    async def create(self, key: str, value: bytes) -> int:
        check_key(key)
        k = _encode(key)
        response = await self._txn([_compare_create(k, 0)], [_put_op(k, value)], [])
        if not response.succeeded:
            raise AlreadyExists(key)
        return int(response.header.revision)

    async def replace(self, key: str, value: bytes, expected_revision: int | None = None) -> int:
        check_key(key)
        k = _encode(key)
        compare = [_compare_exists(k)]
        if expected_revision is not None:
            compare.append(_compare_mod(k, expected_revision))
        response = await self._txn(compare, [_put_op(k, value)], [_get_op(k)])
        if not response.succeeded:
            raise self._explain_failure(key, expected_revision, response)
        return int(response.header.revision)

    async def put(self, key: str, value: bytes) -> int:
        check_key(key)
        kv = await self._kv()
        with _translated():
            response = await kv.Put(rpc.PutRequest(key=_encode(key), value=value), timeout=self._timeout)
        return int(response.header.revision)

    async def delete(self, key: str, expected_revision: int | None = None) -> int:
        check_key(key)
        k = _encode(key)
        compare = [_compare_exists(k)]
        if expected_revision is not None:
            compare.append(_compare_mod(k, expected_revision))
        response = await self._txn(compare, [_delete_op(k)], [_get_op(k)])
        if not response.succeeded:
            raise self._explain_failure(key, expected_revision, response)
        return int(response.header.revision)

    async def get(self, key: str) -> Entry | None:
        check_key(key)
        kv = await self._kv()
        with _translated():
            response = await kv.Range(rpc.RangeRequest(key=_encode(key)), timeout=self._timeout)
        return _entry(response.kvs[0]) if response.kvs else None

    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        check_key(prefix, field="prefix")
        for _ in range(_LIST_ATTEMPTS - 1):
            with contextlib.suppress(Compacted):
                return await self._list_once(prefix)
        return await self._list_once(prefix)

    async def _list_once(self, prefix: str) -> _Snapshot:
        kv = await self._kv()
        start, end = _encode(prefix), prefix_range_end(_encode(prefix))
        entries: list[Entry] = []
        revision = 0
        while True:
            request = rpc.RangeRequest(key=start, range_end=end, limit=self._page_size, revision=revision)
            with _translated():
                response = await kv.Range(request, timeout=self._timeout)
            if revision == 0:
                revision = int(response.header.revision)
            entries.extend(_entry(item) for item in response.kvs)
            if not response.more or not response.kvs:
                return entries, revision
            start = bytes(response.kvs[-1].key) + b"\x00"

    async def watch(self, prefix: str, start_revision: int) -> AsyncGenerator[WatchEvent, None]:
        check_key(prefix, field="prefix")
        if start_revision < 1:
            raise ValueError(f"start_revision: must be >= 1, got {start_revision}")
        if self._closed:
            raise StoreUnavailable("store closed")
        with _translated():
            watch = await self._client.watch_prefix(_encode(prefix), start_revision=start_revision)
        try:
            events = aiter(watch)
            while True:
                try:
                    with _translated():
                        event = await anext(events)
                except StopAsyncIteration:
                    raise StoreUnavailable("etcd watch stream ended") from None
                deleted = event.kind == EventKind.DELETE
                value = None if deleted else bytes(event.kv.value)
                yield WatchEvent(_decode(event.kv.key), value, event.kv.mod_revision)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watch.cancel(), self._timeout)

    async def compact(self, revision: int) -> None:
        kv = await self._kv()
        try:
            with _translated():
                await kv.Compact(rpc.CompactionRequest(revision=revision), timeout=self._timeout)
        except Compacted as error:
            raise Compacted(revision) from error

    async def close(self) -> None:
        self._closed = True
        with _translated():
            await self._client.close()
