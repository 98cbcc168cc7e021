"""Frames between the app and a worker: a 4-byte big-endian length, then that many bytes of UTF-8 JSON."""

from __future__ import annotations

import json
import os
import select
import struct
import time

HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The other side closed the pipe, sent garbage, sent too much, or was too slow."""


def write_frame(fd: int, message: dict) -> None:
    data = json.dumps(message, ensure_ascii=False, allow_nan=False).encode()
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def read_frame(fd: int, *, max_bytes: int, deadline: float | None = None) -> dict:
    """One message; `deadline` is a time.monotonic() instant (None waits forever)."""
    (size,) = HEADER.unpack(_read_exact(fd, HEADER.size, deadline))
    if size > max_bytes:
        raise ProtocolError(f"frame of {size:,} bytes is over the {max_bytes:,}-byte limit")
    try:
        message = json.loads(_read_exact(fd, size, deadline))
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no answer before the deadline")
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise ProtocolError("pipe closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
