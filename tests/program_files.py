"""Helpers for tests of program files: read and rewrite a program file's header and tensors."""
from __future__ import annotations

import hashlib
import json
import struct


def split(raw: bytes):
    """(safetensors table dict, data bytes) of a program file's bytes."""
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def header_of(raw: bytes) -> dict:
    return json.loads(split(raw)[0]["__metadata__"]["flightllm"])


def with_header(raw: bytes, header, redigest: bool = True, text: str | None = None) -> bytes:
    """The file with its FlightLLM header replaced (and its digest recomputed unless told not to):
    what a hostile or buggy writer could produce."""
    table, data = split(raw)
    text = json.dumps(header, sort_keys=True) if text is None else text
    table["__metadata__"]["flightllm"] = text
    if redigest:
        table["__metadata__"]["flightllm.sha256"] = hashlib.sha256(text.encode()).hexdigest()
    head = json.dumps(table).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + data
