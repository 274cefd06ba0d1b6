"""A demo participant that joins a broker anywhere: ``python -m secsync.apps.participant``.

``make demo`` (:mod:`secsync.apps.demo`) starts its own broker and participants; this is the
participant on its own, for brokers started elsewhere: the docker-compose stack (one container
per participant against the 3-node cluster) or a topology from ``secsync broker --topology``.

It connects to the given broker URLs (retrying until the broker answers, or working offline
from a local store), opens one end-to-end encrypted Yjs text, types ``--lines`` lines of its
own, reports the changes it receives with their authors (one line a second at most, however
fast the others type), and ends once the text holds
``--expect-lines`` lines (everybody's) or when stopped (SIGTERM, Ctrl-C), printing the text on a
``RESULT {json}`` line. Exit code 0 when the expected lines arrived.

Every option can come from the environment instead (containers then need no command line)::

    --name NAME            SECSYNC_NAME             who this is (shown in the text and output)
    --servers URLS         SECSYNC_SERVERS          comma-separated broker URLs
    --doc-id ID            SECSYNC_DOC_ID           the document (default: demo-document)
    --key-file PATH        SECSYNC_KEY_FILE         the document key, base64url; created if missing
                                                    (atomically: the first participant's wins)
    --identity-file PATH   SECSYNC_IDENTITY_FILE    this participant's signing key, created if
                                                    missing; without it, a new one per run
    --lines N              SECSYNC_LINES            lines to type (default 3)
    --interval S           SECSYNC_INTERVAL         seconds between lines (default 1)
    --expect-lines N       SECSYNC_EXPECT_LINES     end once the text holds N lines (default:
                                                    this participant's own; 0: run until stopped)
    --timeout S            SECSYNC_TIMEOUT          give up after S seconds (default 300)
    --replicas N           SECSYNC_STREAM_REPLICAS  replicas of the stream if it is created (3 on
                                                    a cluster)
    --store PATH           SECSYNC_STORE_PATH       local store for offline work (SQLite)
    --verbose              SECSYNC_VERBOSE=1        library logs (stderr) from INFO on, not
                                                    warnings and errors only

The key file is the shared secret of the document: whoever reads it can read the document.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycrdt

DEFAULT_DOC_ID = "demo-document"
DEFAULT_SERVERS = ("nats://127.0.0.1:4222",)
CLOSE_TIMEOUT = 5.0
REPORT_INTERVAL = 1.0  # seconds between two "received ..." lines

log = logging.getLogger("secsync.participant")


@dataclass(frozen=True, slots=True)
class ParticipantOptions:
    """What :func:`participate` does (see the module docstring for each option)."""

    name: str
    servers: tuple[str, ...] = DEFAULT_SERVERS
    key_file: Path = Path("demo-document.key")
    doc_id: str = DEFAULT_DOC_ID
    identity_file: Path | None = None
    lines: int = 3
    interval: float = 1.0
    expect_lines: int | None = None
    timeout: float = 300.0
    replicas: int = 1
    store_path: str | None = None
    config_overrides: dict[str, Any] = field(default_factory=dict)
    """Further :class:`secsync.SecsyncConfig` fields (tests: stream name, batching)."""
    verbose: bool = False
    """Library logs from INFO on (the command line's ``--verbose``)."""

    @property
    def wanted_lines(self) -> int:
        return self.lines if self.expect_lines is None else self.expect_lines


def load_or_create_secret(path: Path, make: Callable[[], str]) -> str:
    """The text in ``path``; if there is none, ``make()`` is written there first.

    Creation is atomic (a complete temporary file linked into place), so participants starting
    at once agree on the first one's secret. The file is readable by its owner only.
    """
    with contextlib.suppress(FileNotFoundError):
        return path.read_text(encoding="ascii").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(make() + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink()
    return path.read_text(encoding="ascii").strip()


def line_count(text: str) -> int:
    return text.count("\n")


async def participate(
    options: ParticipantOptions,
    *,
    stop: asyncio.Event | None = None,
    say: Callable[[str], None] | None = None,
) -> tuple[bool, str]:
    """Join, type, follow; (whether the expected lines arrived, the final text)."""
    import secsync
    from secsync import (
        BrokerUnavailableError,
        PresenceChanged,
        SigningKeyPair,
        SnapshotApplied,
        UpdateApplied,
        generate_key,
    )
    from secsync.protocol.encoding import b64decode, b64encode

    def out(message: str) -> None:
        (say or print)(f"[{options.name}] {message}")

    stop = stop if stop is not None else asyncio.Event()
    deadline = time.monotonic() + options.timeout
    key = b64decode(load_or_create_secret(options.key_file, lambda: b64encode(generate_key())))
    if options.identity_file is not None:
        signer = SigningKeyPair.from_b64(
            load_or_create_secret(
                options.identity_file, lambda: b64encode(SigningKeyPair.generate().secret_key)
            )
        )
    else:
        signer = SigningKeyPair.generate()
    me = b64encode(signer.public_key)[:8]
    config = secsync.SecsyncConfig(
        stream_replicas=options.replicas,
        store_path=options.store_path,
        **options.config_overrides,
    )
    ydoc: pycrdt.Doc[Any] = secsync.new_yjs_doc(signer)
    text = ydoc.get("text", type=pycrdt.Text)

    attempt = 0
    while True:
        try:
            client = await secsync.connect(list(options.servers), config=config)
            break
        except BrokerUnavailableError as exc:
            if time.monotonic() >= deadline or stop.is_set():
                out(f"no broker at {','.join(options.servers)}: {exc.message}")
                return False, str(text)
            attempt += 1
            if attempt == 1:
                out(f"waiting for a broker at {','.join(options.servers)} ...")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(5.0, 0.5 * attempt))
    try:
        doc = await client.open(options.doc_id, key=key, signing_key=signer, crdt=ydoc)
        doc.presence.set_local_state({"name": options.name})
        out(f"connected to {','.join(options.servers)}: document {options.doc_id!r} as {me}")
        names: dict[bytes, str] = {}
        tally = _Tally()

        def report_received() -> None:
            if tally.count:
                out(f"{tally.summary()}; the text has {line_count(str(text))} lines")
            tally.reset()

        def report(event: object) -> None:
            if isinstance(event, PresenceChanged):
                state = event.state
                if isinstance(state, dict) and isinstance(state.get("name"), str):
                    if names.get(event.author) != state["name"]:
                        names[event.author] = state["name"]
                        out(f"{state['name']} is here")
                elif state is None and event.author in names:
                    out(f"{names.pop(event.author)} left")
            elif isinstance(event, UpdateApplied | SnapshotApplied):
                who = names.get(event.author) or b64encode(event.author)[:8]
                tally.add(who, snapshot=isinstance(event, SnapshotApplied))
                if tally.age() >= REPORT_INTERVAL:
                    report_received()

        async def next_event(until: float) -> bool:
            """Report the next event; False once ``until`` passed or a stop was requested."""
            remaining = until - time.monotonic()
            if remaining <= 0 or stop.is_set():
                return False
            getter = asyncio.ensure_future(doc.next_event())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                done, _ = await asyncio.wait(
                    {getter, stopper}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                getter.cancel()
                stopper.cancel()
            if getter in done and not getter.cancelled():
                report(getter.result())
            return not stop.is_set()

        for number in range(1, options.lines + 1):
            if stop.is_set():
                break
            line = f"{options.name}: line {number}"
            text.insert(len(text), line + "\n")
            with contextlib.suppress(TimeoutError):
                await doc.flush(max(0.1, min(30.0, deadline - time.monotonic())))
            out(f"typed: {line}")
            pause = time.monotonic() + options.interval
            while await next_event(pause):
                pass
        with contextlib.suppress(TimeoutError):
            await doc.flush(max(0.1, min(30.0, deadline - time.monotonic())))
        wanted = options.wanted_lines
        while (wanted == 0 or line_count(str(text)) < wanted) and await next_event(deadline):
            pass
        report_received()
        done = wanted > 0 and line_count(str(text)) >= wanted
        final = str(text)
        if not done and wanted:
            out(f"the text holds {line_count(final)} of {wanted} lines")
        await _close(doc)
        return done, final
    finally:
        await client.close()


class _Tally:
    """Changes received since the last report, by author."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.by: dict[str, int] = {}
        self.snapshots = 0
        self.since = time.monotonic()

    @property
    def count(self) -> int:
        return sum(self.by.values()) + self.snapshots

    def add(self, who: str, *, snapshot: bool = False) -> None:
        if snapshot:
            self.snapshots += 1
        else:
            self.by[who] = self.by.get(who, 0) + 1

    def age(self) -> float:
        return time.monotonic() - self.since

    def summary(self) -> str:
        """``received 12 changes (7 by bob, 5 by carol)``, snapshots counted apart."""
        changes = sum(self.by.values())
        parts = [f"{changes} change{'s' if changes != 1 else ''}"] if changes else []
        if self.snapshots:
            parts.append(f"{self.snapshots} snapshot{'s' if self.snapshots != 1 else ''}")
        by = ", ".join(f"{count} by {who}" for who, count in sorted(self.by.items()))
        return "received " + " and ".join(parts) + (f" ({by})" if by else "")


async def _close(doc: Any) -> None:
    """Close ``doc``, bounded: on Python 3.11 the presence task can miss its cancellation when a
    presence message wakes it at that very moment (``asyncio.wait_for`` then returns instead of
    raising), and ``Document.close`` would wait for it for ever. Past the bound, the close goes
    on without it (the task ends with the event loop)."""
    bound = asyncio.timeout(CLOSE_TIMEOUT)
    with contextlib.suppress(TimeoutError):
        async with bound:
            await doc.close()
    if bound.expired():
        log.warning("closing the document took over %s s; going on without it", CLOSE_TIMEOUT)
    if not doc.closed:
        await doc.close()


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def parse_options(argv: Sequence[str] | None = None) -> ParticipantOptions:
    parser = argparse.ArgumentParser(
        prog="python -m secsync.apps.participant",
        description="A secsync demo participant for a broker anywhere.",
    )
    parser.add_argument("--name", default=_env("SECSYNC_NAME"))
    parser.add_argument("--servers", default=_env("SECSYNC_SERVERS", ",".join(DEFAULT_SERVERS)))
    parser.add_argument("--doc-id", default=_env("SECSYNC_DOC_ID", DEFAULT_DOC_ID))
    parser.add_argument("--key-file", default=_env("SECSYNC_KEY_FILE"))
    parser.add_argument("--identity-file", default=_env("SECSYNC_IDENTITY_FILE"))
    parser.add_argument("--lines", type=int, default=int(_env("SECSYNC_LINES", "3") or 3))
    parser.add_argument("--interval", type=float, default=float(_env("SECSYNC_INTERVAL", "1") or 1))
    expect = _env("SECSYNC_EXPECT_LINES")
    parser.add_argument(
        "--expect-lines", type=int, default=int(expect) if expect is not None else None
    )
    parser.add_argument(
        "--timeout", type=float, default=float(_env("SECSYNC_TIMEOUT", "300") or 300)
    )
    parser.add_argument(
        "--replicas", type=int, default=int(_env("SECSYNC_STREAM_REPLICAS", "1") or 1)
    )
    parser.add_argument("--store", default=_env("SECSYNC_STORE_PATH"))
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=_env("SECSYNC_VERBOSE") not in (None, "0")
    )
    args = parser.parse_args(argv)
    if not args.name:
        parser.error("--name (or SECSYNC_NAME) is required")
    if not args.key_file:
        parser.error("--key-file (or SECSYNC_KEY_FILE) is required: the shared document key")
    servers = tuple(s.strip() for s in args.servers.split(",") if s.strip())
    if not servers:
        parser.error("--servers (or SECSYNC_SERVERS) names no broker")
    return ParticipantOptions(
        name=args.name,
        servers=servers,
        key_file=Path(args.key_file),
        doc_id=args.doc_id,
        identity_file=Path(args.identity_file) if args.identity_file else None,
        lines=args.lines,
        interval=args.interval,
        expect_lines=args.expect_lines,
        timeout=args.timeout,
        replicas=args.replicas,
        store_path=args.store,
        verbose=args.verbose,
    )


async def _main(options: ParticipantOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    done, text = await participate(options, stop=stop, say=lambda m: print(m, flush=True))
    print("RESULT " + json.dumps({"name": options.name, "text": text}), flush=True)
    return 0 if done or (options.wanted_lines == 0 and stop.is_set()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    from secsync.cli.common import configure_logging

    options = parse_options(argv)
    # The output speaks for itself; library logs (stderr) only when something goes wrong.
    configure_logging(options.verbose)
    return asyncio.run(_main(options))


if __name__ == "__main__":
    sys.exit(main())
