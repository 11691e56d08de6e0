"""What every broker shares: the local fan-out to this process's subscriptions, the
end-of-subscription signal, and the brokers of this process."""

from __future__ import annotations

import threading
import weakref
from collections import deque
from typing import Any

from .._event import Event

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


class Fanout:
    """Which subscriptions of this process listen to which channels, under one lock.

    Brokers deliver to these subscriptions under ``_lock``, so deliveries never run
    concurrently and follow the order the broker holds the lock in.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, set[Any]] = {}
        LIVE.add(self)

    def subscriber_count(self, channel: str | None = None) -> int:
        """How many subscriptions of this process are live (on ``channel``, or on any channel)."""
        with self._lock:
            if channel is not None:
                return len(self._subscribers.get(channel, ()))
            return len({sub for subs in self._subscribers.values() for sub in subs})

    def disconnect_all(self) -> int:
        """End every live subscription of this process (their clients reconnect and resume)."""
        with self._lock:
            subs = {sub for subs in self._subscribers.values() for sub in subs}
            self._subscribers.clear()
        for sub in subs:
            sub._end("closed")
        return len(subs)

    def _register(self, sub: LocalSubscription) -> None:
        """Start delivering to ``sub`` (call under ``_lock``)."""
        for channel in sub.channels:
            self._subscribers.setdefault(channel, set()).add(sub)

    def _remove(self, sub: LocalSubscription) -> None:
        """Stop delivering to ``sub`` (call under ``_lock``)."""
        for channel in sub.channels:
            subs = self._subscribers.get(channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[channel]

    def _unsubscribe(self, sub: LocalSubscription) -> None:
        with self._lock:
            self._remove(sub)


class LocalSubscription:
    """One stream's subscription: its replay, then live events from a bounded queue.

    The queue holds ``(key, event)`` pairs; ``key`` is the broker's position of the
    event (None where it needs none).
    """

    def __init__(self, broker: Fanout, channels: tuple[str, ...], queue_size: int) -> None:
        self._broker = broker
        self._channels = channels
        self._queue_size = queue_size
        self._queue: deque[tuple[Any, Event]] = deque()
        # A flag, not a condition: set after each delivery, cleared by the reader before
        # it looks at the queue. Under gevent an Event is far cheaper than a Condition.
        self._ready = threading.Event()
        self._ended: str | None = None
        self.replay: list[Event] = []
        self.gap: tuple[str, ...] = ()

    @property
    def channels(self) -> tuple[str, ...]:
        return self._channels

    def get(self, timeout: float | None = None) -> Event | None:
        """The next live event; None if ``timeout`` seconds pass first.

        Raises :class:`SubscriptionEnded` once closed, cut off for lagging, or ended by
        the broker for another ``reason``.
        """
        queue = self._queue
        # No wait at all for timeout 0: even a zero wait costs, once per event sent.
        if not queue and self._ended is None and (timeout is None or timeout > 0):
            self._ready.clear()
            # Checked again after clearing: a delivery in between has set the flag.
            if not queue and self._ended is None:
                self._ready.wait(timeout)
        ended = self._ended
        if ended is not None and (ended == "overflow" or not queue):
            raise SubscriptionEnded(ended)
        try:
            return queue.popleft()[1]
        except IndexError:
            return None

    def close(self) -> None:
        """Unsubscribe; safe to call more than once and from any thread."""
        self._broker._unsubscribe(self)
        self._end("closed")

    def _deliver(self, event: Event, key: Any = None) -> bool:
        """Queue ``event``; False when the queue is full (the subscription then ends).

        Called under the broker's lock, so deliveries never run concurrently.
        """
        if self._ended is not None:
            return False
        if len(self._queue) >= self._queue_size:
            self._ended = "overflow"
            self._queue.clear()
            self._ready.set()
            return False
        self._queue.append((key, event))
        self._ready.set()
        return True

    def _end(self, reason: str) -> None:
        if self._ended is None:
            self._ended = reason
        self._ready.set()

    def __enter__(self) -> LocalSubscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
