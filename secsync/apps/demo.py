"""``secsync demo`` (and ``make demo``): three people edit one encrypted Yjs text through an
embedded broker.

The coordinator starts a throwaway nats-server, runs each participant as its own process
(``python -m secsync.apps.demo participant``), shows the lines they type as they type them and then,
per participant, how many changes of whom it received, checks that all three end with the same
text, and finally reads the broker's stream to show that it holds only ciphertext.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

import pycrdt

from secsync.cli.common import configure_logging, split_urls

PEOPLE = {
    "alice": ["Alice: encryption happens on my machine.", "Alice: the broker only relays."],
    "bob": ["Bob: I sign every change I make.", "Bob: nobody can forge me."],
    "carol": ["Carol: we all converge.", "Carol: no server reads this."],
}
COLORS = {"alice": "\033[35m", "bob": "\033[36m", "carol": "\033[33m"}
RESET = "\033[0m"
DOC_ID = "demo-document"


def _paint(name: str, text: str) -> str:
    if not sys.stdout.isatty() and os.environ.get("FORCE_COLOR") is None:
        return text
    return f"{COLORS.get(name, '')}{text}{RESET}"


async def participant(args: argparse.Namespace) -> None:
    import secsync
    from secsync import SecsyncConfig, SigningKeyPair, UpdateApplied
    from secsync.protocol.encoding import b64decode, b64encode

    names: dict[str, str] = json.loads(args.people)
    signer = SigningKeyPair.from_b64(args.signing_key)
    key = b64decode(args.key)
    doc: pycrdt.Doc[Any] = secsync.new_yjs_doc(signer)
    text = doc.get("text", type=pycrdt.Text)
    lines = PEOPLE[args.name]
    expected = sum(len(v) for v in PEOPLE.values())
    config = SecsyncConfig(batch_interval=0.03)
    received: Counter[str] = Counter()

    async with secsync.connect(split_urls(args.url), config=config) as client:
        document = await client.open(DOC_ID, key=key, signing_key=signer, crdt=doc)

        async def watch() -> None:
            # Counted, not printed: a fast typist sends dozens of changes.
            async for event in document:
                if isinstance(event, UpdateApplied):
                    received[names.get(b64encode(event.author), "?")] += 1

        watcher = asyncio.create_task(watch())
        if args.name == "alice":
            text.insert(0, "".join(f"== {name} ==\n" for name in PEOPLE))
        header = f"== {args.name} ==\n"
        deadline = time.monotonic() + 60
        while header not in str(text) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # wait for alice's outline to arrive
        # Each person writes under their own heading; the cursor sticks to the character
        # before it, so it stays put while the others type elsewhere.
        cursor = text.sticky_index(str(text).index(header) + len(header), pycrdt.Assoc.BEFORE)
        for line in lines:
            for char in line + "\n":
                at = cursor.get_index()
                text.insert(at, char)
                cursor = text.sticky_index(at + 1, pycrdt.Assoc.BEFORE)
                await asyncio.sleep(0.004)  # a fast typist
            await document.flush(30)
            print(_paint(args.name, f"  [{args.name:>5}] typed: {line}"), flush=True)
        deadline = time.monotonic() + 60
        while str(text).count("\n") < expected + len(PEOPLE) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await document.flush(30)
        watcher.cancel()
        result = {"name": args.name, "text": str(text), "received": dict(received)}
        print("RESULT " + json.dumps(result), flush=True)
        await document.close()


def _received_line(name: str, received: dict[str, int]) -> str:
    """``alice received 41 changes: 20 by bob, 21 by carol``."""
    by = ", ".join(f"{count} by {author}" for author, count in sorted(received.items()))
    total = sum(received.values())
    return f"  [{name:>5}] received {total} changes" + (f": {by}" if by else "")


def coordinator(*, verbose: bool = False) -> int:
    """Run the demo; its exit code (0: converged, and no plaintext on the broker)."""
    from secsync import SigningKeyPair, generate_key
    from secsync.protocol.encoding import b64encode
    from secsync.servers.broker import Broker

    print("secsync demo: three participants, one end-to-end encrypted Yjs document\n")
    with (
        tempfile.TemporaryDirectory(prefix="secsync-demo-") as data,
        Broker(store_dir=data) as broker,
    ):
        print(f"embedded broker: {broker.url} (JetStream data in {data})\n")
        key = generate_key()
        signers = {name: SigningKeyPair.generate() for name in PEOPLE}
        people = {b64encode(s.public_key): name for name, s in signers.items()}
        procs: dict[str, subprocess.Popen[str]] = {}
        for name, signer in signers.items():
            procs[name] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "secsync.apps.demo",
                    "participant",
                    "--name",
                    name,
                    "--url",
                    broker.url,
                    # "=" form: base64url values may start with "-"
                    f"--key={b64encode(key)}",
                    f"--signing-key={b64encode(signer.secret_key)}",
                    "--people",
                    json.dumps(people),
                    *(["--verbose"] if verbose else []),
                ],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "FORCE_COLOR": "1"} if sys.stdout.isatty() else None,
            )
        results: dict[str, str] = {}
        received: dict[str, dict[str, int]] = {}

        def relay(name: str, proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:  # live, as the participants print
                if line.startswith("RESULT "):
                    result = json.loads(line[7:])
                    results[name] = result["text"]
                    received[name] = result["received"]
                else:
                    print(line, end="", flush=True)

        readers = [
            threading.Thread(target=relay, args=(name, proc), daemon=True)
            for name, proc in procs.items()
        ]
        for reader in readers:
            reader.start()
        failed = False
        for name, proc in procs.items():
            try:
                code = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = -1
            if code != 0:
                print(f"participant {name} failed (exit code {code})")
                failed = True
        for reader in readers:
            reader.join(timeout=5)
        if failed:
            return 1
        print()
        for name in PEOPLE:
            if name in received:
                print(_paint(name, _received_line(name, received[name])))
        print("  (each change verified against its author's signature, then decrypted)")

        print("\nfinal text at each participant:")
        texts = set(results.values())
        for name in PEOPLE:
            if name in results:
                print(_paint(name, f"--- {name} ---"))
                print(results[name].rstrip("\n"))
        converged = len(texts) == 1 and len(results) == len(PEOPLE)
        print(f"\nconverged: {'yes' if converged else 'NO'}")

        found = asyncio.run(_scan(broker.url))
        print(
            f"\nthe broker stores {found['messages']} messages, {found['bytes']} bytes, "
            "for this document"
        )
        words = [
            w for lines in PEOPLE.values() for line in lines for w in line.split() if len(w) > 4
        ]
        leaked = [w for w in words if w.encode() in found["blob"]]
        print(
            f"searched the stored bytes for {len(words)} words the participants typed: "
            f"{'found ' + ', '.join(leaked) if leaked else 'none found, only ciphertext'}"
        )
        return 0 if converged and not leaked else 1


async def _scan(url: str) -> dict[str, Any]:
    import nats

    from secsync.config import SecsyncConfig
    from secsync.transport import jetstream
    from secsync.transport.subjects import DocumentSubjects

    nc = await nats.connect(url)
    try:
        subjects = DocumentSubjects.of(DOC_ID)
        stored = await jetstream.messages_after(nc, SecsyncConfig().stream_name, subjects.stored, 1)
        blob = b"".join(m.data + repr(m.headers).encode() for m in stored)
        return {"messages": len(stored), "bytes": len(blob), "blob": blob}
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m secsync.apps.demo")
    parser.add_argument("-v", "--verbose", action="store_true", help="library logs from INFO on")
    sub = parser.add_subparsers(dest="role")
    p = sub.add_parser("participant")
    p.add_argument("--name", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--signing-key", required=True)
    p.add_argument("--people", required=True)
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # The demo speaks for itself; library logs (stderr) stay quiet unless something goes wrong.
    configure_logging(args.verbose)
    if args.role == "participant":
        asyncio.run(participant(args))
        return 0
    return coordinator(verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
