"""Asking running servers how they are: their monitoring endpoints (:func:`monitor_json`) and
whether the JetStream API answers through each of them (:func:`probe_api`)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from secsync.logs import get_logger
from secsync.servers.launch import POLL_INTERVAL

if TYPE_CHECKING:
    from secsync.servers.broker import Broker

# the readiness checks of every launcher log as the cluster's did
log = get_logger("secsync.cluster")

_REQUEST_TIMEOUT = 1.0
_API_PROBE_TIMEOUT = 0.5
_API_INFO = "$JS.API.INFO"


# No proxies: an http_proxy variable in the environment must not capture loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(data)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _get_json(url: str, timeout: float = _REQUEST_TIMEOUT) -> dict[str, Any] | None:
    """The JSON object a monitoring endpoint answers, or ``None`` (refused, error status,
    timeout, not an object)."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return _json_object(response.read())
    except OSError:  # refused, 503 (HTTPError), timeout
        return None


def monitor_json(server: Broker, path: str, **query: str) -> dict[str, Any] | None:
    """GET a monitoring endpoint of ``server`` (``"jsz"``, ``"healthz"``...) as JSON; ``None``
    when it does not answer or answers an error status."""
    url = f"{server.monitor_url}/{path.lstrip('/')}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    return _get_json(url)


class NamedServer(Protocol):
    """A server with a name and a client URL (what :func:`probe_api` needs)."""

    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...


async def _ignore_error(exc: Exception) -> None:
    """error_cb: keeps nats-py from printing tracebacks."""


async def _answered(node: NamedServer, deadline: float) -> str:
    """Why no JetStream API request through ``node`` was answered; empty once one was."""
    import nats
    import nats.errors

    try:
        nc = await nats.connect(
            node.url,
            connect_timeout=_API_PROBE_TIMEOUT,
            allow_reconnect=False,
            error_cb=_ignore_error,
        )
    except Exception as exc:
        return f"cannot connect to {node.name}: {exc}"
    try:
        while True:
            try:
                msg = await nc.request(_API_INFO, b"", timeout=_API_PROBE_TIMEOUT)
            except nats.errors.Error as exc:  # nats.errors.TimeoutError, NoRespondersError...
                problem = type(exc).__name__
            else:
                reply = _json_object(msg.data)
                if reply is not None and "error" not in reply:
                    return ""
                problem = str(reply.get("error") if reply is not None else msg.data[:200])
            log.info("cluster.api_unanswered", node=node.name, problem=problem)
            if time.monotonic() >= deadline:
                return f"the JetStream API does not answer through {node.name}: {problem}"
            await asyncio.sleep(POLL_INTERVAL)
    finally:
        await nc.close()


def probe_api(nodes: Sequence[NamedServer], deadline: float) -> str:
    """Why the JetStream API has not answered through every node in ``nodes``; empty once it has.

    On a fresh cluster, one of the first JetStream API requests sometimes goes unanswered even
    though every node is healthy (measured with nats-server 2.15.1, six concurrent clients
    right after start-up: 1 to 4 lost of 360, on any node, also 1.5 s after the meta leader
    was elected; none of 720 requests made after those), and nats-py does not retry it. With
    this probe first, none of 2700 was lost.
    Runs its own event loop in a worker thread, so it may be called from within one.
    """

    async def probe_all() -> list[str]:
        return list(await asyncio.gather(*(_answered(node, deadline) for node in nodes)))

    with ThreadPoolExecutor(max_workers=1) as pool:
        problems = pool.submit(asyncio.run, probe_all()).result()
    return "; ".join(p for p in problems if p)


def server_logs(servers: Sequence[Broker]) -> str:
    """The last run's log of every server, for an error that says why they are not ready."""
    return "".join(
        f"\n--- log {getattr(s, 'name', s.port)} ({s.log_path}):\n{s.last_run_log()}"
        for s in servers
    )
