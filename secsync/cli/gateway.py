"""``secsync gateway``: serve secsync JS clients over WebSocket until Ctrl-C or SIGTERM (see
:mod:`secsync.gateway`; needs the ``secsync[gateway]`` extra)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from secsync.cli.common import Inputs, UsageError, split_urls


def load_access_check(spec: str) -> Any:
    """``package.module:function`` → that function (``has_access``), imported from the current
    directory first (as uvicorn imports an app)."""
    module_name, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if not module_name or not attribute:
        raise UsageError(f"--access {spec!r}: expected module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--access {spec!r}: cannot import {module_name}: {exc}") from None
    found: Any = module
    for part in attribute.split("."):
        found = getattr(found, part, None)
    if not callable(found):
        raise UsageError(f"--access {spec!r}: {attribute} is not a function of {module_name}")
    return found


def add_gateway_arguments(parser: argparse.ArgumentParser, default_url: str) -> None:
    parser.add_argument(
        "--url",
        default=default_url,
        help=f"the broker, or several comma-separated (default {default_url})",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8787, help="port (0: a free one)")
    access = parser.add_mutually_exclusive_group(required=True)
    access.add_argument(
        "--access",
        metavar="MODULE:FUNCTION",
        help="the access check has_access(action, document_id, session_key, public_key)",
    )
    access.add_argument(
        "--allow-all",
        action="store_true",
        help="grant every connection everything (trusted networks and development only)",
    )
    parser.add_argument(
        "--origin",
        action="append",
        metavar="ORIGIN",
        help="a browser origin allowed to connect, e.g. https://app.example (repeatable; "
        "default: any)",
    )
    parser.add_argument("--stream", default=None, help="the JetStream stream of the documents")
    parser.add_argument("--subject-root", default=None, help="the subject root of the documents")
    parser.add_argument(
        "--missing-documents",
        choices=["create", "not-found"],
        default="create",
        help="a document with nothing stored: served as new (default) or document-not-found",
    )


def cmd_gateway(args: argparse.Namespace, inputs: Inputs) -> int:
    import asyncio
    import signal
    from dataclasses import replace

    from secsync.config import GatewayConfig, SecsyncConfig
    from secsync.gateway.server import Gateway, allow_all
    from secsync.gateway.serving import GatewayServer

    has_access = allow_all if args.allow_all else load_access_check(args.access)
    config = GatewayConfig(
        allowed_origins=tuple(args.origin) if args.origin else None,
        missing_documents=args.missing_documents,
    )
    secsync_config = SecsyncConfig()
    if args.stream:
        secsync_config = replace(secsync_config, stream_name=args.stream)
    if args.subject_root:
        secsync_config = replace(secsync_config, subject_root=args.subject_root)
    gateway = Gateway(
        split_urls(args.url), has_access, config=config, secsync_config=secsync_config
    )

    async def serve() -> None:
        server = GatewayServer(gateway, host=args.host, port=args.port)
        await server.start()
        stopping: list[asyncio.Task[None]] = []
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(
                signum, lambda: stopping.append(asyncio.ensure_future(server.stop()))
            )
        print(f"secsync gateway listening on {server.url}/{{docId}}", flush=True)
        await server.wait()
        await asyncio.gather(*stopping)

    asyncio.run(serve())
    print("secsync gateway stopped", file=sys.stderr)
    return 0
