"""``python -m secsync.cli.operations backup|restore``: the operator's command line for
:mod:`secsync.ops.backup` (see ``docs/operations.md``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from secsync.errors import BrokerUnavailableError, SecsyncError
from secsync.ops.backup import DATA_FILE, METADATA_FILE, backup_stream, restore_stream


async def _run(args: argparse.Namespace) -> None:
    import nats

    try:
        nc = await nats.connect(
            servers=args.server, connect_timeout=args.timeout, max_reconnect_attempts=0
        )
    except Exception as exc:
        raise BrokerUnavailableError(f"cannot connect to {args.server}: {exc}") from None
    try:
        if args.command == "backup":
            backup = await backup_stream(
                nc, args.directory, stream=args.stream, timeout=args.timeout
            )
            print(
                f"backed up stream {backup.stream}: {backup.state.get('messages')} messages, "
                f"sequences {backup.state.get('first_seq')}..{backup.state.get('last_seq')}, "
                f"{backup.bytes_written} bytes in {backup.seconds:.2f} s to {backup.directory}"
            )
        else:
            state = await restore_stream(nc, args.directory, timeout=args.timeout)
            print(
                f"restored: {state.get('messages')} messages, "
                f"sequences {state.get('first_seq')}..{state.get('last_seq')}"
            )
    finally:
        await nc.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m secsync.cli.operations backup|restore --server URL [--stream NAME] DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m secsync.cli.operations",
        description="Online backup and restore of the secsync stream (JetStream snapshot API).",
    )
    parser.add_argument("command", choices=("backup", "restore"))
    parser.add_argument("directory", help=f"holds {METADATA_FILE} and {DATA_FILE}")
    parser.add_argument(
        "--server", action="append", required=True, help="nats://host:port (repeatable)"
    )
    parser.add_argument("--stream", default="SECSYNC", help="stream to back up (backup only)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_run(args))
    except (SecsyncError, OSError) as exc:
        print(f"secsync.cli.operations: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
