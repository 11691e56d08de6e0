"""The one exception hierarchy: every error says whose fault it was."""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of every error sseproto raises about the event-stream format."""


class LocalProtocolError(ProtocolError, ValueError):
    """The caller asked for something the format cannot carry (our side's fault)."""


class RemoteProtocolError(ProtocolError):
    """The bytes received break a rule or a limit (the peer's fault)."""


class LimitExceeded(RemoteProtocolError):
    """Incoming data went past a configured size limit; memory stays bounded.

    ``limit`` names the keyword argument that sets it, ``value`` is its size.
    """

    def __init__(self, limit: str, value: int, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value
