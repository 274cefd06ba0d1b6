"""All options of secsync in one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from secsync.errors import ConfigurationError

ChangeEncoding = Literal["native", "secsync-json"]
LiveConsumers = Literal["per_document", "per_shard"]


@dataclass(frozen=True, slots=True)
class SecsyncConfig:
    """Options of a document session (and, later, of its transport).

    Every bound exists so that a hostile peer or broker cannot make a client grow without
    limit; the defaults suit interactive documents up to tens of megabytes.
    """

    # --- snapshots --------------------------------------------------------------------------
    snapshot_after_updates: int = 500
    """Write a snapshot once this many updates were stored on the active snapshot (0: never)."""
    snapshot_after_bytes: int = 4 * 1024 * 1024
    """... or once their ciphertexts add up to this many bytes (0: never)."""
    snapshots_per_author_per_minute: float = 30.0
    """Snapshots of one author that a receiver checks and applies per minute, after a burst
    of ``snapshot_burst_per_author``; faster ones are coalesced (the author's newest is held
    and processed when the rate allows, older held ones are dropped, ``SnapshotRateError``).
    Honest clients write a snapshot per ``snapshot_after_updates`` updates or a membership
    change, far below this. 0: no limit."""
    snapshot_burst_per_author: int = 10
    """Snapshots of one author taken at once before ``snapshots_per_author_per_minute`` holds."""
    load_snapshot_messages: int = 256
    """Stored snapshot messages (parts count one each) that loading may read back from the
    end of the snapshot subject while looking for one to load; past it, opening fails with
    ``SnapshotSearchError`` (119) and writes nothing."""
    load_snapshot_bytes: int = 256 * 1024 * 1024
    """... and their bytes, at most (the largest snapshot a client reassembles must fit)."""
    load_chain_window: int = 32
    """With a key provider that has membership chains (closed groups), loading weighs at
    least this many stored snapshot messages before the chosen one (or all, if fewer), so a
    stale or forked chain is told by the chains stored before it."""

    # --- updates ----------------------------------------------------------------------------
    max_update_plaintext_bytes: int = 512 * 1024
    """Local changes are split over several updates above this size."""
    change_encoding: ChangeEncoding = "native"
    """How an update's changes are serialized: ``native`` (msgpack) or ``secsync-json``
    (a JSON array of base64url strings, as secsync JS's React hooks do). Receivers accept both."""

    # --- receiving ----------------------------------------------------------------------------
    verify_threads: int = 0
    """Worker threads that help ``DocumentSession.receive_many`` decode, verify and open a
    batch before the session processes it, in order on the calling thread, with the same
    results, errors and events as without them. libsodium releases the GIL and the calling
    thread takes part, so one less than the number of cores is the useful value (1 on 2 cores);
    0 does it all on the calling thread. A client shares one such pool between its documents; a
    ``DocumentSession`` used directly needs one given (``verify_executor``), the core starts no
    thread."""

    legacy_crdt_ids: bool = True
    """Accept updates whose Yjs client ids or Automerge actors are not bound to a user
    (``secsync.protocol.crdt_identity``): the random ids of documents written before the
    binding and of clients without it (JavaScript). Ids bound to a user are always checked
    against the update's signer. Off, such updates are refused (``UpdateIdentityError``, 218)
    and a session refuses to write under an unbound Yjs id (``LocalIdentityError``, 219): all
    participants of a document must then agree, or the writers without bound ids diverge."""

    # --- bounds on untrusted input ----------------------------------------------------------
    max_message_bytes: int = 64 * 1024 * 1024
    max_queued_updates_per_author: int = 10_000
    """Out-of-order updates waiting for a predecessor, per author."""
    max_clock_digests: int = 10_000
    """Per document, how many ``(author, clock)`` digests of accepted updates on the active
    snapshot are remembered to tell a clock collision (one identity used by two clients) from
    a replay (see ``secsync.protocol.collisions``)."""
    max_deferred_updates: int = 10_000
    """Updates waiting for a snapshot that has not arrived yet."""
    max_queued_bytes_per_author: int = 16 * 1024 * 1024
    """Bytes of updates one author may have waiting (for a predecessor or a snapshot)."""
    max_queued_bytes: int = 64 * 1024 * 1024
    """Bytes of waiting updates in all, whoever wrote them: a flood under many fresh
    identities is refused past this (``UpdateQueueFullError``), never kept."""
    max_waiting_authors: int = 1_000
    """Distinct authors that may have updates waiting at once."""
    superseded_snapshots_kept: int = 16
    """How many superseded snapshots are remembered to recognize their late updates (and how
    many snapshots whose parent has not arrived are held)."""
    max_held_snapshot_bytes: int = 64 * 1024 * 1024
    """Bytes of snapshots held because their parent has not arrived yet, in all: past this the
    oldest are let go (``MessageRejected`` with ``SnapshotBudgetError``, 117)."""
    max_pending_bytes: int = 4 * 1024 * 1024
    """Bytes of received CRDT content the document may keep waiting for dependencies it does
    not have (Yjs "pending" structs, kept by yrs for the document's life and about 14 times
    their size in memory): an update that would go past it is refused
    (``UpdatePendingBudgetError``, 220). Adapters without the accounting ignore it."""
    snapshot_check_bytes: int = 16 * 1024 * 1024
    """Bytes of the changes of updates applied on the active snapshot kept to check the next
    snapshot against (an honest snapshot leaves out only updates concurrent with it, see
    ``SnapshotIncomplete``). Past this the oldest are let go, and a snapshot that would need
    them is not checked for other authors' content (our own is checked all the same)."""

    # --- healing ----------------------------------------------------------------------------
    gap_refetch_after: float = 2.0
    """Seconds an update may wait for its predecessor before the transport is asked to fetch."""
    gap_recover_after: float = 10.0
    """Seconds after which an unfilled gap asks for recovery from the latest snapshot."""

    # --- broker and transport ------------------------------------------------------------
    stream_name: str = "SECSYNC"
    """The JetStream stream that stores every document's snapshots and updates."""
    subject_root: str = "secsync"
    """First subject token of every document subject (see ``secsync.transport.subjects``)."""
    provision_stream: bool = True
    """Create or update the stream on connect. Turn off where clients lack the rights."""
    stream_replicas: int = 1
    stream_placement_cluster: str | None = None
    """Cluster the stream is placed in (its home region); ``None`` lets the broker choose."""
    stream_placement_tags: tuple[str, ...] = ()
    """Server tags the stream's replicas must carry, e.g. ``("region:eu",)``."""
    read_stream: str | None = None
    """Stream to read documents from: a mirror of ``stream_name`` near this client (mirrors
    keep the origin's sequences). Loading, catch-up and live delivery use it; writes, and the
    check whether an earlier write landed, still go to ``stream_name``. ``None``: read the
    stream itself. See ``secsync.transport.jetstream.ensure_mirror``."""
    max_consumers: int = 10_000
    """Explicit consumer limit of the stream; nats-server 2.15 defaults to 1000 per stream."""
    stream_max_bytes: int = 0
    """Bound on the bytes the stream stores, for every document together (0: none at the
    stream; the account's JetStream quota still applies). A full stream refuses new messages
    (``StorageLimitError``) instead of dropping the oldest, which would be other documents'
    history. Set by whoever provisions the stream."""
    stream_max_msg_size: int = 0
    """Largest message (payload and headers) the stream stores (0: the broker's
    ``max_payload`` is the bound). Set by whoever provisions the stream; clients that write to
    it need ``max_part_bytes`` at most this less 4 KiB of header room, or their large updates
    and snapshots are refused (``PayloadTooLargeError``)."""
    duplicate_window: float = 120.0
    """Seconds in which a retried publish with the same message id is stored once."""
    batch_interval: float = 0.02
    """Seconds local changes are collected after the first one, so a burst becomes one update."""
    poll_interval: float = 0.05
    """How often documents without change notifications (Automerge) are checked for edits."""
    max_in_flight: int = 256
    """Updates published without waiting for their acknowledgement, at most."""
    publish_timeout: float = 5.0
    """Bound on every publish acknowledgement (nats-py's own futures have none)."""
    request_timeout: float = 5.0
    open_timeout: float = 30.0
    """Seconds loading a document may go without progress (a page of messages, a read of the
    snapshot search) before it fails with ``BrokerUnavailableError``; a large document that
    keeps loading never times out."""
    retry_initial: float = 0.1
    retry_max: float = 5.0
    """Exponential backoff, with jitter, between publish retries while the broker is away, and
    between attempts to heal a gap or recover that failed for a broker-side reason."""
    busy_retry_initial: float = 0.002
    busy_retry_max: float = 0.05
    """Backoff, with jitter, before the same publish is sent again after a clustered stream
    answered 10164 (another compare-and-set on the document was still being stored)."""
    idle_heartbeat: float = 1.0
    """Heartbeat of the live consumer; two missed ones re-create it from the last sequence."""
    live_consumers: LiveConsumers = "per_document"
    """``"per_document"``: every open document follows the stream with a consumer of its own
    (what per-document permissions allow). ``"per_shard"``: the client's documents share one
    consumer per shard of the stream, at most sixteen whatever their number (a service that
    follows thousands of documents; it must be allowed to consume whole shards). See
    ``secsync.transport.live``."""
    presence: bool = True
    """Take part in presence (cursors, awareness). ``False``: no ephemeral subscription and no
    presence task per document (a backend that only reads and writes content)."""
    max_part_bytes: int = 0
    """Largest stored message part; 0 means the broker's payload limit less header room."""
    presence_interval: float = 0.05
    """Presence (cursor) changes are sent at most this often; a fast typist does not flood."""
    presence_heartbeat: float = 2.0
    """An unchanged presence state is sent again this often, so peers keep showing it."""
    presence_timeout: float = 6.0
    """A peer not heard from for this long is removed (no ghost cursors)."""
    presence_max_bytes: int = 4096
    """A peer's presence payload larger than this is refused unread (at most 64 KiB)."""
    ephemeral_per_second: float = 100.0
    """Ephemeral (presence) messages of one author whose signature a receiver checks per
    second, after a burst of as many; the rest are dropped unchecked (counted in
    ``session.ephemeral.dropped``). 0: no limit."""
    presence_receive_interval: float = 0.04
    """A peer's presence states are taken at most this often; faster ones are coalesced (the
    latest wins), so a flooding peer costs one state per interval. Keep it at or below the
    senders' ``presence_interval``."""
    store_path: str | None = None
    """SQLite file for offline work (local-first): documents, outbox and sequences survive
    restarts and the broker may be absent (``~`` is expanded). ``None`` keeps everything in
    memory."""
    checkpoint_interval: float = 1.0
    """Seconds between full local checkpoints; single changes are logged at once regardless."""
    event_queue_size: int = 10_000
    """Events kept for the application; the oldest are dropped beyond this."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ConfigurationError(f"{f.name} must not be negative")
        if self.live_consumers not in ("per_document", "per_shard"):
            raise ConfigurationError("live_consumers must be 'per_document' or 'per_shard'")
        if self.change_encoding not in ("native", "secsync-json"):
            raise ConfigurationError("change_encoding must be 'native' or 'secsync-json'")
        if self.gap_recover_after < self.gap_refetch_after:
            raise ConfigurationError("gap_recover_after must not be below gap_refetch_after")
        if 0 < self.stream_max_bytes < 1024 * 1024:
            raise ConfigurationError("stream_max_bytes must be 0 (none) or at least 1 MiB")
        if 0 < self.stream_max_msg_size < 64 * 1024:
            raise ConfigurationError("stream_max_msg_size must be 0 (none) or at least 64 KiB")
        if self.busy_retry_max > 1.0 or self.busy_retry_initial > self.busy_retry_max:
            raise ConfigurationError("busy_retry_initial <= busy_retry_max <= 1.0 does not hold")
        if self.max_update_plaintext_bytes < 1024:
            raise ConfigurationError("max_update_plaintext_bytes must be at least 1024")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Options of the WebSocket gateway for secsync JS clients (:mod:`secsync.gateway`).

    The document options (stream, subjects, timeouts, message bounds) are the
    :class:`SecsyncConfig` the gateway connects with; these are the gateway's own.
    """

    allowed_origins: tuple[str, ...] | None = None
    """``Origin`` headers a WebSocket may come from (exact, e.g. ``"https://app.example"``);
    one with another ``Origin`` is refused before the upgrade (HTTP 403). Browsers always send
    it, so this stops pages of other sites; a connection without one (not a browser: it could
    claim any origin anyway) is let through. ``None``: any origin, for gateways that only
    non-browser clients reach or that sit behind a proxy that checks."""
    max_frame_bytes: int = 16 * 1024 * 1024
    """Largest frame a client may send; a larger one is answered ``document-error`` and
    closed. The ASGI server's own limit (uvicorn's ``ws_max_size``) must be at least this."""
    max_queued_frames: int = 10_000
    """Frames waiting to be written to one client: a client that reads slower than its
    document changes is closed past this (it reconnects and loads again)."""
    max_held_updates: int = 1_024
    """Per document, updates stored ahead of their predecessor that the view holds."""
    access_timeout: float = 10.0
    """Seconds ``has_access`` may take; past it (or when it raises) access is denied."""
    load_timeout: float = 30.0
    """Seconds a document may take to be read from the stream before its first client is
    answered ``document-error``."""
    idle_document_seconds: float = 30.0
    """How long a document's view stays after its last client left, for the next one."""
    missing_documents: Literal["create", "not-found"] = "create"
    """A document with nothing stored: ``create`` serves it as new (its first client writes
    the first snapshot); ``not-found`` answers ``document-not-found`` (the reference server's
    behaviour for documents its application did not create)."""

    def __post_init__(self) -> None:
        for name in ("max_frame_bytes", "max_queued_frames", "max_held_updates"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1")
        for name in ("access_timeout", "load_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be positive")
        if self.idle_document_seconds < 0:
            raise ConfigurationError("idle_document_seconds must not be negative")
        if self.missing_documents not in ("create", "not-found"):
            raise ConfigurationError("missing_documents must be 'create' or 'not-found'")
