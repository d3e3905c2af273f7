"""Stored values on the wire: how the broker's stored bytes are read, and how a kv_scan item travels.

The broker stores a value as msgpack, zlib-compressed behind :data:`ZMARK` when large
(services/broker/schema.py writes them). A kv_scan page is most of the broker's read traffic, and decoding
every stored record there only to encode it again for the reply cost more than the scan itself. So a
kv_scan item travels as the stored bytes, in a msgpack extension (code :data:`STORED_ITEM`): 2 bytes of key
length (big-endian), the key (UTF-8), the stored record ``{"v": version, "value": value, ...}``;
:func:`shared.protocol.decode_reply` turns it into ``{"key", "version", "value"}`` with :func:`reply_ext`.
The reader, not the broker, inflates and decodes (docs/wire.md § Stored values).
"""
from __future__ import annotations

import zlib
from typing import Any

import msgpack

ZMARK = b"\xc1z"     # 0xC1 is never used by msgpack: no plain value starts with it
STORED_ITEM = 1      # the msgpack extension code of a passed-through kv item


def decode_stored(raw: bytes | memoryview) -> Any:
    """A value as the broker stores it: msgpack, or ``ZMARK`` + zlib-compressed msgpack."""
    if raw[:2] == ZMARK:
        raw = zlib.decompress(bytes(raw[2:]))
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


HEAD = 64   # bytes of a record's msgpack that surely hold its ``v`` (map header, "v", a 64-bit integer)


def stored_version(raw: bytes | memoryview) -> int:
    """The ``v`` of a stored kv record ``{"v": version, "value": ..., ...}`` without decoding the value.

    The broker writes ``v`` as the record's first key (msgpack keeps a map's order), so the first
    :data:`HEAD` bytes hold it; a compressed record is inflated only that far. A record laid out otherwise
    is decoded whole: slower, never wrong. This is what makes a versions-only ``kv_scan`` cheap: the
    reader learns which records changed without anyone inflating the others."""
    if raw[:2] == ZMARK:
        head = zlib.decompressobj().decompress(raw[2:], HEAD)
    else:
        head = bytes(raw[:HEAD])
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(head)
    try:
        if unpacker.read_map_header() and unpacker.unpack() == "v":
            version = unpacker.unpack()
            if isinstance(version, int) and not isinstance(version, bool):
                return version
    except (msgpack.OutOfData, msgpack.UnpackException, ValueError):
        pass
    return int(decode_stored(raw)["v"])


def kv_item(key: str, stored: bytes) -> msgpack.ExtType:
    """The wire form of one kv_scan item: the stored record, not decoded (see above)."""
    k = key.encode()
    return msgpack.ExtType(STORED_ITEM, len(k).to_bytes(2, "big") + k + stored)


def reply_ext(code: int, data: bytes) -> Any:
    """The msgpack ``ext_hook`` of a reply: a :func:`kv_item` back into its item map."""
    if code != STORED_ITEM:
        raise ValueError(f"unknown msgpack extension {code}")
    n = int.from_bytes(data[:2], "big")
    record = decode_stored(data[2 + n:])
    return {"key": data[2:2 + n].decode(), "version": record["v"], "value": record["value"]}
