"""Hypothesis strategies for hostile inputs: raw bytes, mutated genuine messages, and
structurally plausible msgpack / JSON values that reach past the first checks of a decoder."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import msgpack
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from secsync.protocol import crypto, sealing, wire
from secsync.protocol.ephemeral import EphemeralPlaintext
from secsync.protocol.messages import Message
from tests.factories import DOC_ID, KEY, ephemeral_public, make_snapshot, make_update, yjs_change


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,  # the per-input bound is enforced by the ``inputs`` fixture
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )


@cache
def genuine_messages() -> tuple[Message, ...]:
    """A snapshot, a child snapshot with clocks and extras, an update, an ephemeral message."""
    signer = crypto.SigningKeyPair.generate()
    base, _ = yjs_change("base")
    change, _ = yjs_change("!", at=4, base=base)
    root = make_snapshot(signer, base)
    child = make_snapshot(signer, base, parent=root, clocks={signer.public_key: 3})
    update = make_update(signer, root, 0, [change])
    plaintext = EphemeralPlaintext(4, bytes(24), 5, b"\x83\xa1c\x01\xa1s\xc0\xa1y\xc0").encode()
    ephemeral = sealing.seal(ephemeral_public(signer), plaintext, KEY, signer)
    return (root, child, update, ephemeral)


@cache
def genuine_encodings() -> tuple[bytes, ...]:
    out = []
    for message in genuine_messages():
        out.append(wire.encode(message, include_doc_id=True))
        out.append(wire.encode(message, include_doc_id=False))
    return tuple(out)


@st.composite
def mutated(draw: st.DrawFn, originals: st.SearchStrategy[bytes]) -> bytes:
    """A genuine encoding with a few random edits: bit flips, cuts, inserts, splices."""
    data = bytearray(draw(originals))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "overwrite", "dup", "byte"]))
        if not data:
            data += draw(st.binary(min_size=1, max_size=8))
            continue
        at = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[at] = draw(
                st.sampled_from(
                    [
                        0x00,
                        0x7F,
                        0x80,
                        0xC0,
                        0xC1,
                        0xC4,
                        0xC6,
                        0xCF,
                        0xD3,
                        0xDC,
                        0xDD,
                        0xDE,
                        0xDF,
                        0xFF,
                        0x90,
                        0x9A,
                        0x9C,
                    ]
                )
            )
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at : at + len(chunk)] = chunk
        else:
            end = min(len(data), at + draw(st.integers(1, 64)))
            data[at:at] = data[at:end]
    return bytes(data)


def genuine_or_mutated() -> st.SearchStrategy[bytes]:
    return mutated(st.sampled_from(genuine_encodings()))


# --- structured values ----------------------------------------------------------------------

SIZES = [0, 1, 23, 24, 25, 31, 32, 33, 47, 48, 63, 64, 65]
scalars = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            False,
            0,
            1,
            2,
            3,
            91,
            -1,
            2**53 - 1,
            2**53,
            2**63 - 1,
            -(2**63),
            2**64 - 1,
            0.5,
            float("nan"),
            "",
            "docId",
            "x" * 40,
        ]
    ),
    st.integers(-(2**64), 2**64 - 1),
    st.text(max_size=12),
    st.binary(max_size=70),
    st.sampled_from(SIZES).map(bytes),
)
msgpack_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.binary(max_size=33)), children, max_size=3
        ),
    ),
    max_leaves=6,
)


@st.composite
def wire_like(draw: st.DrawFn) -> bytes:
    """A msgpack array shaped like a message: plausible version and kind, random fields."""
    size = draw(st.sampled_from([8, 10, 12, draw(st.integers(0, 14))]))
    head = [
        draw(st.sampled_from([1, 1, 1, 0, 2, True, "1", None, 1.0])),
        draw(st.sampled_from([1, 2, 3, 1, 2, 3, 0, 4, False])),
    ]
    genuine = draw(st.sampled_from(genuine_messages()))
    template = msgpack.unpackb(wire.encode(genuine), raw=False)
    fields = [template[i] if i < len(template) else None for i in range(2, size)]
    for _ in range(draw(st.integers(1, 3))):  # a few fields replaced by random values
        if fields:
            fields[draw(st.integers(0, len(fields) - 1))] = draw(msgpack_values)
    try:
        return msgpack.packb(head + fields, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return b"\x90"


json_scalars = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            False,
            0,
            1,
            -1,
            2**53 - 1,
            2**53,
            2**60,
            0.5,
            "",
            "AAAA",
            "A" * 32,
            "A" * 43,
            "=",
            "a+b/",
            "\u0000",
            "\ud800",
            "k_CZR7BveaeM7FOc0TYtEtTtTi0ElwG9XrDVLxb9tR0",
        ]
    ),
    st.integers(-(2**60), 2**60),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
FIELD_NAMES = [
    "nonce",
    "ciphertext",
    "signature",
    "publicData",
    "type",
    "additionalServerData",
    "docId",
    "pubKey",
    "snapshotId",
    "parentSnapshotId",
    "parentSnapshotProof",
    "parentSnapshotUpdateClocks",
    "refSnapshotId",
    "clock",
    "keyId",
]


@cache
def genuine_json() -> tuple[dict[str, Any], ...]:
    return tuple(json.loads(wire.to_json(m)) for m in genuine_messages())


@st.composite
def json_message_like(draw: st.DrawFn) -> Any:
    """A genuine JSON message with random edits, or a random object with the right names."""
    if draw(st.booleans()):
        obj = json.loads(json.dumps(draw(st.sampled_from(genuine_json()))))
        for _ in range(draw(st.integers(1, 3))):
            target = (
                obj
                if draw(st.booleans()) or not isinstance(obj.get("publicData"), dict)
                else obj["publicData"]
            )
            name = draw(st.sampled_from(FIELD_NAMES))
            if draw(st.integers(0, 3)) == 0:
                target.pop(name, None)
            else:
                target[name] = draw(json_values)
        return obj
    return draw(
        st.one_of(
            json_values,
            st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=8),
            st.fixed_dictionaries(
                {
                    "nonce": json_values,
                    "ciphertext": json_values,
                    "signature": json_values,
                    "publicData": st.dictionaries(st.sampled_from(FIELD_NAMES), json_values),
                }
            ),
        )
    )


def plaintext_like() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda t, s, c, p: EphemeralPlaintext(t, s, c, p).encode(),
            st.integers(0, 255),
            st.binary(min_size=24, max_size=24),
            st.integers(0, 2**32 - 1),
            st.binary(max_size=64),
        ),
    )


def doc_ids() -> st.SearchStrategy[str | None]:
    return st.sampled_from([None, DOC_ID, "other", ""])
