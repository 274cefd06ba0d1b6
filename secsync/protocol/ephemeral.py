"""Ephemeral messages (presence, cursors): session handshake and replay protection.

The plaintext carries a header before the application payload::

    type (1 byte) ‖ sender session id (24 bytes) ‖ counter (uint32, little-endian) ‖ payload

Peers prove their sessions to each other with ``initialize`` → ``proofAndRequestProof`` →
``proof``; a ``message`` is delivered only from a proven session and only with a counter above
every counter seen from that session. Unlike secsync JS, a replayed proof never lowers the
stored counter, and a sender cannot be switched back to a session it has left.
"""

from __future__ import annotations

import enum
import os
import struct
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from secsync.errors import (
    CreateEphemeralError,
    EphemeralDocumentIdError,
    EphemeralNoSessionError,
    EphemeralParseError,
    EphemeralRateError,
    EphemeralReplayError,
    EphemeralTypeError,
)
from secsync.protocol import crypto, sealing
from secsync.protocol.encoding import JsonValue
from secsync.protocol.messages import EphemeralMessage, EphemeralPublicData
from secsync.protocol.rate import TokenBuckets

SESSION_ID_BYTES: Final = 24
HEADER_BYTES: Final = 1 + SESSION_ID_BYTES + 4
MAX_COUNTER: Final = 0xFFFFFFFF
# Remember this many left sessions per peer so that none of them can be revived by a replay.
RETIRED_SESSIONS_PER_PEER: Final = 64
MAX_PEERS: Final = 10_000
REPLY_BURST: Final = 4
REPLY_INTERVAL: Final = 1.0
"""Handshake replies (a proof, or a request for one) to one peer: a burst of
:data:`REPLY_BURST`, then one per this many seconds."""

_COUNTER = struct.Struct("<I")


class EphemeralType(enum.IntEnum):
    INITIALIZE = 1
    PROOF_AND_REQUEST_PROOF = 2
    PROOF = 3
    MESSAGE = 4


@dataclass(frozen=True, slots=True)
class EphemeralPlaintext:
    type: int
    session_id: bytes
    counter: int
    payload: bytes

    def encode(self) -> bytes:
        return bytes((self.type,)) + self.session_id + _COUNTER.pack(self.counter) + self.payload

    @classmethod
    def decode(cls, data: bytes) -> EphemeralPlaintext:
        if len(data) < HEADER_BYTES:
            raise EphemeralParseError("ephemeral plaintext shorter than its header")
        (counter,) = _COUNTER.unpack_from(data, 1 + SESSION_ID_BYTES)
        return cls(
            data[0], bytes(data[1 : 1 + SESSION_ID_BYTES]), counter, bytes(data[HEADER_BYTES:])
        )


@dataclass(slots=True)
class _PeerSession:
    session_id: bytes
    counter: int


@dataclass(frozen=True, slots=True)
class EphemeralResult:
    """What one received ephemeral message produced."""

    payload: bytes | None
    """Application payload to deliver, only for a verified ``message``."""
    replies: tuple[EphemeralMessage, ...]
    """Handshake messages to send back."""
    error: EphemeralNoSessionError | None = None
    """Set when the message was dropped for want of a session (a proof request is the reply)."""


class EphemeralSessions:
    """My ephemeral session and the sessions of the peers that proved theirs to me."""

    def __init__(
        self,
        doc_id: str,
        signer: crypto.SigningKeyPair,
        *,
        max_payload: int = 64 * 1024,
        per_second: float = 0.0,
    ) -> None:
        """``max_payload``: ephemeral messages whose ciphertext could hold more are refused
        before their signature is checked. ``per_second`` (0: no limit): messages of one
        claimed author checked per second, after a burst of as many; the rest are dropped
        unchecked, so a flood costs a bounded number of signature checks."""
        self.doc_id = doc_id
        self._signer = signer
        self.max_payload = max_payload
        self.per_second = per_second
        self._admitted = TokenBuckets(burst=per_second, per_second=per_second, max_keys=MAX_PEERS)
        self.dropped = 0
        """Messages dropped unchecked by ``per_second`` (counted, not reported one by one)."""
        self._peers: OrderedDict[bytes, _PeerSession] = OrderedDict()
        self._retired: dict[bytes, OrderedDict[bytes, None]] = {}
        # handshake replies are rationed per peer (see _may_reply)
        self._replied = TokenBuckets(
            burst=float(REPLY_BURST), per_second=1.0 / REPLY_INTERVAL, max_keys=MAX_PEERS
        )
        self._now: float | None = None
        self.extra: Mapping[str, JsonValue] = {}
        """Public data added to every message of mine (a device's certificate)."""
        self.session_id = b""
        self._counter = 0
        self.new_session()

    def new_session(self) -> None:
        """Start a fresh session: new random id, random counter in [0, 2^31 - 2]."""
        self.session_id = os.urandom(SESSION_ID_BYTES)
        self._counter = int.from_bytes(os.urandom(4), "little") % (2**31 - 1)

    def reset_peers(self) -> None:
        self._peers.clear()
        self._retired.clear()

    @property
    def peers(self) -> dict[bytes, bytes]:
        """Verified peers: public key → session id."""
        return {key: peer.session_id for key, peer in self._peers.items()}

    def create(
        self, key: bytes, payload: bytes = b"", message_type: EphemeralType = EphemeralType.MESSAGE
    ) -> EphemeralMessage:
        """Seal an ephemeral message of my session; every message takes the next counter."""
        if self._counter >= MAX_COUNTER:
            # The counter is 32 bits; rather than wrap (and be refused as a replay), move on.
            self.new_session()
        self._counter += 1
        try:
            plaintext = EphemeralPlaintext(message_type, self.session_id, self._counter, payload)
            return sealing.seal(
                EphemeralPublicData(
                    doc_id=self.doc_id, pub_key=self._signer.public_key, extra=self.extra
                ),
                plaintext.encode(),
                key,
                self._signer,
            )
        except (TypeError, ValueError, struct.error) as exc:
            raise CreateEphemeralError(str(exc)) from exc

    def _proof_for(self, peer_session_id: bytes) -> bytes:
        return crypto.create_session_proof(self._signer, self.session_id, peer_session_id)

    def receive(
        self, message: EphemeralMessage, key: bytes, now: float | None = None
    ) -> EphemeralResult:
        """Verify, decrypt and run the handshake; raise an ``EphemeralError`` on rejection.

        With ``now``, handshake replies to one peer are rationed (:data:`REPLY_BURST`, then one
        per :data:`REPLY_INTERVAL`): a peer that floods ``initialize`` messages (or messages from
        sessions it never proved) gets a few answers, not one per message from every receiver.
        """
        self._now = now
        if not self._admit(message.public_data.pub_key):
            self.dropped += 1
            raise EphemeralRateError()
        # header, session id and counter around the payload, plus the AEAD's own overhead
        if len(message.ciphertext) > self.max_payload + 64 + crypto.CIPHERTEXT_OVERHEAD:
            raise EphemeralParseError(f"ephemeral payload over {self.max_payload} bytes")
        aad = sealing.check_signature(message)
        if message.public_data.doc_id != self.doc_id:
            raise EphemeralDocumentIdError("ephemeral message belongs to another document")
        plain = EphemeralPlaintext.decode(sealing.decrypt(message, key, aad))
        author = message.public_data.pub_key
        if author == self._signer.public_key and plain.session_id == self.session_id:
            return EphemeralResult(None, ())  # my own message, echoed back
        if plain.type == EphemeralType.INITIALIZE:
            if not self._may_reply(author):
                return EphemeralResult(None, ())
            reply = self.create(
                key, self._proof_for(plain.session_id), EphemeralType.PROOF_AND_REQUEST_PROOF
            )
            return EphemeralResult(None, (reply,))
        if plain.type in (EphemeralType.PROOF_AND_REQUEST_PROOF, EphemeralType.PROOF):
            return self._receive_proof(author, plain, key)
        if plain.type == EphemeralType.MESSAGE:
            return self._receive_message(author, plain, key)
        raise EphemeralTypeError(f"unknown ephemeral message type {plain.type}")

    def _receive_proof(
        self, author: bytes, plain: EphemeralPlaintext, key: bytes
    ) -> EphemeralResult:
        if not crypto.verify_session_proof(
            plain.payload, author, plain.session_id, self.session_id
        ):
            # Proofs are broadcast; one addressed to another receiver is normal traffic.
            return EphemeralResult(None, ())
        self._check_fresh(author, plain)
        self._remember(author, plain.session_id, plain.counter)
        replies: tuple[EphemeralMessage, ...] = ()
        if plain.type == EphemeralType.PROOF_AND_REQUEST_PROOF and self._may_reply(author):
            replies = (self.create(key, self._proof_for(plain.session_id), EphemeralType.PROOF),)
        return EphemeralResult(None, replies)

    def _receive_message(
        self, author: bytes, plain: EphemeralPlaintext, key: bytes
    ) -> EphemeralResult:
        peer = self._peers.get(author)
        if peer is None or peer.session_id != plain.session_id:
            if plain.session_id in self._retired.get(author, ()):
                raise EphemeralReplayError("message from a session the peer has left")
            # Answer with a proof request so that a session gets established.
            if not self._may_reply(author):
                return EphemeralResult(None, (), EphemeralNoSessionError())
            reply = self.create(
                key, self._proof_for(plain.session_id), EphemeralType.PROOF_AND_REQUEST_PROOF
            )
            return EphemeralResult(None, (reply,), EphemeralNoSessionError())
        self._check_fresh(author, plain)
        peer.counter = plain.counter
        self._peers.move_to_end(author)
        return EphemeralResult(plain.payload, ())

    def _admit(self, author: bytes) -> bool:
        now = self._now
        if now is None or self.per_second <= 0:
            return True
        return self._admitted.take(author, now)

    def _may_reply(self, author: bytes) -> bool:
        """A token bucket per peer: :data:`REPLY_BURST` replies at once, then one per
        :data:`REPLY_INTERVAL` (an honest peer needs a reply or two per session it starts)."""
        now = self._now
        return now is None or self._replied.take(author, now)

    def _check_fresh(self, author: bytes, plain: EphemeralPlaintext) -> None:
        if plain.session_id in self._retired.get(author, ()):
            raise EphemeralReplayError("proof or message of a session the peer has left")
        peer = self._peers.get(author)
        if (
            peer is not None
            and peer.session_id == plain.session_id
            and plain.counter <= peer.counter
        ):
            raise EphemeralReplayError(
                f"counter {plain.counter} is not above {peer.counter} (replay)"
            )

    def _remember(self, author: bytes, session_id: bytes, counter: int) -> None:
        old = self._peers.get(author)
        if old is not None and old.session_id != session_id:
            retired = self._retired.setdefault(author, OrderedDict())
            retired[old.session_id] = None
            while len(retired) > RETIRED_SESSIONS_PER_PEER:
                retired.popitem(last=False)
        self._peers[author] = _PeerSession(session_id, counter)
        self._peers.move_to_end(author)
        while len(self._peers) > MAX_PEERS:
            evicted, _ = self._peers.popitem(last=False)
            self._retired.pop(evicted, None)
