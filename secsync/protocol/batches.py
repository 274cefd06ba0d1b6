"""Receiving a batch: :meth:`~secsync.protocol.session.DocumentSession.receive_many` takes
its messages in parts, decodes and checks each part first (on ``config.verify_threads``
threads of the session's pool too, see :mod:`secsync.protocol.prefetch`), then processes
each message in order as it would be processed alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final

from secsync.protocol import crypto
from secsync.protocol.events import Event
from secsync.protocol.messages import Message, ProofChainEntry, Snapshot
from secsync.protocol.prefetch import Prepared, check_messages, decode_messages, prepare_all

if TYPE_CHECKING:
    from secsync.protocol.session import DocumentSession

Received = Message | bytes

# receive_many takes a batch in parts of this many messages: each part is decoded and checked
# (on verify_threads threads too) before it is processed, so that at most this many are held.
BATCH_CHUNK: Final = 512
_SNAPSHOT_HEAD: Final = b"\x9c\x01\x01"  # a native snapshot: [1, 1, ... 12 items]


def next_part(iterator: Iterator[Message | bytes]) -> list[Message | bytes]:
    """The next part of a batch for :func:`receive_ahead`: up to
    ``BATCH_CHUNK`` messages, ending after a snapshot (updates after it are opened ahead
    only once it is active and its key known)."""
    part: list[Message | bytes] = []
    for item in iterator:
        part.append(item)
        if len(part) >= BATCH_CHUNK or isinstance(item, Snapshot):
            break
        if type(item) is bytes and item[:3] == _SNAPSHOT_HEAD:
            break
    return part


def receive_ahead(
    session: DocumentSession,
    items: Sequence[Received],
    proof_chain: Sequence[ProofChainEntry],
    now: float,
    events: list[Event],
) -> None:
    """:meth:`receive_many`'s loop over a part of a batch, with the pure part of the work
    (decoding, signature checks, opening updates on the active snapshot) done first, on
    ``config.verify_threads`` threads too. Each message is then processed in order as it
    would be alone, taking what was computed ahead instead of computing it (see
    :meth:`_verify`, :meth:`_apply_update`): the same events, errors and state."""
    doc_id, max_bytes = session.doc_id, session.config.max_message_bytes
    active = session._active
    # Updates on the active snapshot are opened ahead with its key; _apply_update uses
    # what was opened only if that is still the key it opens them with.
    snapshot_id = active.info.snapshot_id if active is not None else None
    cipher = (
        active.cipher if active is not None and isinstance(active.cipher, crypto.Cipher) else None
    )

    threads = session.config.verify_threads
    pool = session._verify_executor if threads > 0 else None
    # Decoding is Python through and through: done here first, it does not contend for
    # the GIL with the workers' checks, which spend most of their time in libsodium.
    decoded = decode_messages(items, doc_id, max_bytes)

    def check(part: Sequence[Prepared]) -> list[Prepared]:
        return check_messages(part, snapshot_id, cipher)

    prepared = prepare_all(decoded, check, pool, threads)
    outer = session._ahead
    try:
        for item, ahead in zip(items, prepared, strict=True):
            if ahead.message is not None:
                session._ahead = ahead
                session._dispatch(ahead.message, proof_chain, now, events)
            elif ahead.error is not None:
                events.append(session._rejected(ahead.error, None, None))
            else:  # nothing computed ahead: exactly as alone
                session._ahead = None
                session._receive_item(item, proof_chain, now, events)
    finally:
        session._ahead = outer
