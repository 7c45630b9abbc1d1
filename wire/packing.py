"""The byte envelope of a `NodeMessage`: which bodies travel compressed, and inflating them safely.

Owns `MalformedMessage`, parsing bytes into a `NodeMessage`, the compression rule and the
decompression guard. It does not own what the fields mean (`wire.codec` converts ops and the
tier-list table) or transport (`iokit`).

A message's *header* is its node and stream position (fields 1-5); its *body* is its `ops` and
`tier_lists` (fields 6 and 7). A body of at least `COMPRESS_FROM` bytes travels as `zlib_body`
(zlib, level `LEVEL`) when that is smaller; a smaller body — a pod's ip-set delta, the common
case — travels as it is, so its cost and latency do not change. Protobuf's encoding of a message
is the concatenation of its fields' encodings, so an uncompressed message is the header's bytes
followed by the body's, and a compressed body inflates to bytes that parse as a `NodeMessage`
holding only fields 6 and 7.

Invariants: `inflate` never produces more than `MAX_BODY` bytes, and every way bytes can be wrong
(not protobuf, a corrupt or truncated stream, trailing bytes, an oversized body, a body with
header fields or another `zlib_body` in it) raises `MalformedMessage` with the reason.
"""

from __future__ import annotations

import zlib

from google.protobuf.message import DecodeError

from wire.gen.kaliko.v1 import node_stream_pb2 as pb

COMPRESS_FROM = 256
"""Bodies smaller than this many bytes are never compressed (see proto/README.md for the numbers)."""
LEVEL = 1
"""zlib level: ~4x faster than the default 6 on a snapshot and within 10-30 % of its size."""
MAX_BODY = 64 * 1024 * 1024
"""The most bytes a `zlib_body` may inflate to (a node snapshot of 2,500 endpoints is ~1.3 MB)."""
_BODY_FIELDS = frozenset({"ops", "tier_lists"})


class MalformedMessage(ValueError):
    """Bytes that are not a valid NodeMessage (bad protobuf or zlib, unknown op, bad enum value,
    a reference outside the message's table)."""


def parse(data: bytes, what: str = "message") -> pb.NodeMessage:
    """``data`` parsed as a `NodeMessage`; ``what`` names it in the error."""
    msg = pb.NodeMessage()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as err:
        raise MalformedMessage(f"{what}: not a NodeMessage: {err}") from None
    return msg


def deflate(body: bytes) -> bytes | None:
    """``body`` compressed, or None when it is below `COMPRESS_FROM` or would not shrink."""
    if len(body) < COMPRESS_FROM:
        return None
    stream = zlib.compressobj(LEVEL)
    packed = stream.compress(body) + stream.flush()
    return packed if len(packed) < len(body) else None


def inflate(packed: bytes) -> pb.NodeMessage:
    """The body a `zlib_body` carries, as a `NodeMessage` holding only ``ops`` and ``tier_lists``."""
    stream = zlib.decompressobj()
    try:
        raw = stream.decompress(packed, MAX_BODY + 1)
    except zlib.error as err:
        raise MalformedMessage(f"zlib_body: corrupt compressed data ({err})") from None
    if len(raw) > MAX_BODY:
        raise MalformedMessage(f"zlib_body: inflates to more than {MAX_BODY} bytes")
    if not stream.eof:
        raise MalformedMessage("zlib_body: compressed data is truncated")
    if stream.unused_data:
        raise MalformedMessage(f"zlib_body: {len(stream.unused_data)} bytes after the compressed data")
    body = parse(raw, "zlib_body")
    extra = sorted({field.name for field, _ in body.ListFields()} - _BODY_FIELDS)
    if extra:
        raise MalformedMessage(f"zlib_body: may hold only ops and tier_lists, not {', '.join(extra)}")
    return body
