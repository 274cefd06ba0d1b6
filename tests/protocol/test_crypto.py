"""The fixed vectors of the secsync JavaScript reference, reproduced."""

import hashlib
import hmac

import pytest

from secsync.errors import InvalidKeyError
from secsync.protocol import crypto
from secsync.protocol.encoding import b64decode, b64encode

# The key pair and document key the secsync JS test-suite uses.
SECRET_A = "g3dtwb9XzhSzZGkxTfg11t1KEIb4D8rO7K54R6dnxArvgg_OzZ2GgREtG7F5LvNp3MS8p9vsio4r6Mq7SZDEgw"
PUBLIC_A = "74IPzs2dhoERLRuxeS7zadzEvKfb7IqOK-jKu0mQxIM"
KEY = bytes.fromhex("724b092810ec86d7e35c9d067702b31ef90bc43a7b598626749914d6a3e033ed")


def test_hash_vector() -> None:
    assert crypto.hash_b64("abc") == "vd2BPGNCOXIxce8_7phXm5SWTjuxyz5CcmLIwGjVIxk"


def test_initial_snapshot_proof_vector() -> None:
    assert crypto.snapshot_proof("", "", "") == "k_CZR7BveaeM7FOc0TYtEtTtTi0ElwG9XrDVLxb9tR0"
    assert crypto.snapshot_proof("", "", "") == crypto.INITIAL_PARENT_PROOF_B64


def test_parent_snapshot_proof_vector() -> None:
    proof = crypto.snapshot_proof("abc", crypto.hash_b64("abc"), "efg")
    assert proof == "qxgOve6L8OoCogYaKEGF65vkPa7Gq2-DFsQbjwhXcIQ"


def test_session_proof_vector() -> None:
    signer = crypto.SigningKeyPair.from_b64(SECRET_A)
    assert b64encode(signer.public_key) == PUBLIC_A
    remote = b64decode("WVuBN_XDUmwzZaNc3tUKHV6NfbU-erx-")
    current = b64decode("5ygax_FZvpZsizQV5hC23kGWFF_iyPLi")
    proof = crypto.create_session_proof(signer, current, remote)
    assert b64encode(proof) == (
        "45Hyopdk68XfcMMjkG62DgZrl4cclTyIbcw-6wZVZ5OXcGXlBzjHeJBQ6pNO9XSILU5SXN4H-_cYqp_zYbkMAg"
    )
    assert crypto.verify_session_proof(proof, signer.public_key, current, remote)
    # swapped session ids and garbage do not verify
    assert not crypto.verify_session_proof(proof, signer.public_key, remote, current)
    assert not crypto.verify_session_proof(b"\x00" * 64, signer.public_key, current, remote)


def test_signed_bytes_layout() -> None:
    assert crypto.signed_bytes("secsync_update", "CT", "NO", "AAD") == (
        b'secsync_update{"ciphertext":"CT","nonce":"NO","publicData":"AAD"}'
    )


def test_encrypt_layout_and_commitment_tag() -> None:
    nonce = bytes(range(24))
    ct = crypto.encrypt(b"Hello World", "QUFE", KEY, nonce)
    assert len(ct) == crypto.CIPHERTEXT_OVERHEAD + len(b"Hello World")
    tag, aead = ct[:32], ct[32:]
    expected = hmac.new(
        KEY, (b64encode(nonce) + b64encode(aead) + "QUFE").encode(), hashlib.sha512
    ).digest()[:32]
    assert tag == expected
    assert crypto.decrypt(ct, nonce, "QUFE", KEY) == b"Hello World"


@pytest.mark.parametrize("where", ["tag", "aead", "aad", "nonce", "key"])
def test_decrypt_rejects_tampering(where: str) -> None:
    nonce = crypto.random_nonce()
    ct = bytearray(crypto.encrypt(b"secret", "QUFE", KEY, nonce))
    aad, key = "QUFE", KEY
    if where == "tag":
        ct[0] ^= 1
    elif where == "aead":
        ct[-1] ^= 1
    elif where == "aad":
        aad = "QUFF"
    elif where == "nonce":
        nonce = bytes([nonce[0] ^ 1]) + nonce[1:]
    else:
        key = bytes(32)
    with pytest.raises(crypto.CryptoFailure):
        crypto.decrypt(bytes(ct), nonce, aad, key)


def test_signing_key_forms() -> None:
    pair = crypto.SigningKeyPair.generate()
    assert crypto.SigningKeyPair.from_secret(pair.secret_key).public_key == pair.public_key
    assert crypto.SigningKeyPair.from_secret(pair.secret_key[:32]).public_key == pair.public_key
    with pytest.raises(InvalidKeyError):
        crypto.SigningKeyPair.from_secret(pair.secret_key[:32] + bytes(32))
    with pytest.raises(InvalidKeyError):
        crypto.SigningKeyPair.from_secret(b"short")
    assert b64encode(pair.secret_key) not in repr(pair)


def test_check_key() -> None:
    assert crypto.check_key(KEY) == KEY
    with pytest.raises(InvalidKeyError):
        crypto.check_key(KEY[:31])
