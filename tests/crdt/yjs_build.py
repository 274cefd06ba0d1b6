"""Hand-built Yjs v1 updates (lib0 encoding), for content no honest encoder writes."""

from __future__ import annotations

from secsync.crdt import yjs_format as f

CLIENT = 12345


def var_uint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def var_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return var_uint(len(raw)) + raw


def root_item(kind: int, content: bytes, root: str = "a", key: str | None = None) -> bytes:
    """A struct in the root type ``root`` (in its map entry ``key``, if given)."""
    info = kind | (f.HAS_PARENT_SUB if key is not None else 0)
    sub = var_string(key) if key is not None else b""
    return bytes([info]) + var_uint(1) + var_string(root) + sub + content


def update(
    *structs: bytes, client: int = CLIENT, clock: int = 0, delete_set: bytes = b"\x00"
) -> bytes:
    """One client section holding ``structs``, then ``delete_set`` (empty by default)."""
    return (
        var_uint(1)
        + var_uint(len(structs))
        + var_uint(client)
        + var_uint(clock)
        + (b"".join(structs) + delete_set)
    )


def nested_any(depth: int) -> bytes:
    """An ``Any`` content holding one array nested ``depth`` deep (two bytes a level)."""
    return var_uint(1) + bytes([f.ANY_ARRAY, 1]) * (depth - 1) + bytes([f.ANY_ARRAY, 0])


def deep_any_update(depth: int) -> bytes:
    return update(root_item(f.ANY, nested_any(depth)))


def deep_embed_update(depth: int) -> bytes:
    return update(root_item(f.EMBED, var_string("[" * depth + "]" * depth)))


def type_chain_update(depth: int) -> bytes:
    """Arrays nested in arrays, ``depth`` deep, each placed in the previous one by its ID."""
    structs = [root_item(f.TYPE, bytes([f.TYPE_ARRAY]))]
    for clock in range(depth - 1):
        parent = var_uint(0) + var_uint(CLIENT) + var_uint(clock)
        structs.append(bytes([f.TYPE]) + parent + bytes([f.TYPE_ARRAY]))
    return update(*structs)


def unmerged_run(count: int, kind: int) -> bytes:
    """``count`` one-value items, each continuing the one before, as no encoder writes them."""
    value = var_string("x") if kind == f.STRING else var_uint(1) + bytes([f.ANY_NULL])
    structs = [root_item(kind, value)]
    for clock in range(count - 1):
        structs.append(bytes([f.HAS_ORIGIN | kind]) + var_uint(CLIENT) + var_uint(clock) + value)
    return update(*structs)
