"""The package bugs the conformance suite found, named once for the xfail markers.

Each test marked ``xfail(strict=True, reason=BUG_n)`` asserts the correct behaviour; remove
the marker once the bug is fixed (a strict xfail that passes fails the run, as a reminder), and
move the bug to :data:`FIXED` so that the report keeps the record.
"""

SEPARATOR = " ++ then ++ "


def then(*bugs: str) -> str:
    """The reason of a test that one bug fails now and another will fail once it is fixed."""
    return SEPARATOR.join(bugs)


BUG_1 = (
    "bug 1: a snapshot rejected or lost in transit is never fetched again: updates on it are "
    "deferred without a deadline (DocumentSession._defer; no GapDetected/RecoveryNeeded), "
    "Document._react heals only codes 102/112/115, so the reader silently stops applying "
    "remote changes; its next snapshot then forks the stored history (its compare-and-set "
    "holds because _last_seq moved past the message it rejected)"
)
BUG_2 = (
    "bug 2: a message on the snapshot subject that clients reject (a replayed superseded "
    "snapshot 116, another document's snapshot 113, junk 700) becomes the subject's last "
    "message, so every writer's update fails the compare-and-set on the snapshot subject and "
    "is re-published without end, never stored (hundreds of times a second with the "
    "request/reply publish; once per publish_timeout with the pipelined one, see bug 6): the "
    "document is frozen for writing"
)
BUG_2B = (
    "bug 2b: a reader that opens the document after a superseded snapshot was stored again "
    "loads that replay as the latest snapshot (Document._fetch_latest trusts the last message "
    "on the snapshot subject) and shows stale content; its own updates on it are stored (the "
    "compare-and-set holds) and every other client rejects them (213)"
)
BUG_3 = (
    "bug 3: Document._fetch_latest decodes the last message on the snapshot subject and lets "
    "MalformedMessageError escape, so one junk message there makes client.open fail for every "
    "new reader (the document cannot be opened any more)"
)
BUG_4 = (
    "bug 4: Document._fetch_latest parses the Secsync-Parts header of the last snapshot "
    "message with int() unguarded: a stored message with 'Secsync-Parts: x' makes client.open "
    "raise ValueError (not a SecsyncError) for every new reader"
)
BUG_5 = (
    "bug 5: msgpack container headers are capped per container (by a fixed limit and/or the "
    "input length), not in total, so nested array headers each claiming as many items as the "
    "input has bytes make wire.decode, deserialize_changes and decode_presence allocate about "
    "40 MB for 5,000 bytes (80 MB before the cap by input length), where docs/protocol.md §4 "
    "promises that no input allocates more than its own size"
)
BUG_6 = (
    "bug 6: jetstream.publish_pipelined (which Document._put uses for every stored message) "
    "never sees an error acknowledgement: nats-py's publish_async raises the APIError "
    "(BadRequestError err_code=10071 'wrong last sequence') inside its reply handler and leaves "
    "the future pending, so every compare-and-set refusal becomes BrokerUnavailableError after "
    "publish_timeout and is retried forever; a client that lost a snapshot race, or whose "
    "update builds on a superseded snapshot, never stores anything again"
)
BUG_7 = (
    "bug 7: Document.resume_receiving() catches up and restarts the live consumer but never "
    "wakes the sender, so local changes re-queued by a snapshot applied during the catch-up "
    "(an update refused while receiving was paused, rebased onto the newer snapshot) stay "
    "unsent until something unrelated wakes it (a local edit, a live delivery, flush())"
)


# Found by this suite and fixed in the package since: (bug, the rows that found it).
FIXED: list[tuple[str, str]] = [
    (BUG_1, "T-snapshot-signature"),
    (BUG_2, "R-replay-snapshot, M-wrong-document-snapshot, M-junk-latest-snapshot"),
    (BUG_2B, "R-replay-snapshot-fresh-reader"),
    (BUG_3, "M-junk-latest-snapshot"),
    (BUG_4, "M-bad-parts-latest-snapshot"),
    (BUG_6, "R-cas-refusal, K-broker-sigkill"),
    (BUG_7, "R-cas-refusal"),
]
