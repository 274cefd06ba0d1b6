"""receive_many over a batch (decoded and checked ahead, on verification threads or not) has
exactly the outcome of receiving the same messages one at a time: the same events in the same
order, the same typed errors for the same messages, the same document and session state.

Every batch mixes genuine updates with forged signatures, broken commitment tags, broken AEAD
output, undecodable bytes and content, replays, reordering, updates of unknown, superseded and
new snapshots (with their own keys), other documents, refused authors, ephemeral messages and
our own updates; it is fed in many orders.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pycrdt
import pytest

from secsync.config import SecsyncConfig
from secsync.errors import SecsyncError
from secsync.protocol import batches, crypto, sealing, wire
from secsync.protocol import session as session_module
from secsync.protocol.encoding import JsonValue, b64encode
from secsync.protocol.events import Event, MessageRejected, UpdateApplied
from secsync.protocol.messages import (
    EphemeralPublicData,
    Message,
    Snapshot,
    SnapshotInfo,
    Update,
    UpdatePublicData,
)
from secsync.protocol.policy import AllowList
from secsync.protocol.session import DocumentSession
from tests.factories import DOC_ID, make_snapshot, make_update, plain_yjs_doc

MASTER = bytes(range(32))


class PerSnapshotKeys:
    """A different key for every snapshot (as key rotation gives), derived from its id."""

    def snapshot_key(self, snapshot: SnapshotInfo) -> bytes:
        return hashlib.blake2b(snapshot.snapshot_id, key=MASTER, digest_size=32).digest()

    def new_snapshot_key(self, snapshot_id: bytes) -> tuple[bytes, Mapping[str, JsonValue]]:
        return hashlib.blake2b(snapshot_id, key=MASTER, digest_size=32).digest(), {}


KEYS = PerSnapshotKeys()
ME = crypto.SigningKeyPair.from_secret(bytes([1] * 32))
ALICE = crypto.SigningKeyPair.from_secret(bytes([2] * 32))
BOB = crypto.SigningKeyPair.from_secret(bytes([3] * 32))
MALLORY = crypto.SigningKeyPair.from_secret(bytes([4] * 32))  # not a writer


def key_of(snapshot: Snapshot) -> bytes:
    return KEYS.snapshot_key(snapshot.info())


class Text:
    """A Yjs text and the updates that typing into it produces."""

    def __init__(self, base: bytes | None = None) -> None:
        self.doc: pycrdt.Doc = plain_yjs_doc()
        self.text = self.doc.get("text", type=pycrdt.Text)
        if base:
            self.doc.apply_update(base)

    def type(self, chars: str) -> bytes:
        before = self.doc.get_state()
        self.text.insert(len(self.text), chars)
        return self.doc.get_update(before)


def update(
    author: crypto.SigningKeyPair,
    snapshot: Snapshot,
    clock: int,
    changes: list[bytes],
    *,
    doc_id: str = DOC_ID,
    plaintext: bytes | None = None,
) -> Update:
    if plaintext is None:
        return make_update(author, snapshot, clock, changes, key=key_of(snapshot), doc_id=doc_id)
    public = UpdatePublicData(
        doc_id=doc_id, pub_key=author.public_key, ref_snapshot_id=snapshot.snapshot_id, clock=clock
    )
    return sealing.seal(public, plaintext, key_of(snapshot), author)


def forged_signature(message: Update) -> Update:
    signature = bytes([message.signature[0] ^ 1]) + message.signature[1:]
    return Update(message.nonce, message.ciphertext, signature, public_data=message.public_data)


def resigned(author: crypto.SigningKeyPair, message: Update, ciphertext: bytes) -> Update:
    """``message`` with another ciphertext, signed again by its author (a valid signature)."""
    aad = message.public_data.aad()
    signature = crypto.sign_message(
        author, crypto.DOMAIN_UPDATE, b64encode(ciphertext), b64encode(message.nonce), aad
    )
    return Update(message.nonce, ciphertext, signature, public_data=message.public_data)


def broken_tag(author: crypto.SigningKeyPair, message: Update) -> Update:
    ciphertext = bytes([message.ciphertext[0] ^ 1]) + message.ciphertext[1:]
    return resigned(author, message, ciphertext)


def broken_aead(author: crypto.SigningKeyPair, message: Update, key: bytes) -> Update:
    """A correct commitment tag over AEAD output that does not authenticate."""
    aead = message.ciphertext[crypto.TAG_BYTES : -1] + bytes([message.ciphertext[-1] ^ 1])
    aad = message.public_data.aad()
    tag = crypto.commitment_tag(key, b64encode(message.nonce), b64encode(aead), aad)
    return resigned(author, message, tag + aead)


def scenario() -> tuple[Snapshot, list[Message | bytes]]:
    """The snapshot a reader holds, and a batch of everything that can arrive after it."""
    root_text = Text()
    root_text.type("root ")
    base = root_text.doc.get_update()
    root = make_snapshot(
        ALICE, base, key=KEYS.snapshot_key(_info_of_id(b"r" * 24)), snapshot_id=b"r" * 24
    )
    alice, bob = Text(base), Text(base)
    a = [update(ALICE, root, c, [alice.type(f"a{c} ")]) for c in range(6)]
    b = [update(BOB, root, c, [bob.type(f"b{c} ")]) for c in range(4)]
    mine = update(ME, root, 0, [Text(base).type("me ")])
    child_text = Text(base)
    for message in [*a[:3], mine]:  # everything it claims (a snapshot lacking it is lossy)
        child_text.doc.apply_update(sealing_open(message))
    child = make_snapshot(
        BOB,
        child_text.doc.get_update(),
        parent=root,
        clocks={ALICE.public_key: 2, ME.public_key: 0},
        key=KEYS.snapshot_key(_info_of_id(b"c" * 24)),
        snapshot_id=b"c" * 24,
    )
    on_child = [update(ALICE, child, c, [child_text.type(f"c{c} ")]) for c in range(3)]
    root_key = key_of(root)
    batch: list[Message | bytes] = [
        *(wire.encode(m, include_doc_id=False) for m in a[:2]),
        b[1],  # waits for b[0]
        wire.encode(b[0]),
        forged_signature(a[2]),
        wire.encode(a[2]),
        wire.encode(a[2]),  # replay
        broken_tag(BOB, b[2]),
        broken_aead(BOB, b[2], root_key),
        wire.encode(b[2], include_doc_id=False),
        update(BOB, root, 3, [], plaintext=b"\xc1 not a change list"),  # spends clock 3
        update(BOB, root, 4, [b"\x05garbage the CRDT refuses"]),  # and this one 4
        update(ALICE, root, 3, [alice.type("elsewhere")], doc_id="another document"),
        update(MALLORY, root, 0, [Text(base).type("mallory")]),
        wire.encode(mine),
        b"\x93\x01\x02\x03",
        b"\x9a\x01\x02" + bytes(30),
        wire.encode(forged_signature(a[3]), include_doc_id=False),
        wire.encode(a[3], include_doc_id=False),
        wire.encode(on_child[1], include_doc_id=False),  # deferred until the child arrives
        sealing.seal(EphemeralPublicData(DOC_ID, BOB.public_key), b"\x00", root_key, BOB),
        wire.encode(on_child[0]),  # deferred as well
        child,
        wire.encode(a[4]),  # on a superseded snapshot now, included in the child? no: clock 4
        wire.encode(a[1]),  # superseded and included
        wire.encode(on_child[2]),
        forged_signature(on_child[2]),
        wire.encode(b[3]),  # clock 3 was spent: a replay
    ]
    return root, batch


def _info_of_id(snapshot_id: bytes) -> SnapshotInfo:
    return SnapshotInfo(snapshot_id=snapshot_id, ciphertext_hash=b"", parent_snapshot_proof=b"")


def sealing_open(message: Update) -> bytes:
    from secsync.protocol.changes import deserialize_changes

    (change,) = deserialize_changes(sealing.open_message(message, key_of_ref(message)))
    return change


def key_of_ref(message: Update) -> bytes:
    return KEYS.snapshot_key(_info_of_id(message.public_data.ref_snapshot_id))


def reader(config: SecsyncConfig, executor: Any = None) -> tuple[DocumentSession, pycrdt.Text]:
    doc: pycrdt.Doc = plain_yjs_doc()
    text = doc.get("text", type=pycrdt.Text)
    session = DocumentSession(
        DOC_ID,
        ME,
        KEYS,
        doc,
        config=config,
        policy=AllowList([ME.public_key, ALICE.public_key, BOB.public_key]),
        verify_executor=executor,
    )
    return session, text


def normalized(events: Sequence[Event]) -> list[Any]:
    out: list[Any] = []
    for event in events:
        if isinstance(event, MessageRejected):
            error = event.error
            out.append(
                ("rejected", type(error), error.code, error.message, event.kind, event.author)
            )
        else:
            out.append(event)
    return out


def state(session: DocumentSession, text: pycrdt.Text) -> Any:
    exported = session.export_state()
    return (
        str(text),
        session.update_clocks,
        session.active_snapshot,
        exported,
        [wire.encode(m) for m in session.data_to_send()],
        session.next_deadline(),
    )


def one_by_one(root: Snapshot, batch: Sequence[Message | bytes]) -> tuple[list[Any], Any]:
    session, text = reader(SecsyncConfig())
    events = session.load(root, now=100.0)
    for item in batch:
        events += session.receive(item, now=100.0)
    return normalized(events), state(session, text)


def in_one_batch(
    root: Snapshot, batch: Sequence[Message | bytes], config: SecsyncConfig, executor: Any = None
) -> tuple[list[Any], Any]:
    if executor is None and config.verify_threads:
        with ThreadPoolExecutor(max_workers=config.verify_threads) as pool:
            return in_one_batch(root, batch, config, pool)
    session, text = reader(config, executor)
    try:
        events = session.load(root, now=100.0)
        events += session.receive_many(batch, now=100.0)
        return normalized(events), state(session, text)
    finally:
        session.close()


CONFIGS = [
    pytest.param(SecsyncConfig(), id="no threads"),
    pytest.param(SecsyncConfig(verify_threads=1), id="1 thread"),
    pytest.param(SecsyncConfig(verify_threads=3), id="3 threads"),
]


def test_the_scenario_exercises_every_outcome() -> None:
    root, batch = scenario()
    events, final = one_by_one(root, batch)
    codes = {e[2] for e in events if isinstance(e, tuple)}
    assert {201, 203, 204, 211, 212, 213, 214, 215, 216, 307, 700} <= codes, codes
    assert sum(isinstance(e, UpdateApplied) for e in events) >= 10
    assert "c2" in final[0] and "a3" in final[0] and "b2" in final[0]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("seed", range(12))
def test_batches_have_the_outcome_of_one_message_at_a_time(
    config: SecsyncConfig, seed: int
) -> None:
    root, batch = scenario()
    if seed:
        random.Random(seed).shuffle(batch)
    expected = one_by_one(root, batch)
    assert in_one_batch(root, batch, config) == expected


@pytest.mark.parametrize("config", CONFIGS)
def test_a_long_batch_across_parts_and_a_new_snapshot(config: SecsyncConfig) -> None:
    """More than BATCH_CHUNK messages, the snapshot in the middle of a part: updates after it
    were opened ahead with the old key, or not at all."""
    root, _ = scenario()
    alice = Text(sealing.open_message(root, key_of(root)))  # on the root's content
    updates: list[Message | bytes] = []
    for clock in range(session_module.BATCH_CHUNK + 100):
        message = update(ALICE, root, clock, [alice.type(f"{clock} ")])
        if clock % 37 == 5:
            updates.append(forged_signature(message))
        if clock % 41 == 7:
            updates.append(broken_tag(ALICE, message))
        updates.append(wire.encode(message, include_doc_id=False))
    child = make_snapshot(
        BOB,
        alice.doc.get_update(),
        parent=root,
        clocks={ALICE.public_key: 300},
        key=KEYS.snapshot_key(_info_of_id(b"n" * 24)),
        snapshot_id=b"n" * 24,
    )
    bob = Text(alice.doc.get_update())
    after = [update(BOB, child, c, [bob.type(f"B{c} ")]) for c in range(40)]
    batch = updates[:301] + [child] + [wire.encode(m) for m in after] + updates[301:]
    expected = one_by_one(root, batch)
    assert in_one_batch(root, batch, config) == expected
    assert "B39 " in expected[1][0]


class RecordingPool(ThreadPoolExecutor):
    def __init__(self, workers: int) -> None:
        super().__init__(max_workers=workers, thread_name_prefix="recording")
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def test_verification_runs_on_the_given_pool_and_outside_the_calling_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: set[str] = set()
    original = batches.check_messages

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.add(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(batches, "check_messages", recording)
    root, batch = scenario()
    batch = batch * 3
    expected = one_by_one(root, batch)
    with RecordingPool(2) as pool:
        assert in_one_batch(root, batch, SecsyncConfig(verify_threads=2), pool) == expected
        assert pool.submitted >= 2
    assert any(name.startswith("recording") for name in threads), threads


def test_a_busy_or_closed_pool_only_slows_down() -> None:
    root, batch = scenario()
    expected = one_by_one(root, batch)
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as busy:
        busy.submit(release.wait, 10)  # occupies the only worker
        assert in_one_batch(root, batch, SecsyncConfig(verify_threads=2), busy) == expected
        release.set()
    closed = ThreadPoolExecutor(max_workers=1)
    closed.shutdown()
    assert in_one_batch(root, batch, SecsyncConfig(verify_threads=2), closed) == expected


def test_the_session_starts_no_thread_without_a_pool() -> None:
    root, batch = scenario()
    expected = one_by_one(root, batch)
    before = set(threading.enumerate())
    session, text = reader(SecsyncConfig(verify_threads=2))
    events = session.load(root, now=100.0)
    events += session.receive_many(batch, now=100.0)
    assert set(threading.enumerate()) == before
    assert (normalized(events), state(session, text)) == expected
    session.close()
    session.close()  # twice is fine


def test_messages_given_decoded_and_generators_are_taken_alike() -> None:
    root, batch = scenario()
    decoded: list[Message | bytes] = []
    for item in batch:
        try:
            decoded.append(wire.decode(item, doc_id=DOC_ID) if isinstance(item, bytes) else item)
        except SecsyncError:
            decoded.append(item)
    expected = one_by_one(root, decoded)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for config, executor in ((SecsyncConfig(), None), (SecsyncConfig(verify_threads=2), pool)):
            session, text = reader(config, executor)
            events = session.load(root, now=100.0)
            events += session.receive_many((m for m in decoded), now=100.0)
            assert (normalized(events), state(session, text)) == expected
            session.close()


def test_what_was_computed_ahead_counts_only_for_its_message_and_its_key() -> None:
    root, _ = scenario()
    alice = Text()
    genuine = update(ALICE, root, 0, [alice.type("x")])
    copy = wire.decode(wire.encode(genuine), doc_id=DOC_ID)
    session, text = reader(SecsyncConfig())
    session.load(root, now=100.0)
    stale = session_module.Prepared()
    stale.message = genuine
    stale.aad = genuine.public_data.aad_b64()
    stale.valid = False  # a wrong verdict, to see whether it is used
    stale.cipher = crypto.Cipher(bytes(32))  # another key than the active snapshot's
    stale.failure = "invalid robustness tag"
    events: list[Event] = []
    session._ahead = stale
    session._dispatch(copy, (), 100.0, events)  # another message object: checked afresh
    assert isinstance(events[-1], UpdateApplied)
    assert "x" in str(text)
    stale.message = genuine
    stale.valid = True
    second = update(ALICE, root, 1, [alice.type("y")])
    stale.message = second
    stale.aad = second.public_data.aad_b64()
    session._dispatch(second, (), 100.0, events)  # its own verdict, but not its key: opened
    assert isinstance(events[-1], UpdateApplied)
    session._ahead = None
