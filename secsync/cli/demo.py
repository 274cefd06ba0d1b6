"""``secsync demo``: three participants edit one document through an embedded broker (see
:mod:`secsync.apps.demo`); ``secsync demo --web``: a browser and a Python backend edit one (see
:mod:`secsync.apps.webdemo`)."""

from __future__ import annotations

import argparse

from secsync.cli.common import Inputs


def cmd_demo(args: argparse.Namespace, inputs: Inputs) -> int:
    if args.web:
        from secsync.apps.webdemo import main

        return main(["--host", args.host, "--port", str(args.port)])
    from secsync.apps.demo import coordinator

    return coordinator(verbose=args.verbose)
