"""A throwaway (or local) nats-server with JetStream, started from ``broker-config/single.conf``.

:class:`Broker` runs one server on free loopback ports with its own store directory, waits until
``/healthz?js-enabled-only=true`` answers ok, and can stop, kill (for crash tests) and restart
it on the same ports and data. The ``secsync broker`` command is :mod:`secsync.cli.broker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import subprocess
import time
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from secsync.errors import TransportError
from secsync.logs import get_logger
from secsync.servers.binary import LOOPBACK, conf_string, default_config_path, free_ports
from secsync.servers.launch import START_ATTEMPTS, Launcher, config_path

log = get_logger("secsync.broker")

LOG_FILE_NAME = "nats-server.log"
LOCK_FILE_NAME = "secsync-broker.lock"

ENV_PORT = "SECSYNC_NATS_PORT"
ENV_HTTP_PORT = "SECSYNC_NATS_HTTP_PORT"
ENV_STORE_DIR = "SECSYNC_NATS_STORE_DIR"

_LOG_TAIL_LINES = 20


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _port_in_use(log_text: str) -> str | None:
    """The port of nats-server's "address already in use" line, e.g. ``... 127.0.0.1:4222 ...``."""
    for line in log_text.splitlines():
        found = re.search(rf"{re.escape(LOOPBACK)}:(\d+)", line)
        if found and "address already in use" in line:
            return found.group(1)
    return None


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Kill a server its :class:`Broker` forgot to stop (runs on garbage collection or exit)."""
    if process.poll() is None:
        process.kill()
        process.wait()


class Broker(Launcher):
    """One nats-server subprocess with JetStream on loopback.

    ``store_dir`` holds the JetStream data (in ``store_dir/jetstream``), the server log
    (:attr:`log_path`) and a lock file that keeps a second server off the same data. Without
    ``store_dir`` a temporary directory is created, and :meth:`close` removes it. ``port`` and
    ``http_port`` default to free ports chosen at the first start; :meth:`restart` keeps them.

    Blocking methods (:meth:`start`, :meth:`stop`, :meth:`restart`) have ``a``-prefixed
    coroutine twins that run them in a thread, for use inside an event loop.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str] | None = None,
        *,
        config: str | os.PathLike[str] | None = None,
        port: int | None = None,
        http_port: int | None = None,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        super().__init__(
            store_dir,
            prefix="secsync-broker-",
            binary=binary,
            start_timeout=start_timeout,
            stop_timeout=stop_timeout,
        )
        self._config = config_path(config, default_config_path)
        self._port = port
        self._http_port = http_port
        self._process: subprocess.Popen[bytes] | None = None
        self._lock: IO[bytes] | None = None
        self._log_offset = 0
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], Broker] | None = None

    # --- properties ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise TransportError("the broker has not been started yet")
        return self._port

    @property
    def http_port(self) -> int:
        if self._http_port is None:
            raise TransportError("the broker has not been started yet")
        return self._http_port

    @property
    def url(self) -> str:
        """Client URL, ``nats://127.0.0.1:PORT``."""
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def monitor_url(self) -> str:
        """Monitoring endpoint base, ``http://127.0.0.1:HTTP_PORT``."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def store_dir(self) -> Path:
        """The data directory given to the server as its JetStream ``store_dir``."""
        return self._directory

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr (appended to across restarts)."""
        return self._directory / LOG_FILE_NAME

    @property
    def config_path(self) -> Path:
        return self._config

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or ``None``."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<Broker {self._port}/{self._http_port} {state} store_dir={str(self._directory)!r}>"

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the server and wait until it is healthy. Raises :class:`TransportError`."""
        if self.running:
            raise TransportError("the broker is already running")
        self._forget_process()
        if not self._config.is_file():
            raise TransportError(f"broker config not found: {self._config}")
        binary = self.nats_server()
        self._directory.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        # Ports are chosen once, at the first start; restarts reuse them.
        choose_port, choose_http_port = self._port is None, self._http_port is None
        try:
            for attempt in range(1, START_ATTEMPTS + 1):
                if choose_port or choose_http_port:
                    fresh = iter(free_ports(2))
                    self._port = next(fresh) if choose_port else self._port
                    self._http_port = next(fresh) if choose_http_port else self._http_port
                try:
                    self._launch(binary)
                    return self
                except TransportError:
                    run_log = self.last_run_log()
                    if "address already in use" not in run_log:
                        raise
                    taken = _port_in_use(run_log)
                    fixed = {
                        str(port)
                        for port, chosen in (
                            (self._port, choose_port),
                            (self._http_port, choose_http_port),
                        )
                        if not chosen
                    }
                    if taken in fixed or not (choose_port or choose_http_port):
                        # a port we were given: new ports for the others would not help
                        raise TransportError(
                            f"cannot listen on {LOOPBACK}:{taken or self._port}: address already "
                            f"in use (server log: {self.log_path})"
                        ) from None
                    if attempt == START_ATTEMPTS:
                        raise
                    log.info("broker.port_taken", port=self._port, http_port=self._http_port)
        except BaseException:
            if choose_port:
                self._port = None
            if choose_http_port:
                self._http_port = None
            self._release_lock()
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float | None = None) -> int | None:
        """Stop gracefully (SIGTERM), SIGKILL after ``timeout`` (default :attr:`stop_timeout`);
        the data stays. Returns the exit code, ``None`` if the broker was never started."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                log.warning("broker.stop_timeout", pid=process.pid, log=str(self.log_path))
                process.kill()
                process.wait()
            log.info("broker.stopped", pid=process.pid, returncode=process.returncode)
        code = self._forget_process()
        self._release_lock()
        return code

    def kill(self) -> int | None:
        """SIGKILL the server (a crash, for tests) and reap it; the data stays."""
        self._kill_process()
        code = self._forget_process()
        self._release_lock()
        return code

    def restart(self) -> Self:
        """Stop (if running) and start again on the same ports and data directory."""
        self.stop()
        return self.start()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds for the server to exit; its exit code or ``None``."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        """Stop, and remove the store directory if it is a temporary one this broker made."""
        self.stop()
        self.remove_directory()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- asyncio ----------------------------------------------------------------------------------

    async def astart(self) -> Self:
        """:meth:`start` in a worker thread, so that the event loop keeps running."""
        return await asyncio.to_thread(self.start)

    async def astop(self, timeout: float | None = None) -> int | None:
        return await asyncio.to_thread(self.stop, timeout)

    async def arestart(self) -> Self:
        return await asyncio.to_thread(self.restart)

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    # --- internals --------------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        """The variables the config file reads (subclasses add their own)."""
        return {
            ENV_PORT: str(self.port),
            ENV_HTTP_PORT: str(self.http_port),
            ENV_STORE_DIR: conf_string(str(self._directory)),
        }

    def _launch(self, binary: Path) -> None:
        env = {**os.environ, **self._environment()}
        assert self._lock is not None
        with self.log_path.open("ab") as log_file:
            self._log_offset = log_file.tell()
            log_file.write(f"--- secsync: starting {binary} -c {self._config}\n".encode())
            log_file.flush()
            started = time.monotonic()
            process = subprocess.Popen(
                [str(binary), "-c", str(self._config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._directory,
                # Own session: Ctrl-C in a terminal signals the whole foreground process group;
                # the server should be stopped by us (SIGTERM, then SIGKILL), not behind our back.
                start_new_session=True,
                # The child shares the lock: it holds while the server runs, even without us.
                pass_fds=(self._lock.fileno(),),
            )
        self._process = process
        self._finalizer = weakref.finalize(self, _reap, process)
        self._lock.truncate(0)  # name the server in the lock file: it may outlive us
        self._lock.write(str(process.pid).encode())
        self._lock.flush()
        try:
            self._wait_healthy(process, started + self.start_timeout)
        except BaseException:
            self._kill_process()
            self._forget_process()
            raise
        log.info(
            "broker.started",
            url=self.url,
            monitor_url=self.monitor_url,
            pid=process.pid,
            store_dir=str(self._directory),
            seconds=round(time.monotonic() - started, 3),
        )

    def _wait_healthy(self, process: subprocess.Popen[bytes], deadline: float) -> None:
        """Poll ``/healthz?js-enabled-only=true`` until ok, the process exits or ``deadline``."""
        url = f"{self.monitor_url}/healthz?js-enabled-only=true"
        # No proxies: an http_proxy variable in the environment must not capture loopback.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            if process.poll() is not None:
                raise TransportError(
                    f"nats-server exited with code {process.returncode} during startup; "
                    f"log {self.log_path}:\n{self.last_run_log()}"
                )
            remaining = deadline - time.monotonic()
            if self._healthy(opener, url, timeout=max(0.05, min(1.0, remaining))):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportError(
                    f"nats-server did not become healthy within {self.start_timeout} s; "
                    f"log {self.log_path}:\n{self.last_run_log()}"
                )
            # The poll interval doubles as an exit check: it returns at once if the server dies.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(min(0.02, remaining))

    @staticmethod
    def _healthy(opener: urllib.request.OpenerDirector, url: str, timeout: float) -> bool:
        try:
            with opener.open(url, timeout=timeout) as response:
                body = json.loads(response.read())
        except (OSError, ValueError):  # refused, 503 (HTTPError), timeout, bad JSON
            return False
        return isinstance(body, dict) and body.get("status") == "ok"

    def last_run_log(self) -> str:
        """The tail of what the current (last) launch wrote to the log."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return _log_tail(self.log_path)
        return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:])

    def _acquire_lock(self) -> None:
        """Lock the data directory: nats-server 2.15 itself lets two servers share a store."""
        if self._lock is not None:
            return
        lock = (self._directory / LOCK_FILE_NAME).open("a+b")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().decode(errors="replace").strip() or "?"
            lock.close()
            raise TransportError(
                f"data directory {self._directory} is in use by another broker (pid {holder})"
            ) from None
        lock.truncate(0)
        lock.write(str(os.getpid()).encode())
        lock.flush()
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _kill_process(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
            log.info("broker.killed", pid=process.pid)

    def _forget_process(self) -> int | None:
        """Drop the (finished) process; its exit code."""
        process, self._process = self._process, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        return process.returncode if process is not None else None
