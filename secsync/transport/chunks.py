"""Splitting a payload into parts and putting it back together: the pure rules live in
:mod:`secsync.protocol.stream_parts` (the stream binding reassembles what it reads); this
name stays for the transport's callers."""

from secsync.protocol.stream_parts import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PARTS,
    PART_HEADER,
    PARTS_HEADER,
    Reassembler,
    part_headers,
    split,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PARTS",
    "PARTS_HEADER",
    "PART_HEADER",
    "Reassembler",
    "part_headers",
    "split",
]
