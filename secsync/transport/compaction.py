"""Compaction: drop what the latest snapshot of a document supersedes.

A privileged operation (it needs the right to purge the stream), run by an operator or a
service, never by ordinary clients. Clients keep working while it runs: everything they need
to load — the latest snapshot and the updates after it — stays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from secsync.config import SecsyncConfig
from secsync.errors import BrokerRequestError, BrokerUnavailableError, SecsyncError
from secsync.transport import chunks, jetstream
from secsync.transport.subjects import DocumentSubjects


@dataclass(frozen=True, slots=True)
class CompactionResult:
    doc_id: str
    kept_from_sequence: int | None
    """First stream sequence still stored for the document (its latest snapshot's first part)."""
    purged: int
    """Messages removed."""


async def compact_document(
    nc: Any, doc_id: str, *, config: SecsyncConfig | None = None
) -> CompactionResult:
    """Purge the document's snapshots and updates stored before its latest snapshot."""
    config = config or SecsyncConfig()
    subjects = DocumentSubjects.of(doc_id, config.subject_root)
    stream = config.stream_name
    last = await jetstream.last_message(
        nc.jetstream(), stream, subjects.snapshot, timeout=config.request_timeout
    )
    if last is None:
        return CompactionResult(doc_id, None, 0)
    first = last.sequence - int(last.headers.get(chunks.PARTS_HEADER, "1")) + 1
    purged = 0
    for subject in (subjects.update, subjects.snapshot):
        # a purge with "seq" removes the filtered subject's messages below that sequence
        request = json.dumps({"filter": subject, "seq": first}).encode()
        try:
            reply = await nc.request(
                f"$JS.API.STREAM.PURGE.{stream}", request, timeout=config.request_timeout
            )
        except SecsyncError:
            raise  # e.g. PermissionDeniedError: this identity may not purge
        except Exception as exc:
            raise BrokerUnavailableError(f"purge of {subject!r} not answered: {exc}") from None
        body = json.loads(reply.data)
        if "error" in body:
            error = body["error"]
            raise BrokerRequestError(
                f"purge of {subject!r} refused: {error.get('description')}",
                err_code=error.get("err_code"),
            )
        purged += int(body.get("purged", 0))
    return CompactionResult(doc_id, first, purged)
