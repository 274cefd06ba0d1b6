"""Users and devices: certificates (string forms, tampering), and what readers make of them."""

from __future__ import annotations

import dataclasses

import pycrdt
import pytest

from secsync.crdt.yjs import new_yjs_doc
from secsync.errors import DeviceCertificateError, InvalidKeyError
from secsync.protocol import crypto, sealing, wire
from secsync.protocol.changes import serialize_changes
from secsync.protocol.devices import (
    CERTIFICATE_FIELD,
    Device,
    DeviceCertificate,
    DeviceDirectory,
    UserIdentity,
    device_or_key,
)
from secsync.protocol.events import (
    EphemeralReceived,
    MessageRejected,
    SnapshotApplied,
    UpdateApplied,
)
from secsync.protocol.messages import Snapshot, Update, UpdatePublicData
from secsync.protocol.session import DocumentSession
from tests.factories import KEY, YPeer, yjs_change


def test_string_forms_round_trip() -> None:
    user = UserIdentity.generate()
    device = user.new_device("laptop")
    assert UserIdentity.from_b64(user.to_b64()).public_key == user.public_key
    again = Device.from_b64(device.to_b64())
    assert again.public_key == device.public_key and again.user == user.public_key
    assert again.label == "laptop" and again.certificate == device.certificate
    assert DeviceCertificate.from_b64(device.certificate.to_b64()) == device.certificate
    assert device_or_key(device.to_b64()) == again
    plain = crypto.SigningKeyPair.generate()
    assert device_or_key(plain.to_b64()) == plain
    # a device generated elsewhere: only its public key travels to the user
    elsewhere = crypto.SigningKeyPair.generate()
    certificate = user.certify(elsewhere.public_key, "phone")
    assert Device(elsewhere, certificate).user == user.public_key
    assert "secret" not in repr(user) and user.key.to_b64() not in repr(device)


def test_tampered_certificates_are_refused() -> None:
    user = UserIdentity.generate()
    device = user.new_device("laptop")
    cert = device.certificate
    for forged in (
        dataclasses.replace(cert, label="phone"),
        dataclasses.replace(cert, user=UserIdentity.generate().public_key),
        dataclasses.replace(cert, device=crypto.SigningKeyPair.generate().public_key),
        dataclasses.replace(cert, signature=bytes(64)),
    ):
        with pytest.raises(DeviceCertificateError) as raised:
            forged.verify()
        assert raised.value.code == 1011
    raw = bytearray(cert.to_bytes())
    raw[-1] ^= 1  # the label's last byte
    with pytest.raises(DeviceCertificateError):
        DeviceCertificate.from_bytes(bytes(raw)).verify()
    for junk in (b"", cert.to_bytes()[:-1], b"\x02" + cert.to_bytes()[1:]):
        with pytest.raises(DeviceCertificateError):
            DeviceCertificate.from_bytes(junk)
    with pytest.raises(DeviceCertificateError):
        DeviceCertificate.from_b64("!!")
    with pytest.raises(DeviceCertificateError):  # the key of one device, the cert of another
        Device(crypto.SigningKeyPair.generate(), cert)
    with pytest.raises(InvalidKeyError):
        Device.from_b64(user.to_b64())
    with pytest.raises(InvalidKeyError):
        UserIdentity.from_b64(device.to_b64())
    with pytest.raises(DeviceCertificateError):
        user.certify(b"short")
    with pytest.raises(DeviceCertificateError):
        user.new_device("x" * 65)


def test_directory_binds_a_certificate_to_its_signer_only() -> None:
    user = UserIdentity.generate()
    device = user.new_device()
    directory = DeviceDirectory()
    other = crypto.SigningKeyPair.generate()
    assert directory.user_of(device.public_key) == device.public_key  # not seen yet
    with pytest.raises(DeviceCertificateError):  # someone else carrying our device's cert
        directory.admit(other.public_key, device.extra())
    directory.admit(device.public_key, device.extra())
    assert directory.user_of(device.public_key) == user.public_key
    assert directory.device_user(other.public_key) is None
    with pytest.raises(DeviceCertificateError):  # and once it is known, still not
        directory.admit(other.public_key, device.extra())
    with pytest.raises(DeviceCertificateError):
        directory.admit(device.public_key, {CERTIFICATE_FIELD: 3})


def _as_device(user: UserIdentity, label: str) -> YPeer:
    device = user.new_device(label)
    peer = YPeer()
    peer.signer = device.signer
    peer.doc = new_yjs_doc(device)  # under an id of the user, not of the device key
    peer.text = peer.doc.get("text", type=pycrdt.Text)
    peer.session = DocumentSession("doc", device, KEY, peer.doc)
    return peer


def test_readers_name_the_user_of_each_device() -> None:
    user = UserIdentity.generate()
    one, two = _as_device(user, "one"), _as_device(user, "two")
    reader = YPeer(doc_id="doc")
    for peer in (one, two, reader):
        peer.session.load(None, now=0.0)
    one.type(0, "a")
    (snapshot,) = one.session.data_to_send()
    assert isinstance(snapshot, Snapshot)
    assert CERTIFICATE_FIELD in snapshot.public_data.extra
    one.session.snapshot_stored(snapshot.snapshot_id, now=0.0)
    events = reader.session.receive(snapshot, now=0.0) + two.session.receive(snapshot, now=0.0)
    applied = [e for e in events if isinstance(e, SnapshotApplied)]
    assert [e.user for e in applied] == [user.public_key, user.public_key]
    two.type(0, "b")
    (update,) = two.session.data_to_send()
    assert isinstance(update, Update) and CERTIFICATE_FIELD in update.public_data.extra
    events = reader.session.receive(wire.decode(wire.encode(update), doc_id="doc"), now=0.0)
    (applied_update,) = [e for e in events if isinstance(e, UpdateApplied)]
    assert applied_update.author == two.signer.public_key
    assert applied_update.user == user.public_key
    assert reader.session.user_of(two.signer.public_key) == user.public_key
    assert reader.session.user_of(reader.signer.public_key) == reader.signer.public_key
    # presence names the user too
    message = two.session.send_ephemeral(b"hello")
    assert CERTIFICATE_FIELD in message.public_data.extra
    events = reader.session.receive(message, now=0.0)
    for reply in reader.session.data_to_send():
        two.session.receive(reply, now=0.0)
    for reply in two.session.data_to_send():
        events += reader.session.receive(reply, now=0.0)
    events += reader.session.receive(two.session.send_ephemeral(b"hello"), now=0.0)
    received = [e for e in events if isinstance(e, EphemeralReceived)]
    assert received and all(e.user == user.public_key for e in received)


def test_a_forged_certificate_refuses_the_message() -> None:
    """A certificate that its user did not sign, or that is another signer's, refuses the
    message with the typed error; nothing is applied."""
    user = UserIdentity.generate()
    one = _as_device(user, "one")
    reader = YPeer(doc_id="doc")
    for peer in (one, reader):
        peer.session.load(None, now=0.0)
    one.type(0, "a")
    (snapshot,) = one.session.data_to_send()
    reader.session.receive(snapshot, now=0.0)
    assert isinstance(snapshot, Snapshot)
    mallory = crypto.SigningKeyPair.generate()
    claimed = UserIdentity.generate()  # the user mallory claims, signed by mallory itself
    signature = mallory.sign(
        DeviceCertificate.signed_bytes(claimed.public_key, mallory.public_key, "")
    )
    forged = DeviceCertificate(claimed.public_key, mallory.public_key, signature)
    stolen = one.session.device.certificate  # type: ignore[union-attr]
    for certificate in (forged, stolen):
        public = UpdatePublicData(
            doc_id="doc",
            pub_key=mallory.public_key,
            ref_snapshot_id=snapshot.snapshot_id,
            clock=0,
            extra={CERTIFICATE_FIELD: certificate.to_b64()},
        )
        change, _ = yjs_change("evil")
        update = sealing.seal(public, serialize_changes([change]), KEY, mallory)
        events = reader.session.receive(update, now=0.0)
        (rejected,) = [e for e in events if isinstance(e, MessageRejected)]
        assert rejected.error.code == 1011
        assert "evil" not in reader.content
    assert reader.session.user_of(mallory.public_key) == mallory.public_key


def test_wire_is_unchanged_without_devices_and_the_overhead_with_one() -> None:
    plain, user = YPeer(doc_id="doc"), UserIdentity.generate()
    device = _as_device(user, "laptop")
    sizes = []
    for peer in (plain, device):
        peer.session.load(None, now=0.0)
        peer.type(0, "x")
        (snapshot,) = peer.session.data_to_send()
        peer.session.snapshot_stored(snapshot.snapshot_id, now=0.0)
        peer.type(0, "y")
        (update,) = peer.session.data_to_send()
        assert isinstance(update, Update)
        sizes.append(len(wire.encode(update, include_doc_id=False)))
        if peer is plain:
            assert update.public_data.extra == {}
    overhead = sizes[1] - sizes[0]
    print(f"device certificate overhead per update: {overhead} bytes")
    assert 0 < overhead < 200
