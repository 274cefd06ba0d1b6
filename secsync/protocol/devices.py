"""Users and their devices: one identity per person, one signing key per client.

A **user identity** (:class:`UserIdentity`) is an Ed25519 key pair that names a person. It
signs **device certificates** (:class:`DeviceCertificate`): "the device key D belongs to the
user U". Each client (a laptop, a phone, a process) signs its messages with its own **device**
key (:class:`Device`: the key pair and its certificate), so two clients of one user never share
a signing key, never share per-author clocks, and never collide (see
:mod:`secsync.protocol.collisions` for what happens when one key is used twice anyway).

A certified device carries its certificate in the signed public data of every message it writes
(``"dev"``, an extra field: covered by the message's signature, ignored by readers that do not
know it, so secsync JS still reads the document; documents written without devices are
unchanged on the wire). A reader checks the certificate (its device must be the message's
signer, its signature the user's) and names the user in its events beside the device
(``user`` of :class:`~secsync.protocol.events.UpdateApplied` and the others); a forged one
refuses the message (:class:`~secsync.errors.DeviceCertificateError`, 1011). The session
resolves a signer to its user through one hook, :meth:`DeviceDirectory.user_of` (the identity
itself for a key without certificate).

String forms, to store like passwords: :meth:`UserIdentity.to_b64`, :meth:`Device.to_b64`;
:meth:`DeviceCertificate.to_b64` is public.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from secsync.errors import DeviceCertificateError, InvalidKeyError, SecsyncError
from secsync.protocol import crypto
from secsync.protocol.encoding import JsonValue, b64decode, b64encode
from secsync.protocol.keys import signing_key_pair

CERTIFICATE_FIELD: Final = "dev"
"""The extra public-data field that carries a device's certificate."""
MAX_LABEL_BYTES: Final = 64
_DOMAIN: Final = b"secsync-device-certificate-v1"
_VERSION: Final = 1
_KEY: Final = crypto.PUBLIC_KEY_BYTES
_SIGNATURE: Final = 64


@dataclass(frozen=True, slots=True)
class DeviceCertificate:
    """The user ``user`` says that the signing key ``device`` is one of its devices."""

    user: bytes
    device: bytes
    signature: bytes
    label: str = ""
    """A name for people ("laptop"), signed with the rest; not secret, travels in the clear."""

    @staticmethod
    def signed_bytes(user: bytes, device: bytes, label: str) -> bytes:
        encoded = label.encode("utf-8")
        return _DOMAIN + user + device + len(encoded).to_bytes(1, "big") + encoded

    @classmethod
    def issue(
        cls, user: crypto.SigningKeyPair, device: bytes, label: str = ""
    ) -> DeviceCertificate:
        if len(device) != _KEY:
            raise DeviceCertificateError("a device key is a 32-byte Ed25519 public key")
        if len(label.encode("utf-8")) > MAX_LABEL_BYTES:
            raise DeviceCertificateError(f"a device label has at most {MAX_LABEL_BYTES} bytes")
        signature = user.sign(cls.signed_bytes(user.public_key, device, label))
        return cls(user.public_key, device, signature, label)

    def verify(self) -> None:
        """Raise :class:`DeviceCertificateError` unless the user signed exactly this."""
        if len(self.user) != _KEY or len(self.device) != _KEY or self.user == self.device:
            raise DeviceCertificateError("malformed device certificate")
        if not crypto.verify_signature(
            self.user, self.signature, self.signed_bytes(self.user, self.device, self.label)
        ):
            raise DeviceCertificateError("the device certificate is not signed by its user")

    def to_bytes(self) -> bytes:
        label = self.label.encode("utf-8")
        return (
            bytes([_VERSION])
            + self.user
            + self.device
            + self.signature
            + len(label).to_bytes(1, "big")
            + label
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> DeviceCertificate:
        head = 1 + 2 * _KEY + _SIGNATURE + 1
        if len(data) < head or data[0] != _VERSION or len(data) != head + data[head - 1]:
            raise DeviceCertificateError("malformed device certificate")
        user, device = data[1 : 1 + _KEY], data[1 + _KEY : 1 + 2 * _KEY]
        signature = data[1 + 2 * _KEY : head - 1]
        try:
            label = data[head:].decode("utf-8")
        except UnicodeDecodeError:
            raise DeviceCertificateError("malformed device certificate") from None
        return cls(bytes(user), bytes(device), bytes(signature), label)

    def to_b64(self) -> str:
        return b64encode(self.to_bytes())

    @classmethod
    def from_b64(cls, text: str) -> DeviceCertificate:
        try:
            data = b64decode(text.strip())
        except (SecsyncError, ValueError, TypeError):
            raise DeviceCertificateError("malformed device certificate") from None
        return cls.from_bytes(data)


class UserIdentity:
    """A person's identity key: it certifies devices and signs nothing else. Keep its string
    form (:meth:`to_b64`) like a password, on one trusted device or offline."""

    __slots__ = ("key",)

    def __init__(self, key: crypto.SigningKeyPair) -> None:
        self.key = key

    @classmethod
    def generate(cls) -> UserIdentity:
        return cls(crypto.SigningKeyPair.generate())

    @property
    def public_key(self) -> bytes:
        return self.key.public_key

    def certify(self, device_public_key: bytes, label: str = "") -> DeviceCertificate:
        """A certificate for a device key generated elsewhere (only its public half here)."""
        return DeviceCertificate.issue(self.key, device_public_key, label)

    def new_device(self, label: str = "") -> Device:
        """A fresh device key, certified."""
        signer = crypto.SigningKeyPair.generate()
        return Device(signer, self.certify(signer.public_key, label))

    def to_b64(self) -> str:
        return "user:" + self.key.to_b64()

    @classmethod
    def from_b64(cls, text: str) -> UserIdentity:
        text = text.strip()
        if not text.startswith("user:"):
            raise InvalidKeyError("not a user identity (it starts with 'user:')")
        return cls(crypto.SigningKeyPair.from_b64(text[5:]))

    def __repr__(self) -> str:
        return f"UserIdentity({b64encode(self.public_key)[:8]})"


@dataclass(frozen=True, slots=True)
class Device:
    """One client of a user: its signing key and the user's certificate for it. Pass it as
    ``signing_key`` to ``client.open``."""

    signer: crypto.SigningKeyPair
    certificate: DeviceCertificate

    def __post_init__(self) -> None:
        if self.certificate.device != self.signer.public_key:
            raise DeviceCertificateError("the certificate is for another device key")
        self.certificate.verify()

    @property
    def public_key(self) -> bytes:
        return self.signer.public_key

    @property
    def user(self) -> bytes:
        return self.certificate.user

    @property
    def label(self) -> str:
        return self.certificate.label

    def extra(self) -> dict[str, JsonValue]:
        """The public data this device adds to every message it writes."""
        return {CERTIFICATE_FIELD: self.certificate.to_b64()}

    def to_b64(self) -> str:
        """The device's secret key and certificate as text; store it like a password."""
        return f"device:{self.signer.to_b64()}.{self.certificate.to_b64()}"

    @classmethod
    def from_b64(cls, text: str) -> Device:
        text = text.strip()
        if not text.startswith("device:") or text.count(".") != 1:
            raise InvalidKeyError("not a device (it reads 'device:<key>.<certificate>')")
        key, certificate = text[7:].split(".")
        return cls(crypto.SigningKeyPair.from_b64(key), DeviceCertificate.from_b64(certificate))

    def __repr__(self) -> str:
        return f"Device({b64encode(self.public_key)[:8]} of {b64encode(self.user)[:8]})"


def device_or_key(value: object) -> Device | crypto.SigningKeyPair:
    """What signs a document: a :class:`Device` (or its text form), else an identity as
    ``secsync.protocol.keys.signing_key_pair`` reads it."""
    if isinstance(value, Device):
        return value
    if isinstance(value, str) and value.strip().startswith("device:"):
        return Device.from_b64(value)
    return signing_key_pair(value)


class DeviceDirectory:
    """Which user each signing key of a document belongs to, from the certificates checked
    (a bounded memory of devices; a key without certificate is its own user)."""

    __slots__ = ("_checked", "_users", "limit")

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._users: OrderedDict[bytes, bytes] = OrderedDict()
        self._checked: OrderedDict[str, bytes] = OrderedDict()  # certificate text -> device

    def admit(self, author: bytes, extra: Mapping[str, JsonValue]) -> None:
        """Check the certificate a message of ``author`` carries, if any: raise
        :class:`DeviceCertificateError` unless it is the user's, for this very signer."""
        text = extra.get(CERTIFICATE_FIELD)
        if text is None:
            return
        if not isinstance(text, str):
            raise DeviceCertificateError("malformed device certificate")
        device = self._checked.get(text)
        if device is None:
            certificate = DeviceCertificate.from_b64(text)
            certificate.verify()
            device = certificate.device
            if device == author:
                self._checked[text] = device
                self._remember(device, certificate.user)
                while len(self._checked) > self.limit:
                    self._checked.popitem(last=False)
        if device != author:
            raise DeviceCertificateError("the device certificate is for another signer")
        self._users.move_to_end(author)

    def register(self, certificate: DeviceCertificate) -> None:
        """Learn a device from a certificate checked elsewhere (our own, a roster's)."""
        certificate.verify()
        self._remember(certificate.device, certificate.user)

    def _remember(self, device: bytes, user: bytes) -> None:
        self._users[device] = user
        while len(self._users) > self.limit:
            self._users.popitem(last=False)

    def user_of(self, author: bytes) -> bytes:
        """The user a signing key belongs to: its certificate's user, or the key itself."""
        return self._users.get(author, author)

    def device_user(self, author: bytes) -> bytes | None:
        """The user of ``author`` if it is a certified device, else ``None``."""
        return self._users.get(author)
