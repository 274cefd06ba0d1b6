"""Events print readably: ids and keys short, payloads by size, errors with their code."""

from __future__ import annotations

import dataclasses

from secsync.errors import UpdateReplayError
from secsync.protocol import crypto, events
from secsync.protocol.encoding import b64encode
from secsync.protocol.messages import MessageKind
from secsync.transport import events as transport_events


def test_every_event_is_a_base_event_with_a_readable_repr() -> None:
    classes = [
        getattr(module, name)
        for module in (events, transport_events)
        for name in dir(module)
        if isinstance(getattr(module, name), type)
        and dataclasses.is_dataclass(getattr(module, name))
    ]
    assert len(classes) == 19  # 12 of the session, 7 of the transport
    for cls in classes:
        assert issubclass(cls, events.BaseEvent)
        assert "__repr__" not in cls.__dict__  # the readable one, not the dataclass one


def test_ids_and_keys_are_short_base64url_and_payloads_are_hidden() -> None:
    snapshot_id, author = crypto.generate_id(), crypto.SigningKeyPair.generate().public_key
    applied = events.SnapshotApplied(snapshot_id, author)
    assert repr(applied) == (
        f"SnapshotApplied(snapshot_id={b64encode(snapshot_id)[:8]}, "
        f"author={b64encode(author)[:8]}, recovered=False, rebased_changes=0)"
    )
    assert "\\x" not in repr(applied) and "b'" not in repr(applied)
    received = events.EphemeralReceived(author, b'{"cursor": "secret plaintext"}')
    assert "secret" not in str(received) and "<30 bytes>" in str(received)
    rejected = events.MessageRejected(UpdateReplayError("old"), MessageKind.UPDATE, author)
    assert "UpdateReplayError([214] old)" in str(rejected) and "kind=update" in str(rejected)
    # still plain frozen dataclasses
    assert applied == events.SnapshotApplied(snapshot_id, author)
    assert hash(applied) == hash(events.SnapshotApplied(snapshot_id, author))


def test_every_event_is_a_base_event_and_a_rejection_gives_its_code() -> None:
    import typing

    import secsync
    from secsync.errors import ErrorCode, SnapshotDecryptionError, UpdateReplayError
    from secsync.protocol import events as events_module

    union = typing.get_args(events_module.Event)
    defined = [
        value
        for value in vars(events_module).values()
        if isinstance(value, type) and value.__module__ == events_module.__name__
    ]
    assert set(union) == {cls for cls in defined if cls is not events_module.BaseEvent}
    assert all(issubclass(cls, events_module.BaseEvent) for cls in union)
    rejected = events_module.MessageRejected(SnapshotDecryptionError())
    assert rejected.reason is ErrorCode.SNAPSHOT_DECRYPTION
    assert rejected.reason == 101
    assert events_module.MessageRejected(UpdateReplayError("again")).reason == 214
    assert secsync.BaseEvent is events_module.BaseEvent
    transport_defined = {
        value
        for value in vars(transport_events).values()
        if isinstance(value, type) and value.__module__ == transport_events.__name__
    }
    assert set(typing.get_args(transport_events.DocumentEvent)) == set(union) | transport_defined
    assert secsync.DocumentEvent is transport_events.DocumentEvent
    assert secsync.ErrorCode is ErrorCode
