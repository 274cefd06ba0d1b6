"""Mirrors of the stream: :func:`promote_mirror` turns a mirror (a standby, possibly on another
server joined by a leaf node) into the stream clients write to, keeping its sequences."""

from __future__ import annotations

from typing import TYPE_CHECKING

from secsync.errors import BrokerRequestError
from secsync.logs import get_logger
from secsync.transport import jetstream

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

log = get_logger("secsync.operations")


async def promote_mirror(js: JetStreamContext, settings: jetstream.StreamSettings) -> None:
    """Make the mirror named ``settings.name`` the stream documents are written to.

    The mirror configuration is removed and the stream's subjects set, in one update (nats-server
    2.15 allows that and keeps every stored message at its sequence); then the settings the
    package manages are applied as :func:`~secsync.transport.jetstream.ensure_stream` does.
    Stop writing to the old stream first: a mirror copies asynchronously, so what it had not
    copied yet when the old stream was lost is not in it.
    """
    what = f"stream {settings.name}"
    with jetstream.translated(what):
        info = await js.stream_info(settings.name)
        config = info.config
        if config is None or config.mirror is None:
            raise BrokerRequestError(f"{what} is not a mirror")
        await js.update_stream(config.evolve(mirror=None, subjects=list(settings.subjects)))
    await jetstream.ensure_stream(js, settings)
    log.info("mirror_promoted", stream=settings.name, last_sequence=info.state.last_seq)
