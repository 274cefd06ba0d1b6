"""The ``secsync`` command line: one parser (:mod:`secsync.cli.main`) and a module per
subcommand, plus the operator tools run with ``python -m`` (:mod:`secsync.cli.operations`,
:mod:`secsync.cli.permissions`).

This package imports nothing itself, so that ``secsync --help`` stays light."""
