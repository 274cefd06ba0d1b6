"""Operator procedures on a running broker: online backup and restore of the stream, mirror
promotion (run them with ``python -m secsync.cli.operations``)."""
