"""Provisioning: the stream that stores documents (:func:`ensure_stream`) and its mirrors
(:func:`ensure_mirror`), idempotent, with what the protocol relies on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
from nats.js import api

from secsync.errors import (
    BrokerRequestError,
)
from secsync.logs import get_logger
from secsync.transport.jetstream_errors import (
    ERR_NO_SUITABLE_PEERS,
    ERR_STREAM_NAME_IN_USE,
    translated,
    validate_stream,
)

if TYPE_CHECKING:
    pass
    from nats.js.client import JetStreamContext

log = get_logger("secsync.jetstream")

_ENSURE_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """The settings :func:`ensure_stream` manages (other settings of the stream are kept)."""

    name: str = "SECSYNC"
    subjects: tuple[str, ...] = ("secsync.s.>",)
    replicas: int = 1
    max_consumers: int = 10_000  # explicit: the 2.15 default of 1000 per stream is a trap
    duplicate_window: float = 120.0  # seconds
    max_msg_size: int = -1
    placement_cluster: str | None = None
    placement_tags: tuple[str, ...] = ()
    max_bytes: int = -1
    """Bound on the stream's stored bytes (-1: none). With a bound the stream discards *new*
    messages when full: dropping the oldest would delete other documents' history."""


# --- provisioning -------------------------------------------------------------------------------


def _nanoseconds(seconds: float | None) -> int:
    return round((seconds or 0.0) * 1_000_000_000)


def _placement(settings: StreamSettings) -> api.Placement | None:
    if settings.placement_cluster is None and not settings.placement_tags:
        return None
    return api.Placement(
        cluster=settings.placement_cluster,
        tags=list(settings.placement_tags) if settings.placement_tags else None,
    )


def _discard(settings: StreamSettings) -> api.DiscardPolicy:
    return api.DiscardPolicy.NEW if settings.max_bytes > 0 else api.DiscardPolicy.OLD


def _managed(settings: StreamSettings) -> dict[str, Any]:
    """The managed stream config fields, as nats-py ``StreamConfig`` keyword arguments."""
    return {
        "subjects": list(settings.subjects),
        "retention": api.RetentionPolicy.LIMITS,
        "discard": _discard(settings),
        "storage": api.StorageType.FILE,
        "num_replicas": settings.replicas,
        "max_consumers": settings.max_consumers,
        "duplicate_window": settings.duplicate_window,
        "max_msg_size": settings.max_msg_size,
        "max_bytes": settings.max_bytes,
        "placement": _placement(settings),
        "allow_direct": True,
        "allow_atomic": True,
        "allow_rollup_hdrs": False,
        "deny_delete": True,
        "deny_purge": False,
    }


def _placement_key(placement: api.Placement | None) -> tuple[str | None, tuple[str, ...]]:
    if placement is None:
        return None, ()
    return placement.cluster or None, tuple(placement.tags or ())


def _matches(config: api.StreamConfig, settings: StreamSettings) -> bool:
    """Whether the managed settings of ``config`` equal ``settings``."""

    def same(value: Any, wanted: Enum) -> bool:
        return str(value.value if isinstance(value, Enum) else value) == str(wanted.value)

    return (
        list(config.subjects or ()) == list(settings.subjects)
        and same(config.retention, api.RetentionPolicy.LIMITS)
        and same(config.discard, _discard(settings))
        and same(config.storage, api.StorageType.FILE)
        and (config.num_replicas or 1) == settings.replicas
        and config.max_consumers == settings.max_consumers
        and _nanoseconds(config.duplicate_window) == _nanoseconds(settings.duplicate_window)
        and config.max_msg_size == settings.max_msg_size
        and (config.max_bytes or -1) == settings.max_bytes
        and _placement_key(config.placement) == _placement_key(_placement(settings))
        and bool(config.allow_direct)
        and bool(config.allow_atomic)
        and not config.allow_rollup_hdrs
        and config.deny_delete
        and not config.deny_purge
    )


async def ensure_stream(js: JetStreamContext, settings: StreamSettings) -> None:
    """Create the stream, or update it when a managed setting differs; idempotent.

    Settings outside :class:`StreamSettings` (limits, TTLs, metadata...) of an existing stream
    are kept. Concurrent calls are safe: an identical create succeeds on the server, and a create
    that loses a race to a different configuration falls back to an update. Some changes are
    refused by the broker (storage type, switching ``deny_delete`` off) and raise
    :class:`BrokerRequestError`.
    """
    validate_stream(settings.name)
    placement_retries = 40  # 10 s
    with translated(f"stream {settings.name}"):
        for _attempt in range(_ENSURE_ATTEMPTS + placement_retries):
            try:
                info = await js.stream_info(settings.name)
            except nats.js.errors.NotFoundError:
                try:
                    await js.add_stream(api.StreamConfig(name=settings.name, **_managed(settings)))
                except nats.js.errors.BadRequestError as exc:
                    if exc.err_code == ERR_STREAM_NAME_IN_USE:
                        continue  # created meanwhile with other settings: compare and update
                    if exc.err_code == ERR_NO_SUITABLE_PEERS and placement_retries > 0:
                        # a restarted node is not back in the meta layer's view yet
                        placement_retries -= 1
                        await asyncio.sleep(0.25)
                        continue
                    raise
                if settings.replicas > 1:
                    await _wait_for_leader(js, settings.name)
                return
            if info.config is not None and _matches(info.config, settings):
                return
            current = info.config or api.StreamConfig(name=settings.name)
            await js.update_stream(current.evolve(name=settings.name, **_managed(settings)))
            return
    raise BrokerRequestError(
        f"stream {settings.name} kept changing while it was provisioned",
        err_code=ERR_STREAM_NAME_IN_USE,
    )


async def ensure_mirror(
    js: JetStreamContext,
    name: str,
    source: str,
    *,
    replicas: int = 1,
    placement_cluster: str | None = None,
    placement_tags: Sequence[str] = (),
    max_consumers: int = 10_000,
) -> None:
    """Create ``name`` as a read-only mirror of stream ``source``, placed near its readers.

    A mirror keeps the origin's stream sequences, so a client may load and follow documents
    from it (``SecsyncConfig.read_stream``) and still publish with compare-and-set against the
    origin. Idempotent; an existing stream of that name that is not a mirror of ``source``
    raises :class:`BrokerRequestError`.
    """
    validate_stream(name)
    validate_stream(source)
    settings = StreamSettings(
        name=name,
        replicas=replicas,
        placement_cluster=placement_cluster,
        placement_tags=tuple(placement_tags),
    )
    with translated(f"stream {name}"):
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                api.StreamConfig(
                    name=name,
                    mirror=api.StreamSource(name=source),
                    storage=api.StorageType.FILE,
                    num_replicas=replicas,
                    placement=_placement(settings),
                    max_consumers=max_consumers,
                    allow_direct=True,
                    mirror_direct=True,
                    deny_delete=True,
                )
            )
            if replicas > 1:
                await _wait_for_leader(js, name)
            return
    mirror = info.config.mirror if info.config is not None else None
    if mirror is None or mirror.name != source:
        raise BrokerRequestError(
            f"stream {name} exists and is not a mirror of {source}", err_code=ERR_STREAM_NAME_IN_USE
        )


async def _wait_for_leader(js: JetStreamContext, name: str, timeout: float = 10.0) -> None:
    """A new replicated stream answers publishes only once it has elected a leader."""
    async with asyncio.timeout(timeout):
        while True:
            info = await js.stream_info(name)
            if info.cluster is not None and info.cluster.leader:
                return
            await asyncio.sleep(0.05)
