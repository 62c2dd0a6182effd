"""The one exception tree of pymirror: every error it raises is a PymirrorError."""

from __future__ import annotations


class PymirrorError(Exception):
    """Base of every error pymirror raises on purpose."""


class SnapshotError(PymirrorError):
    """The data plane refused a snapshot (a bug in resolve, or a hand-built snapshot)."""


class ListenError(PymirrorError):
    """A listener address could not be bound."""


class ReloadError(PymirrorError):
    """A reload was refused; the running configuration keeps serving."""


class EngineError(PymirrorError):
    """The data plane could not start, or is already shut down."""
