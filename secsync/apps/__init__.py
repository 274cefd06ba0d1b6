"""Small programs built on the public API: the ``secsync demo`` coordinator and the demo
participant that the Docker image runs (``python -m secsync.apps.participant``)."""
