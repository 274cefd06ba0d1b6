"""Online backup and restore of the stream that stores every document.

nats-py has no helpers for JetStream's stream snapshot and restore API, and the ``nats`` CLI
(``nats stream backup`` / ``restore``) may not be installed, so this module speaks the API
directly:

* :func:`backup_stream` asks the server for a snapshot of a running stream
  (``$JS.API.STREAM.SNAPSHOT.<stream>``) and writes what it sends (an s2-compressed tar of the
  stream's store, acknowledged chunk by chunk) to ``stream.tar.s2`` next to ``backup.json``
  (the stream's config and state at the snapshot), the file names ``nats stream backup`` uses.
* :func:`restore_stream` sends such a directory back (``$JS.API.STREAM.RESTORE.<stream>``) to a
  server that has no stream of that name. Stream sequences, subjects and message ids come back
  as they were: what clients remember (the last applied sequence, the sequence of a document's
  snapshot) stays valid, provided the backup holds everything clients have applied.

See ``docs/operations.md`` for the procedures and what was tested. Command line::

    python -m secsync.cli.operations backup  --server nats://host:4222 [--stream SECSYNC] DIR
    python -m secsync.cli.operations restore --server nats://host:4222 DIR
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secsync.errors import (
    BrokerRequestError,
    BrokerUnavailableError,
    TransportError,
)
from secsync.logs import get_logger
from secsync.transport import jetstream

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

__all__ = [
    "DATA_FILE",
    "METADATA_FILE",
    "StreamBackup",
    "backup_stream",
    "restore_stream",
]

log = get_logger("secsync.operations")

#: The stream's config and state at the time of the snapshot (JSON).
METADATA_FILE = "backup.json"
#: The snapshot itself, as the server sends it (s2-compressed tar), never decompressed here.
DATA_FILE = "stream.tar.s2"

_CHUNK_BYTES = 128 * 1024
_WINDOW_BYTES = 8 * 1024 * 1024
_STATUS = "Status"
_DESCRIPTION = "Description"
_END_OF_SNAPSHOT = "204"  # or no status at all: an empty chunk ends the snapshot


@dataclass(frozen=True, slots=True)
class StreamBackup:
    """What :func:`backup_stream` wrote."""

    stream: str
    directory: Path
    state: dict[str, Any]
    """The stream's state at the snapshot: ``messages``, ``first_seq``, ``last_seq``, ..."""
    bytes_written: int
    seconds: float


def _reply(msg: Msg, what: str) -> dict[str, Any]:
    """The JSON body of an API reply; errors raised as secsync transport errors."""
    return jetstream.json_reply(msg.data, subject=what)


async def backup_stream(
    nc: NATS,
    directory: str | Path,
    *,
    stream: str = "SECSYNC",
    timeout: float = 10.0,
) -> StreamBackup:
    """Snapshot the running ``stream`` into ``directory`` (created; its two files replaced).

    The snapshot is a consistent point in time: writes that arrive while it is sent are not in
    it. Clients keep reading and writing meanwhile. ``timeout`` bounds the wait for each chunk;
    the server gives up on its side after 5 s without an acknowledgement.
    """
    jetstream.validate_stream(stream)
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    data_path, meta_path = target / DATA_FILE, target / METADATA_FILE
    partial = data_path.with_suffix(".partial")
    started = time.monotonic()
    inbox = nc.new_inbox()
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_chunk(msg: Msg) -> None:
        queue.put_nowait(msg)

    what = f"snapshot of stream {stream}"
    written = 0
    sub = await nc.subscribe(inbox, cb=on_chunk, pending_msgs_limit=-1, pending_bytes_limit=-1)
    try:
        request = {
            "deliver_subject": inbox,
            "no_consumers": True,
            "chunk_size": _CHUNK_BYTES,
            "window_size": _WINDOW_BYTES,
        }
        with jetstream.translated(what, no_stream=f"no stream {stream}"):
            reply = await nc.request(
                f"{jetstream.API_PREFIX}.STREAM.SNAPSHOT.{stream}",
                json.dumps(request).encode(),
                timeout=timeout,
            )
        meta = _reply(reply, what)
        with partial.open("wb") as out:
            while True:
                try:
                    msg = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    raise BrokerUnavailableError(f"{what}: no chunk for {timeout} s") from None
                if not msg.data:
                    # nats-py keys the status line by an enum member: normalise to str keys
                    headers = jetstream.header_dict(msg.headers)
                    status = headers.get(_STATUS, "")
                    if status not in ("", _END_OF_SNAPSHOT):  # e.g. 408 "No Flow Response"
                        raise BrokerRequestError(
                            f"{what} failed: {status} {headers.get(_DESCRIPTION, '')}".strip(),
                            err_code=int(status) if status.isdigit() else None,
                        )
                    break
                out.write(msg.data)
                written += len(msg.data)
                if msg.reply:  # the server sends a window of chunks, then waits for these
                    await nc.publish(msg.reply, b"")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    partial.replace(data_path)
    state = meta.get("state") or {}
    meta_path.write_text(
        json.dumps({"config": meta.get("config"), "state": state}, indent=2), encoding="utf-8"
    )
    seconds = time.monotonic() - started
    log.info(
        "stream_backed_up",
        stream=stream,
        directory=str(target),
        messages=state.get("messages"),
        last_sequence=state.get("last_seq"),
        bytes=written,
        seconds=round(seconds, 3),
    )
    return StreamBackup(stream, target, state, written, seconds)


async def restore_stream(
    nc: NATS,
    directory: str | Path,
    *,
    timeout: float = 10.0,
    finish_timeout: float = 600.0,
) -> dict[str, Any]:
    """Restore a :func:`backup_stream` directory; returns the restored stream's state.

    The server must not have a stream of that name (delete a damaged one first). The stream
    comes back under its old name with its old config, sequences and message ids.
    ``finish_timeout`` bounds the server's work after the last chunk.
    """
    source = Path(directory)
    try:
        meta = json.loads((source / METADATA_FILE).read_text(encoding="utf-8"))
        config = meta["config"]
        stream = str(config["name"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TransportError(f"not a stream backup: {source} ({exc})") from None
    jetstream.validate_stream(stream)
    what = f"restore of stream {stream}"
    started = time.monotonic()
    with jetstream.translated(what):
        reply = await nc.request(
            f"{jetstream.API_PREFIX}.STREAM.RESTORE.{stream}",
            json.dumps({"config": config, "state": meta.get("state") or {}}).encode(),
            timeout=timeout,
        )
    deliver = _reply(reply, what).get("deliver_subject")
    if not isinstance(deliver, str) or not deliver:
        raise TransportError(f"{what}: the server named no subject for the data")
    sent = 0
    with jetstream.translated(what), (source / DATA_FILE).open("rb") as data:
        while chunk := data.read(_CHUNK_BYTES):
            ack = await nc.request(deliver, chunk, timeout=timeout)
            if ack.data:  # an empty answer acknowledges the chunk
                _reply(ack, what)
            sent += len(chunk)
        done = await nc.request(deliver, b"", timeout=finish_timeout)
    result = _reply(done, what)
    state: dict[str, Any] = result.get("state") or {}
    log.info(
        "stream_restored",
        stream=stream,
        directory=str(source),
        messages=state.get("messages"),
        last_sequence=state.get("last_seq"),
        bytes=sent,
        seconds=round(time.monotonic() - started, 3),
    )
    return state
