"""What every subcommand shares: exit codes, environment variables, reading inputs and secrets,
the usage error, logging to stderr and the text helpers."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from secsync.transport.events import LoadProgress

EXIT_ERROR = 1
EXIT_USAGE = 2

STDIN = "-"
DEFAULT_URL = "nats://127.0.0.1:4222"
ENV_KEY = "SECSYNC_KEY"
ENV_SIGNING_KEY = "SECSYNC_SIGNING_KEY"
ENV_PASSPHRASE = "SECSYNC_PASSPHRASE"  # noqa: S105 - a variable name
ENV_LINK = "SECSYNC_LINK"

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_MARKUP = re.compile(r":[a-z]+:`~?([^`]*)`|``([^`]*)``|`([^`]*)`")


class UsageError(Exception):
    """A command line that cannot work (reported like argparse's own errors)."""


# --- logging ------------------------------------------------------------------------------------


class _StderrHandler(logging.Handler):
    """One line per record on whatever ``sys.stderr`` is when it is written (stdout carries the
    command's output)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # a log line must never end the command
            self.handleError(record)


def configure_logging(verbose: bool = False) -> None:
    """Logs to stderr, one line each: warnings and worse, or from INFO on with ``verbose``.

    Calling it again replaces the handler it installed (the demo's processes and tests do)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StderrHandler):
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)


# --- inputs -------------------------------------------------------------------------------------


class Inputs:
    """Reads the files, keys and secrets of one command; ``-`` is stdin, which one input at most
    can use."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self._stdin_for: str | None = None

    def read(self, path: str, what: str) -> bytes:
        if path == STDIN:
            if self._stdin_for is not None:
                raise UsageError(f"{what} and {self._stdin_for} cannot both come from stdin")
            self._stdin_for = what
            return sys.stdin.buffer.read()
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None

    def text(self, path: str, what: str) -> str:
        try:
            return self.read(path, what).decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{what} {path} is not UTF-8 text") from None

    def secret(
        self, value: str | None, file: str | None, env: str | None, *, what: str
    ) -> str | None:
        """The value of ``--X``, else the content of ``--X-file`` (stripped), else ``$env``."""
        if value is not None:
            return value
        if file is not None:
            return self.text(file, what).strip()
        found = self.environ.get(env) if env else None
        return found or None

    def required_secret(
        self, value: str | None, file: str | None, env: str, *, what: str, option: str
    ) -> str:
        found = self.secret(value, file, env, what=what)
        if not found:
            raise UsageError(f"{what} needed: {option}=VALUE, {option}-file PATH or ${env}")
        return found

    def passphrase(self, args: argparse.Namespace) -> str | None:
        if args.passphrase is not None:
            return str(args.passphrase)
        if getattr(args, "ask_passphrase", False):
            import getpass

            # read from the terminal, not echoed, kept out of argv and the shell's history
            return getpass.getpass("passphrase: ")
        if args.passphrase_file is not None:
            # Only the line end goes: spaces may belong to the passphrase.
            return self.text(args.passphrase_file, "passphrase file").rstrip("\r\n")
        env = args.passphrase_env or ENV_PASSPHRASE
        found = self.environ.get(env)
        if args.passphrase_env and found is None:
            raise UsageError(f"--passphrase-env: ${args.passphrase_env} is not set")
        return found or None


def split_urls(text: str) -> list[str]:
    """Broker URLs from ``--url``: one, or a comma-separated list (as ``secsync broker`` prints
    a cluster's)."""
    urls = [url.strip() for url in text.split(",") if url.strip()]
    if not urls:
        raise UsageError("--url names no broker")
    return urls


def plain(text: str) -> str:
    """``text`` without reST markup (``literal``, :class:`Name`): messages are for people."""
    return _MARKUP.sub(lambda m: next(g for g in m.groups() if g is not None), text)


class ProgressBar:
    """Draws a document's loading progress (:class:`~secsync.LoadProgress`) on one line of
    ``stream`` (standard error), redrawn in place; drawn only on a terminal unless ``force``.
    :meth:`done` ends the line."""

    def __init__(self, stream: TextIO, *, force: bool = False, width: int = 30) -> None:
        self._stream = stream
        self._on = force or stream.isatty()
        self._width = width
        self._drawn = False

    def __call__(self, progress: LoadProgress) -> None:
        if not self._on or progress.total <= 0:
            return
        share = min(1.0, progress.messages / progress.total)
        filled = round(share * self._width)
        bar = "#" * filled + "-" * (self._width - filled)
        self._stream.write(
            f"\rloading {progress.doc_id}: [{bar}] "
            f"{progress.messages:,} / {progress.total:,} messages ({share:.0%})"
        )
        self._stream.flush()
        self._drawn = True

    def done(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
