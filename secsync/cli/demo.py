"""``secsync demo``: three participants edit one document through an embedded broker (see
:mod:`secsync.apps.demo`)."""

from __future__ import annotations

import argparse

from secsync.cli.common import Inputs


def cmd_demo(args: argparse.Namespace, inputs: Inputs) -> int:
    from secsync.apps.demo import coordinator

    return coordinator(verbose=args.verbose)
