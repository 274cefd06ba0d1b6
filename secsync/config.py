"""All options of secsync in one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from secsync.errors import ConfigurationError

ChangeEncoding = Literal["native", "secsync-json"]


@dataclass(frozen=True, slots=True)
class SecsyncConfig:
    """Options of a document session (and, later, of its transport).

    Every bound exists so that a hostile peer or broker cannot make a client grow without
    limit; the defaults suit interactive documents up to tens of megabytes.
    """

    # --- snapshots --------------------------------------------------------------------------
    snapshot_after_updates: int = 500
    """Write a snapshot once this many updates were stored on the active snapshot (0: never)."""
    snapshot_after_bytes: int = 4 * 1024 * 1024
    """... or once their ciphertexts add up to this many bytes (0: never)."""

    # --- updates ----------------------------------------------------------------------------
    max_update_plaintext_bytes: int = 512 * 1024
    """Local changes are split over several updates above this size."""
    change_encoding: ChangeEncoding = "native"
    """How an update's changes are serialized: ``native`` (msgpack) or ``secsync-json``
    (a JSON array of base64url strings, as secsync JS's React hooks do). Receivers accept both."""

    # --- bounds on untrusted input ----------------------------------------------------------
    max_message_bytes: int = 64 * 1024 * 1024
    max_queued_updates_per_author: int = 10_000
    """Out-of-order updates waiting for a predecessor, per author."""
    max_deferred_updates: int = 10_000
    """Updates waiting for a snapshot that has not arrived yet."""
    superseded_snapshots_kept: int = 16
    """How many superseded snapshots are remembered to recognize their late updates."""

    # --- healing ----------------------------------------------------------------------------
    gap_refetch_after: float = 2.0
    """Seconds an update may wait for its predecessor before the transport is asked to fetch."""
    gap_recover_after: float = 10.0
    """Seconds after which an unfilled gap asks for recovery from the latest snapshot."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ConfigurationError(f"{f.name} must not be negative")
        if self.change_encoding not in ("native", "secsync-json"):
            raise ConfigurationError("change_encoding must be 'native' or 'secsync-json'")
        if self.gap_recover_after < self.gap_refetch_after:
            raise ConfigurationError("gap_recover_after must not be below gap_refetch_after")
        if self.max_update_plaintext_bytes < 1024:
            raise ConfigurationError("max_update_plaintext_bytes must be at least 1024")
