"""The one error hierarchy of secsync.

Every error has a stable numeric ``code``. Codes 100-699 reuse the numbers of the secsync
JavaScript reference where it has them (``SECSYNC_ERROR_<code>``); the other ranges are ours:

* 1xx snapshots, 2xx updates, 3xx ephemeral messages (receiving)
* 4xx/5xx/6xx creating snapshots / updates / ephemeral messages
* 7xx encoding and wire format
* 8xx session usage and configuration
* 9xx transport and broker
* 10xx access: share links, keys, membership

Three branches tell who has to act:

* :class:`LocalError`: this program or its machine. The API was used in a way the arguments,
  the configuration or the session's state do not allow (:class:`SessionError`, creating
  messages), or local storage failed.
* :class:`RemoteInputError`: something received is forged, malformed, replayed or misplaced
  (the 1xx/2xx/3xx errors of received messages, and the 7xx decoding errors). The session never
  raises these for a received message: they arrive in ``MessageRejected`` events.
* :class:`TransportError`: the broker or the connection to it.

:class:`AccessError` (keys, links, membership) stands beside them: a wrong key or link is local,
a forged membership change is remote; its classes say which.

Messages say what went wrong in words and never contain keys or plaintext.

Size: one class per error code, each with its docstring; the hierarchy reads best in one place.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class SecsyncError(Exception):
    """Base class of every error raised by secsync."""

    code: ClassVar[int] = 0

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip().splitlines()[0])

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class LocalError(SecsyncError):
    """A local cause: bad arguments or configuration, a call the session's state does not
    allow, or local storage."""

    code = 1


class RemoteInputError(SecsyncError):
    """Received data is forged, malformed, replayed or misplaced."""

    code = 2


# --- 7xx: encoding and wire format -------------------------------------------------------------


class EncodingError(RemoteInputError):
    """Malformed encoded data.

    The base of the 7xx errors, never raised itself. Its code is 799, not 700: 700 is the code
    of :class:`MalformedMessageError`, which every undecodable message reports (and which the
    conformance and security tables name), and each code belongs to one class.
    """

    code = 799


class MalformedMessageError(EncodingError):
    """The message could not be decoded."""

    code = 700


class UnsupportedVersionError(MalformedMessageError):
    """The message uses a protocol version this implementation does not know."""

    code = 701


class MessageTooLargeError(MalformedMessageError):
    """The message exceeds the configured size bound."""

    code = 702


class InvalidBase64Error(EncodingError):
    """Not strict unpadded base64url."""

    code = 703


class CanonicalJsonError(EncodingError):
    """The value cannot be represented as canonical JSON (floats, huge integers, bad keys)."""

    code = 704


class InvalidKeyError(EncodingError):
    """A key has the wrong length or format."""

    code = 705


# --- 1xx: snapshots ------------------------------------------------------------------------------


class SnapshotError(RemoteInputError):
    """Unknown snapshot error."""

    code = 100


class SnapshotDecryptionError(SnapshotError):
    """The snapshot failed the commitment tag or AEAD check (wrong key or tampered)."""

    code = 101


class SnapshotMissesUpdatesError(SnapshotError):
    """The snapshot does not include updates of ours that the broker had confirmed."""

    code = 102


class SnapshotKeyError(SnapshotError):
    """No key could be found for the snapshot."""

    code = 103


class SnapshotPolicyError(SnapshotError):
    """The authorization policy failed while checking a snapshot author."""

    code = 104


class SnapshotApplyError(SnapshotError):
    """The CRDT refused the snapshot content."""

    code = 105


class SnapshotParseError(SnapshotError, MalformedMessageError):
    """The snapshot message is malformed."""

    code = 110


class SnapshotSignatureError(SnapshotError):
    """The snapshot signature is invalid."""

    code = 111


class SnapshotParentError(SnapshotError):
    """The snapshot is not a child of the known snapshot (parent id or proof mismatch)."""

    code = 112


class SnapshotDocumentIdError(SnapshotError):
    """The snapshot belongs to another document."""

    code = 113


class SnapshotAuthorRejectedError(SnapshotError):
    """The authorization policy does not allow this author to write snapshots."""

    code = 114


class SnapshotAncestryError(SnapshotError):
    """The snapshot proof chain does not connect the known snapshot to this one."""

    code = 115


class SnapshotReplayError(SnapshotError):
    """The snapshot was already superseded (a replay of an old snapshot)."""

    code = 116


class SnapshotBudgetError(SnapshotError):
    """A snapshot held for its parent was let go: held snapshots would exceed
    ``max_held_snapshot_bytes`` (the oldest go first; one larger than the budget is not held)."""

    code = 117


class SnapshotRateError(SnapshotError):
    """The snapshot's author sent more snapshots than the per-author rate allows: it is held
    (the newest one of the author is processed once the rate allows) or dropped unread."""

    code = 118

    def __init__(
        self, message: str | None = None, *, snapshot_id: bytes = b"", held: bool = False
    ) -> None:
        self.snapshot_id = snapshot_id
        self.held = held
        """Held (processed later), not dropped."""
        super().__init__(message)


class SnapshotSearchError(SnapshotError):
    """Loading looked back over more stored snapshot messages (or bytes) than its bound
    without finding one to load; nothing was written."""

    code = 119


# --- 2xx: updates --------------------------------------------------------------------------------


class UpdateError(RemoteInputError):
    """Unknown update error."""

    code = 200


class UpdateDecryptionError(UpdateError):
    """The update failed the commitment tag or AEAD check (wrong key or tampered)."""

    code = 201


class UpdateClockGapError(UpdateError):
    """An update's predecessor never arrived."""

    code = 202


class UpdateApplyError(UpdateError):
    """The CRDT refused the update content."""

    code = 203


class UpdateDeserializeError(UpdateError):
    """The decrypted update content is not a valid change list."""

    code = 204


class UpdatePolicyError(UpdateError):
    """The authorization policy failed while checking an update author."""

    code = 205


class UpdateParseError(UpdateError, MalformedMessageError):
    """The update message is malformed."""

    code = 211


class UpdateSignatureError(UpdateError):
    """The update signature is invalid."""

    code = 212


class UpdateSnapshotMismatchError(UpdateError):
    """The update references a snapshot that is not the active one."""

    code = 213


class UpdateReplayError(UpdateError):
    """The update's clock was already applied (duplicate or replay)."""

    code = 214


class UpdateAuthorRejectedError(UpdateError):
    """The authorization policy does not allow this author to write updates."""

    code = 215


class UpdateDocumentIdError(UpdateError):
    """The update belongs to another document."""

    code = 216


class UpdatePendingBudgetError(UpdateApplyError):
    """The update's CRDT content depends on content the document does not have, and what
    waits for missing dependencies would exceed ``max_pending_bytes``: it is refused before the
    CRDT sees it (the CRDT would keep it for the document's life)."""

    code = 220


class UpdateQueueFullError(UpdateError):
    """Too many out-of-order updates are waiting; the update was dropped."""

    code = 217


class UpdateIdentityError(UpdateError):
    """The update carries content under a CRDT identity (a Yjs client id, an Automerge actor)
    that does not belong to the user who signed it: bound to another user, or not bound at all
    where ``SecsyncConfig.legacy_crdt_ids`` is off. Refused whole; its clock is spent."""

    code = 218


class LocalIdentityError(UpdateError):
    """This session's CRDT document would write under a CRDT identity that is not ours: a Yjs
    client id bound to another user (or, with ``legacy_crdt_ids`` off, not bound at all), or an
    Automerge actor bound to another user. Every reader would refuse our updates; raised when
    the session opens the document. Create Yjs documents with ``secsync.new_yjs_doc``."""

    code = 219


# --- 3xx: ephemeral messages ---------------------------------------------------------------------


class EphemeralError(RemoteInputError):
    """Unknown ephemeral message error."""

    code = 300


class EphemeralDecryptionError(EphemeralError):
    """The ephemeral message failed the commitment tag or AEAD check."""

    code = 301


class EphemeralNoSessionError(EphemeralError):
    """No verified ephemeral session exists for the sender (a handshake is requested)."""

    code = 302


class EphemeralReplayError(EphemeralError):
    """The ephemeral message counter is not above the last one seen (replay)."""

    code = 303


class EphemeralAuthorRejectedError(EphemeralError):
    """The authorization policy rejected the ephemeral message author."""

    code = 304


class EphemeralTypeError(EphemeralError):
    """Unknown ephemeral message type."""

    code = 305


class EphemeralDocumentIdError(EphemeralError):
    """The ephemeral message belongs to another document."""

    code = 306


class EphemeralParseError(EphemeralError, MalformedMessageError):
    """The ephemeral message is malformed."""

    code = 307


class EphemeralSignatureError(EphemeralError):
    """The ephemeral message signature is invalid."""

    code = 308


class PresenceParseError(EphemeralError):
    """A presence payload is malformed."""

    code = 310


class EphemeralRateError(EphemeralError):
    """More ephemeral messages from this author than a receiver checks: dropped unchecked."""

    code = 312


class PresenceImpersonationError(EphemeralError):
    """A participant claimed the Yjs client id (cursor) of another participant."""

    code = 311


# --- 4xx/5xx/6xx: creating messages --------------------------------------------------------------


class CreateSnapshotError(LocalError):
    """Creating a snapshot failed."""

    code = 401


class CreateUpdateError(LocalError):
    """Creating an update failed."""

    code = 501


class CreateEphemeralError(LocalError):
    """Creating an ephemeral message failed."""

    code = 601


# --- 8xx: session usage ---------------------------------------------------------------------


class SessionError(LocalError):
    """The session was used in a way its state does not allow."""

    code = 800


class NoActiveSnapshotError(SessionError):
    """The document has no active snapshot yet."""

    code = 801


class ConfigurationError(SessionError):
    """Invalid configuration."""

    code = 802


class CrdtAdapterError(SessionError):
    """The CRDT document type is not supported."""

    code = 803


class LocalStoreError(SessionError):
    """The local store cannot be read or written (or does not decrypt under this key)."""

    code = 804


class SessionStateError(LocalStoreError):
    """A saved session state is damaged, of a layout this release does not know, or not a
    session state at all (see ``secsync.protocol.state``)."""

    code = 807


class IdentityInUseError(SessionError):
    """Another client writes under this client's identity (same signing key, same document):
    this client stops writing under it. Its unsent changes are kept; open the document again
    as another device (or identity) to send them."""

    code = 805


# --- 9xx: transport and broker -------------------------------------------------------------


class TransportError(SecsyncError):
    """The broker or the connection to it failed."""

    code = 900


class BrokerUnavailableError(TransportError):
    """The broker did not answer in time (disconnected, restarting, or no stream leader)."""

    code = 901


class PermissionDeniedError(TransportError):
    """The broker refused an operation on a subject this client may not use."""

    code = 902

    def __init__(self, message: str | None = None, *, subject: str | None = None) -> None:
        self.subject = subject
        super().__init__(message or f"permission denied on subject {subject!r}")


class PayloadTooLargeError(TransportError):
    """A message exceeds what the broker accepts even in chunks."""

    code = 903


class StreamNotFoundError(TransportError):
    """No JetStream stream stores the document subjects (not provisioned)."""

    code = 904


class WrongLastSequenceError(TransportError):
    """Compare-and-set refused: the subject moved on since the expected sequence."""

    code = 905

    def __init__(self, message: str | None = None, *, last_sequence: int | None = None) -> None:
        self.last_sequence = last_sequence
        super().__init__(message)


class BrokerRequestError(TransportError):
    """The broker answered a request with an error not covered by a more specific class."""

    code = 906

    def __init__(self, message: str | None = None, *, err_code: int | None = None) -> None:
        self.err_code = err_code
        super().__init__(message)


class DuplicateBatchError(BrokerRequestError):
    """An atomic batch carries a message id the stream stored already (err_code 10201).

    Nothing of the batch was stored: an earlier attempt landed, or another writer used the same
    ``Nats-Msg-Id`` within the duplicate window. The broker does not say at which sequence.
    """

    code = 908

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, err_code=10201)


class DocumentClosedError(TransportError):
    """The document was closed."""

    code = 907


# --- 10xx: access -----------------------------------------------------------------------------


class AccessError(SecsyncError):
    """Keys, links or membership do not allow this."""

    code = 1000


class InvalidShareLinkError(AccessError):
    """Not a share link of the form <document id>#<secret>."""

    code = 1001


class WrongKeyError(AccessError):
    """The key does not open this document: its stored snapshots do not decrypt with it.

    Raised by ``open`` before anything is written: a client never writes over a document it
    could not read.
    """

    code = 1005


class WrongPassphraseError(WrongKeyError):
    """The link or passphrase does not open this document (its snapshot does not decrypt)."""

    code = 1002


class MembershipError(AccessError):
    """A membership change that no admin signed (or, for its own devices, no member), or group
    data that does not check out."""

    code = 1003


class NotAMemberError(AccessError):
    """No key of this snapshot epoch is sealed to us: we are not (or no longer) a member."""

    code = 1004


class DeviceCertificateError(AccessError):
    """A device certificate that does not check out: malformed, not signed by its user, or
    for another signing key than the message's (see ``secsync.protocol.devices``)."""

    code = 1011


class GroupTooLargeError(MembershipError):
    """The group would exceed the size a snapshot can carry (members or membership changes)."""

    code = 1010


class StorageLimitError(BrokerRequestError):
    """The broker refused to store: a storage limit is reached.

    The stream's ``max_bytes`` (err_code 10077 "maximum bytes exceeded"; the stream refuses
    new messages rather than dropping old ones), the account's JetStream quota (10002
    "resource limits exceeded for account"), or, when a stream is created, the storage left
    for it (10047). Nothing was stored; writes succeed again once space is freed (compaction).
    """

    code = 910


class DocumentNotFoundError(TransportError):
    """The broker holds nothing for this document: no snapshot and no update."""

    code = 909


class CompareAndSetBusyError(TransportError):
    """Compare-and-set not evaluated: another write expecting the same subject was still being
    stored (a clustered stream, err_code 10164). Nothing was stored; the same publish, sent
    again shortly, is decided on its merits."""

    code = 911


class DuplicateMismatchError(TransportError):
    """The broker answered "duplicate" for our message id, but stores other bytes under it."""

    code = 912


class ErrorCode(IntEnum):
    """The ``code`` of every error class, by name (``ErrorCode(error.code)``): the reason a
    :class:`~secsync.protocol.events.MessageRejected` event gives. The values are the codes
    of the table in ``docs/protocol.md``, which never change."""

    UNKNOWN = 0
    """:class:`SecsyncError`"""
    LOCAL = 1
    """:class:`LocalError`"""
    REMOTE_INPUT = 2
    """:class:`RemoteInputError`"""
    SNAPSHOT = 100
    """:class:`SnapshotError`"""
    SNAPSHOT_DECRYPTION = 101
    """:class:`SnapshotDecryptionError`"""
    SNAPSHOT_MISSES_UPDATES = 102
    """:class:`SnapshotMissesUpdatesError`"""
    SNAPSHOT_KEY = 103
    """:class:`SnapshotKeyError`"""
    SNAPSHOT_POLICY = 104
    """:class:`SnapshotPolicyError`"""
    SNAPSHOT_APPLY = 105
    """:class:`SnapshotApplyError`"""
    SNAPSHOT_PARSE = 110
    """:class:`SnapshotParseError`"""
    SNAPSHOT_SIGNATURE = 111
    """:class:`SnapshotSignatureError`"""
    SNAPSHOT_PARENT = 112
    """:class:`SnapshotParentError`"""
    SNAPSHOT_DOCUMENT_ID = 113
    """:class:`SnapshotDocumentIdError`"""
    SNAPSHOT_AUTHOR_REJECTED = 114
    """:class:`SnapshotAuthorRejectedError`"""
    SNAPSHOT_ANCESTRY = 115
    """:class:`SnapshotAncestryError`"""
    SNAPSHOT_REPLAY = 116
    """:class:`SnapshotReplayError`"""
    SNAPSHOT_BUDGET = 117
    """:class:`SnapshotBudgetError`"""
    SNAPSHOT_RATE = 118
    """:class:`SnapshotRateError`"""
    SNAPSHOT_SEARCH = 119
    """:class:`SnapshotSearchError`"""
    UPDATE = 200
    """:class:`UpdateError`"""
    UPDATE_DECRYPTION = 201
    """:class:`UpdateDecryptionError`"""
    UPDATE_CLOCK_GAP = 202
    """:class:`UpdateClockGapError`"""
    UPDATE_APPLY = 203
    """:class:`UpdateApplyError`"""
    UPDATE_DESERIALIZE = 204
    """:class:`UpdateDeserializeError`"""
    UPDATE_POLICY = 205
    """:class:`UpdatePolicyError`"""
    UPDATE_PARSE = 211
    """:class:`UpdateParseError`"""
    UPDATE_SIGNATURE = 212
    """:class:`UpdateSignatureError`"""
    UPDATE_SNAPSHOT_MISMATCH = 213
    """:class:`UpdateSnapshotMismatchError`"""
    UPDATE_REPLAY = 214
    """:class:`UpdateReplayError`"""
    UPDATE_AUTHOR_REJECTED = 215
    """:class:`UpdateAuthorRejectedError`"""
    UPDATE_DOCUMENT_ID = 216
    """:class:`UpdateDocumentIdError`"""
    UPDATE_QUEUE_FULL = 217
    """:class:`UpdateQueueFullError`"""
    UPDATE_IDENTITY = 218
    """:class:`UpdateIdentityError`"""
    LOCAL_IDENTITY = 219
    """:class:`LocalIdentityError`"""
    UPDATE_PENDING_BUDGET = 220
    """:class:`UpdatePendingBudgetError`"""
    EPHEMERAL = 300
    """:class:`EphemeralError`"""
    EPHEMERAL_DECRYPTION = 301
    """:class:`EphemeralDecryptionError`"""
    EPHEMERAL_NO_SESSION = 302
    """:class:`EphemeralNoSessionError`"""
    EPHEMERAL_REPLAY = 303
    """:class:`EphemeralReplayError`"""
    EPHEMERAL_AUTHOR_REJECTED = 304
    """:class:`EphemeralAuthorRejectedError`"""
    EPHEMERAL_TYPE = 305
    """:class:`EphemeralTypeError`"""
    EPHEMERAL_DOCUMENT_ID = 306
    """:class:`EphemeralDocumentIdError`"""
    EPHEMERAL_PARSE = 307
    """:class:`EphemeralParseError`"""
    EPHEMERAL_SIGNATURE = 308
    """:class:`EphemeralSignatureError`"""
    PRESENCE_PARSE = 310
    """:class:`PresenceParseError`"""
    PRESENCE_IMPERSONATION = 311
    """:class:`PresenceImpersonationError`"""
    EPHEMERAL_RATE = 312
    """:class:`EphemeralRateError`"""
    CREATE_SNAPSHOT = 401
    """:class:`CreateSnapshotError`"""
    CREATE_UPDATE = 501
    """:class:`CreateUpdateError`"""
    CREATE_EPHEMERAL = 601
    """:class:`CreateEphemeralError`"""
    MALFORMED_MESSAGE = 700
    """:class:`MalformedMessageError`"""
    UNSUPPORTED_VERSION = 701
    """:class:`UnsupportedVersionError`"""
    MESSAGE_TOO_LARGE = 702
    """:class:`MessageTooLargeError`"""
    INVALID_BASE64 = 703
    """:class:`InvalidBase64Error`"""
    CANONICAL_JSON = 704
    """:class:`CanonicalJsonError`"""
    INVALID_KEY = 705
    """:class:`InvalidKeyError`"""
    ENCODING = 799
    """:class:`EncodingError`"""
    SESSION = 800
    """:class:`SessionError`"""
    NO_ACTIVE_SNAPSHOT = 801
    """:class:`NoActiveSnapshotError`"""
    CONFIGURATION = 802
    """:class:`ConfigurationError`"""
    CRDT_ADAPTER = 803
    """:class:`CrdtAdapterError`"""
    LOCAL_STORE = 804
    """:class:`LocalStoreError`"""
    IDENTITY_IN_USE = 805
    """:class:`IdentityInUseError`"""
    SESSION_STATE = 807
    """:class:`SessionStateError`"""
    TRANSPORT = 900
    """:class:`TransportError`"""
    BROKER_UNAVAILABLE = 901
    """:class:`BrokerUnavailableError`"""
    PERMISSION_DENIED = 902
    """:class:`PermissionDeniedError`"""
    PAYLOAD_TOO_LARGE = 903
    """:class:`PayloadTooLargeError`"""
    STREAM_NOT_FOUND = 904
    """:class:`StreamNotFoundError`"""
    WRONG_LAST_SEQUENCE = 905
    """:class:`WrongLastSequenceError`"""
    BROKER_REQUEST = 906
    """:class:`BrokerRequestError`"""
    DOCUMENT_CLOSED = 907
    """:class:`DocumentClosedError`"""
    DUPLICATE_BATCH = 908
    """:class:`DuplicateBatchError`"""
    DOCUMENT_NOT_FOUND = 909
    """:class:`DocumentNotFoundError`"""
    STORAGE_LIMIT = 910
    """:class:`StorageLimitError`"""
    COMPARE_AND_SET_BUSY = 911
    """:class:`CompareAndSetBusyError`"""
    DUPLICATE_MISMATCH = 912
    """:class:`DuplicateMismatchError`"""
    ACCESS = 1000
    """:class:`AccessError`"""
    INVALID_SHARE_LINK = 1001
    """:class:`InvalidShareLinkError`"""
    WRONG_PASSPHRASE = 1002
    """:class:`WrongPassphraseError`"""
    MEMBERSHIP = 1003
    """:class:`MembershipError`"""
    NOT_A_MEMBER = 1004
    """:class:`NotAMemberError`"""
    WRONG_KEY = 1005
    """:class:`WrongKeyError`"""
    GROUP_TOO_LARGE = 1010
    """:class:`GroupTooLargeError`"""
    DEVICE_CERTIFICATE = 1011
    """:class:`DeviceCertificateError`"""
