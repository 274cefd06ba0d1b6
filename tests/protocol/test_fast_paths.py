"""The hot paths against the general ones they stand in for: same bytes, same results, same errors.

* ``wire.decode`` reads canonical updates and ephemeral messages without msgpack; a
  ``bytearray`` of the same bytes always takes the general path (structure check, msgpack,
  re-encoding), so the two are compared input by input.
* ``deserialize_changes`` likewise reads a plain change list directly.
* ``crypto.Cipher`` (HMAC from precomputed pads, the AEAD straight into libsodium) against
  ``hmac.digest`` and PyNaCl's public AEAD binding.
* ``UpdatePublicData.aad_b64`` (cached tail) against canonical JSON of the public data.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

import msgpack
import nacl.bindings
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secsync.errors import SecsyncError
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.changes import deserialize_changes, serialize_changes
from secsync.protocol.encoding import b64encode, b64encode_ascii, canonical_json
from secsync.protocol.messages import (
    EphemeralMessage,
    EphemeralPublicData,
    Update,
    UpdatePublicData,
    trusted_ephemeral,
    trusted_update,
)
from tests.factories import DOC_ID, KEY
from tests.fuzz.strategies import fuzz_settings, genuine_or_mutated, mutated

SIGNER = crypto.SigningKeyPair.from_secret(bytes(range(32)))
REF = bytes(range(100, 124))
CLOCKS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**53 - 1]
DOC_IDS = [
    DOC_ID,
    "",
    "a" * 31,
    "a" * 32,
    "a" * 255,
    "a" * 256,
    "é" * 1024,  # 2048 UTF-8 bytes, str16
    "x" * 1024,
    'quote " back \\ tab \t nul \x00 é 😀',
]


def outcome(function: Any, data: Any, **kwargs: Any) -> tuple[Any, ...]:
    """The result, or the error's class and message, of ``function(data, ...)``."""
    try:
        return ("ok", function(data, **kwargs))
    except SecsyncError as exc:
        return ("error", type(exc), exc.message)


def same_decoding(data: bytes, doc_id: str | None = DOC_ID, max_bytes: int = 1 << 26) -> Any:
    """Decode ``data`` on the fast path (bytes) and on the general one (bytearray): equal."""
    fast = outcome(wire.decode, data, doc_id=doc_id, max_bytes=max_bytes)
    general = outcome(wire.decode, bytearray(data), doc_id=doc_id, max_bytes=max_bytes)
    assert fast == general
    return fast


def update(clock: int = 7, doc_id: str = DOC_ID, plaintext: bytes = b"x") -> Update:
    public = UpdatePublicData(
        doc_id=doc_id, pub_key=SIGNER.public_key, ref_snapshot_id=REF, clock=clock
    )
    return sealing.seal(public, plaintext, KEY, SIGNER)


def ephemeral(doc_id: str = DOC_ID, plaintext: bytes = b"x") -> EphemeralMessage:
    return sealing.seal(
        EphemeralPublicData(doc_id=doc_id, pub_key=SIGNER.public_key), plaintext, KEY, SIGNER
    )


# --- the native decoder -----------------------------------------------------------------------


@pytest.mark.parametrize("include_doc_id", [True, False])
@pytest.mark.parametrize("clock", CLOCKS)
def test_canonical_updates_take_the_fast_path_at_every_clock_width(
    clock: int, include_doc_id: bool
) -> None:
    message = update(clock)
    data = wire.encode(message, include_doc_id=include_doc_id)
    assert wire._decode_canonical(data, DOC_ID) == message
    assert same_decoding(data) == ("ok", message)


@pytest.mark.parametrize("doc_id", DOC_IDS)
def test_document_ids_of_every_string_width(doc_id: str) -> None:
    for message in (update(doc_id=doc_id), ephemeral(doc_id=doc_id)):
        data = wire.encode(message)
        assert wire._decode_canonical(data, None) == message
        assert same_decoding(data, None) == ("ok", message)
        assert same_decoding(data, "another document") == ("ok", message)


@pytest.mark.parametrize("size", [0, 1, 207, 208, 209, 65487, 65488, 70000])
def test_ciphertexts_of_every_bin_width(size: int) -> None:
    for message in (update(plaintext=os.urandom(size)), ephemeral(plaintext=os.urandom(size))):
        for include_doc_id in (True, False):
            data = wire.encode(message, include_doc_id=include_doc_id)
            assert wire._decode_canonical(data, DOC_ID) == message
            assert same_decoding(data) == ("ok", message)


def test_the_fast_path_builds_the_same_objects_as_the_constructors() -> None:
    message = update()
    public = message.public_data
    built = trusted_update(
        nonce=message.nonce,
        ciphertext=message.ciphertext,
        signature=message.signature,
        version=1,
        doc_id=public.doc_id,
        pub_key=public.pub_key,
        ref_snapshot_id=public.ref_snapshot_id,
        clock=public.clock,
    )
    assert built == message
    assert repr(built) == repr(message)
    assert built.public_data.extra is UpdatePublicData("d", b"", b"", 0).extra
    presence = ephemeral()
    assert (
        trusted_ephemeral(
            nonce=presence.nonce,
            ciphertext=presence.ciphertext,
            signature=presence.signature,
            version=1,
            doc_id=DOC_ID,
            pub_key=SIGNER.public_key,
        )
        == presence
    )


def _items(message: Update | EphemeralMessage, include_doc_id: bool = True) -> list[Any]:
    items: list[Any] = msgpack.unpackb(wire.encode(message, include_doc_id=include_doc_id))
    return items


def _non_canonical() -> list[tuple[str, bytes]]:
    """Encodings the fast path must leave to the general one (which refuses or accepts)."""
    up = update(300)
    data = wire.encode(up)
    eph = wire.encode(ephemeral())
    out = [
        ("clock as uint32", data.replace(b"\xcd\x01\x2c", b"\xce\x00\x00\x01\x2c", 1)),
        ("clock as uint64", data.replace(b"\xcd\x01\x2c", b"\xcf" + (300).to_bytes(8, "big"), 1)),
        ("clock as int16", data.replace(b"\xcd\x01\x2c", b"\xd1\x01\x2c", 1)),
        ("trailing byte", data + b"\x00"),
        ("truncated", data[:-1]),
        ("cut in the header", data[:40]),
        ("empty", b""),
        ("three bytes", data[:3]),
        ("version 2", b"\x9a\x02" + data[2:]),
        ("kind snapshot", b"\x9a\x01\x01" + data[3:]),
        ("eleven items", b"\x9b" + data[1:] + b"\xc0"),
        ("ephemeral trailing", eph + b"\xc0"),
        ("ephemeral cut", eph[:-10]),
    ]
    for name, position, value in [
        ("empty extras map", 6, {}),
        ("extras", 6, {"keyId": 1}),
        ("str docId", 2, DOC_ID),
        ("negative clock", 5, -1),
        ("bool clock", 5, True),
        ("float clock", 5, 1.5),
        ("clock above 2^53", 5, 2**53),
        ("str pubKey", 3, "k" * 32),
        ("short pubKey", 3, b"k" * 31),
        ("long refSnapshotId", 4, b"r" * 25),
        ("short nonce", 7, b"n" * 23),
        ("short ciphertext", 8, b"c" * 47),
        ("short signature", 9, b"s" * 63),
        ("docId too long", 2, "d" * 1025),
        ("docId int", 2, 5),
    ]:
        items = _items(up)
        items[position] = value
        out.append((name, msgpack.packb(items, use_bin_type=True)))
    short = wire.encode(update(300, doc_id="hello"))
    out.append(("docId as str8 below 32", short.replace(b"\xa5hello", b"\xd9\x05hello", 1)))
    out.append(
        ("docId as str16", data.replace(b"\xd9\x24", b"\xda\x00\x24", 1)),
    )
    ciphertext = up.ciphertext
    out.append(
        (
            "ciphertext as bin16",
            data.replace(
                b"\xc4" + bytes([len(ciphertext)]) + ciphertext,
                b"\xc5" + len(ciphertext).to_bytes(2, "big") + ciphertext,
                1,
            ),
        )
    )
    out.append(("invalid UTF-8 docId", data.replace(DOC_ID.encode()[:2], b"\xff\xfe", 1)))
    return out


@pytest.mark.parametrize(("name", "data"), _non_canonical())
def test_anything_else_is_decided_by_the_general_path(name: str, data: bytes) -> None:
    if wire._decode_canonical(data, DOC_ID) is None:
        same_decoding(data)
        same_decoding(data, None)
    else:  # the only encodings of their message: the general path accepts them as well
        assert same_decoding(data)[0] == "ok", name


def test_without_a_document_context_an_implicit_doc_id_is_refused_alike() -> None:
    data = wire.encode(update(), include_doc_id=False)
    assert wire._decode_canonical(data, None) is None
    assert same_decoding(data, None)[0] == "error"


def test_size_bound_applies_before_either_path() -> None:
    data = wire.encode(update())
    assert same_decoding(data, max_bytes=len(data) - 1)[1].__name__ == "MessageTooLargeError"


def _encodings() -> st.SearchStrategy[bytes]:
    messages = [update(c) for c in (0, 200, 70000, 2**40)] + [ephemeral()]
    originals = [
        wire.encode(m, include_doc_id=include)
        for m in [*messages, update(doc_id="é" * 40)]
        for include in (True, False)
    ]
    return mutated(st.sampled_from(originals))


@fuzz_settings(3000)
@given(data=st.one_of(_encodings(), genuine_or_mutated()), doc_id=st.sampled_from([DOC_ID, None]))
def test_fast_and_general_decoding_agree_on_mutated_messages(
    data: bytes, doc_id: str | None
) -> None:
    same_decoding(data, doc_id)


@fuzz_settings(1500)
@given(data=st.binary(max_size=300))
def test_fast_and_general_decoding_agree_on_random_bytes(data: bytes) -> None:
    same_decoding(b"\x9a\x01\x02" + data)
    same_decoding(b"\x98\x01\x03" + data)


# --- change lists ---------------------------------------------------------------------------


def same_changes(data: bytes, max_changes: int = 1_000_000) -> Any:
    fast = outcome(deserialize_changes, data, max_changes=max_changes)
    general = outcome(deserialize_changes, bytearray(data), max_changes=max_changes)
    assert fast == general
    return fast


@pytest.mark.parametrize(
    "changes",
    [[], [b""], [b"x"], [b"y" * 255], [b"z" * 256], [b"w" * 70000], [b"a", b"bb"] * 7, [b"c"] * 15],
)
def test_change_lists_read_directly_equal_msgpack(changes: list[bytes]) -> None:
    data = serialize_changes(changes)
    assert same_changes(data) == ("ok", changes)
    json_data = serialize_changes(changes, "secsync-json")
    assert same_changes(json_data) == ("ok", changes)


@pytest.mark.parametrize(
    "data",
    [
        b"\x91\xc5\x00\x01x",  # bin16 for one byte: accepted by both
        b"\x91\xc4\x02x",  # cut
        b"\x91\xc4\x01xy",  # trailing
        b"\x92\xc4\x01x",  # an item missing
        b"\x91\xa1x",  # str, not bin
        b"\x91\x91\xc4\x01x",  # nested
        b"\x9f" + b"\xc4\x00" * 15,
        b"\xdc\x00\x01\xc4\x01x",  # array16
        b"\x90",
        b"\x90\x00",
        b"\xc0",
        b"[",
    ],
)
def test_odd_change_lists_agree(data: bytes) -> None:
    same_changes(data)
    same_changes(data, max_changes=0)


@fuzz_settings(1500)
@given(
    data=mutated(
        st.sampled_from([serialize_changes([b"ab", b"c" * 300]), serialize_changes([b"x"])])
    ),
    max_changes=st.sampled_from([1_000_000, 1, 0]),
)
def test_fast_and_general_change_lists_agree_on_mutations(data: bytes, max_changes: int) -> None:
    same_changes(data, max_changes)


# --- the cipher and the AAD -------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 63, 64, 127, 128, 129, 1000, 100_000])
def test_cipher_tag_is_hmac_sha512_256(size: int) -> None:
    key = os.urandom(32)
    message = os.urandom(size)
    assert crypto.Cipher(key).tag(message) == hmac.digest(key, message, "sha512")[:32]


@pytest.mark.parametrize("size", [0, 1, 39, 5000])
def test_cipher_seals_and_opens_like_the_module_functions(size: int) -> None:
    key, nonce, plaintext = os.urandom(32), os.urandom(24), os.urandom(size)
    aad = b64encode(os.urandom(60))
    cipher = crypto.Cipher(key)
    sealed = cipher.encrypt(plaintext, aad.encode(), nonce)
    assert sealed == crypto.encrypt(plaintext, aad, key, nonce)
    aead = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, aad.encode(), nonce, key
    )
    assert sealed[32:] == aead
    assert cipher.decrypt(sealed, nonce, aad.encode()) == plaintext
    assert crypto.decrypt(sealed, nonce, aad, key) == plaintext
    for broken in (
        sealed[:5] + bytes([sealed[5] ^ 1]) + sealed[6:],  # the commitment tag
        sealed[:-1] + bytes([sealed[-1] ^ 1]),  # the AEAD tag
        sealed[:47],
    ):
        with pytest.raises(crypto.CryptoFailure) as by_cipher:
            cipher.decrypt(broken, nonce, aad.encode())
        with pytest.raises(crypto.CryptoFailure) as by_function:
            crypto.decrypt(broken, nonce, aad, key)
        assert str(by_cipher.value) == str(by_function.value)


def test_a_commitment_tag_over_a_broken_aead_fails_in_the_aead() -> None:
    key, nonce = os.urandom(32), os.urandom(24)
    aad = b"YWFk"
    sealed = crypto.Cipher(key).encrypt(b"hello", aad, nonce)
    aead = sealed[32:-1] + bytes([sealed[-1] ^ 1])
    tag = crypto.commitment_tag(key, b64encode(nonce), b64encode(aead), aad.decode())
    with pytest.raises(crypto.CryptoFailure, match="AEAD"):
        crypto.Cipher(key).decrypt(tag + aead, nonce, aad)


def test_malformed_keys_keep_their_old_behaviour() -> None:
    assert crypto.Cipher.of(bytearray(32)) == bytearray(32)
    assert crypto.Cipher.of(b"short") == b"short"
    assert isinstance(crypto.Cipher.of(KEY), crypto.Cipher)
    assert "724b" not in repr(crypto.Cipher(KEY))


@pytest.mark.parametrize("doc_id", [*DOC_IDS, "lone \ud800 surrogate"])
@pytest.mark.parametrize("clock", [0, 5, 2**53 - 1])
@pytest.mark.parametrize("extra", [{}, {"keyId": "k1", "n": 3}])
def test_update_aad_is_base64_of_canonical_json(doc_id: str, clock: int, extra: dict) -> None:
    public = UpdatePublicData(doc_id, SIGNER.public_key, REF, clock, extra)
    expected = b64encode_ascii(canonical_json(public.to_json()).encode("utf-8"))
    assert public.aad_b64() == expected
    assert public.aad_b64() == expected  # cached the second time
    assert public.aad() == expected.decode()


def test_signature_input_is_the_documented_one() -> None:
    message = update()
    aad = message.public_data.aad()
    expected = crypto.signed_bytes(
        crypto.DOMAIN_UPDATE, b64encode(message.ciphertext), b64encode(message.nonce), aad
    )
    assert expected == crypto.signed_input(
        crypto.DOMAIN_UPDATE,
        b64encode_ascii(message.ciphertext),
        b64encode_ascii(message.nonce),
        aad.encode(),
    )
    assert sealing.check_signature(message) == aad
    assert sealing.signature_valid(message)


def test_signature_verification_matches_the_binding() -> None:
    message = os.urandom(300)
    signature = SIGNER.sign(message)
    cases = [
        (SIGNER.public_key, signature, message, True),
        (SIGNER.public_key, signature, message + b"x", False),
        (SIGNER.public_key, bytes([signature[0] ^ 1]) + signature[1:], message, False),
        (crypto.SigningKeyPair.generate().public_key, signature, message, False),
        (bytes(32), signature, message, False),
        (SIGNER.public_key, signature, b"", False),
        (SIGNER.public_key, signature[:63], message, False),
        (SIGNER.public_key[:31], signature, message, False),
    ]
    for public_key, sig, signed, valid in cases:
        assert crypto.verify_signature(public_key, sig, signed) is valid
        try:
            nacl.bindings.crypto_sign_open(sig + signed, public_key)
            by_binding = True
        except Exception:
            by_binding = False
        assert by_binding is valid
