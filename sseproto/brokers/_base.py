"""What every broker shares: the end-of-subscription signal, and the brokers of this process."""

from __future__ import annotations

import weakref
from typing import Any

#: Every broker alive in this process, so a server's shutdown hook can end all streams
#: at once (see :mod:`sseproto.gunicorn`).
LIVE: weakref.WeakSet[Any] = weakref.WeakSet()


class SubscriptionEnded(Exception):
    """A subscription delivers no more events.

    ``reason`` is ``"closed"`` (closed on purpose: by the stream, or by the broker
    ending streams), ``"overflow"`` (the subscriber fell ``queue_size`` events behind;
    its client reconnects and replays from its last event id) or ``"unavailable"``
    (a networked broker could not replay: the client comes back with the same id).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"subscription ended: {reason}")
        self.reason = reason
