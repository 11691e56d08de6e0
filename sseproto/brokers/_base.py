"""What every broker shares: the local fan-out to this process's subscriptions, the
end-of-subscription signal, and the brokers of this process."""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable
from typing import Any

from .._event import Event

#: Every broker alive in this process, so a server's shutdown hook can end all streams
#: at once (see :mod:`sseproto.gunicorn`).
LIVE: weakref.WeakSet[Any] = weakref.WeakSet()
#: Set when this process is on its way out (SIGTERM, with the handler of
#: :func:`sseproto.gunicorn.drain_on_sigterm`): stream endpoints then answer new
#: requests with ``retry:`` only, and open streams end.
DRAINING = threading.Event()


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


#: The default of every broker's ``max_event_size``: 1 MiB encoded, below what sseproto's
#: client accepts (4 MiB), so no client of ours meets an event it must refuse.
MAX_EVENT_SIZE = 1024 * 1024


def check_event_size(event: Event, limit: int | None) -> None:
    """ValueError when ``event`` encodes to more than ``limit`` bytes (a broker's ``max_event_size``).

    Checked on publish, so that no client ever has to refuse what a server accepted.
    """
    if limit is None:
        return
    # UTF-8 takes at most 4 bytes a character, and a line break in data becomes
    # "\ndata: ": most events are far enough below the limit to skip encoding here.
    if (len(event.data) + len(event.event) + len(event.id or "")) * 7 + 64 <= limit:
        return
    size = len(event.encode())
    if size > limit:
        raise ValueError(f"the event is {size} bytes encoded, more than max_event_size={limit} "
                         "(SSE_MAX_EVENT_SIZE in Flask): send large payloads another way, or raise the limit")


class _Clock:
    """Ends timed waits of subscriptions: one timer thread for the whole process, while
    any subscription waits.

    A stream waits with a timeout between every two events it sends (the timeout is its
    heartbeat). Under gevent a timed wait arms and disarms a timer each time, which was
    a fifth of the per-event cost; waits here are untimed, and this clock wakes the
    subscriptions whose deadline passed. A wait may end up to a tenth of its timeout
    late (at most ``SLACK`` seconds), never early: the clock sleeps until the earliest
    such latest end and then ends every wait already due, so idle streams whose
    deadlines are spread out cost a few scans per second, not one per deadline.
    """

    #: The most a timed wait may end late, in seconds.
    SLACK = 0.1

    def __init__(self) -> None:
        self._waiting: set[LocalSubscription] = set()
        self._wake_at = math.inf  # when the timer thread wakes next; inf while it scans
        self._kick: threading.Event | None = None  # wakes the timer thread; None: not started
        self._start_lock = threading.Lock()

    def wait(self, sub: LocalSubscription, timeout: float) -> None:
        """Wait on ``sub._ready`` for at most about ``timeout`` seconds."""
        due = sub._due = time.monotonic() + timeout
        latest = sub._latest = due + min(self.SLACK, timeout / 10)
        waiting = self._waiting
        waiting.add(sub)
        try:
            # Read after the add: a timer scan that missed ``sub`` has published its
            # next wake-up by then (or still shows inf), so an earlier deadline kicks it.
            if latest < self._wake_at:
                (self._kick or self._start()).set()
            ready = sub._ready
            ready.wait()
            # A scan that read the deadline of this subscription's previous wait may set
            # the flag late: never end a wait early for it.
            while not sub._queue and sub._ended is None and time.monotonic() < due:
                ready.clear()
                if sub._queue or sub._ended is not None:
                    break
                ready.wait()
        finally:
            waiting.discard(sub)
            if not waiting and self._kick is not None:
                self._kick.set()  # the last wait ended: let the timer thread see it and exit

    def _start(self) -> threading.Event:
        """Start the timer thread on first use, with the threading module as it is then
        (gevent may have patched it after this module was imported)."""
        with self._start_lock:  # held only while objects are built: never across a switch
            if self._kick is not None:
                return self._kick
            kick = self._kick = threading.Event()
            thread = threading.Thread(target=self._run, args=(kick,), name="sseproto-clock", daemon=True)
        thread.start()
        return kick

    def _run(self, kick: threading.Event) -> None:
        while True:
            self._wake_at = math.inf
            kick.clear()
            now = time.monotonic()
            earliest = math.inf
            for sub in list(self._waiting):
                if sub._due <= now:
                    sub._ready.set()
                elif sub._latest < earliest:
                    earliest = sub._latest
            if earliest == math.inf:
                # Nothing left to time: exit (no thread outlives the streams), unless
                # waits remain; the next wait after an exit starts a new thread.
                with self._start_lock:
                    if not self._waiting:
                        self._kick = None
                        return
                # Those left were just woken (a new wait, or the last to leave, kicks).
                kick.wait()
                continue
            self._wake_at = earliest
            kick.wait(earliest - now)

    def _after_fork(self) -> None:
        """In a forked child: no timer thread and no waits yet."""
        self.__init__()  # type: ignore[misc]


_CLOCK = _Clock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_CLOCK._after_fork)


class Fanout:
    """Which subscriptions of this process listen to which channels, under one lock.

    Brokers deliver to these subscriptions under ``_lock``, so deliveries never run
    concurrently and follow the order the broker holds the lock in.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, set[Any]] = {}
        self._publish_counters: tuple[Any, ...] = ()
        LIVE.add(self)

    def count_publishes(self, counter: Any) -> None:
        """Call ``counter.inc()`` for every event this broker publishes (from this process);
        how :mod:`sseproto.metrics` counts events published. Added once however often given."""
        if counter not in self._publish_counters:
            self._publish_counters += (counter,)

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
        self._due = self._latest = 0.0  # when a timed wait ends, and at the latest (see _Clock)
        self._ended: str | None = None
        self.replay: Iterable[Event] = ()
        self.gap: tuple[str, ...] = ()

    @property
    def channels(self) -> tuple[str, ...]:
        return self._channels

    def get(self, timeout: float | None = None) -> Event | None:
        """The next live event; None if ``timeout`` seconds pass first (noticed up to a
        tenth of ``timeout``, at most 0.1 s, late: see ``_Clock``).

        Raises :class:`SubscriptionEnded` once closed, cut off for lagging, or ended by
        the broker for another ``reason``.
        """
        queue = self._queue
        # No wait at all for timeout 0: even a zero wait costs, once per event sent.
        if not queue and self._ended is None and (timeout is None or timeout > 0):
            self._ready.clear()
            # Checked again after clearing: a delivery in between has set the flag.
            if not queue and self._ended is None:
                if timeout is None:
                    self._ready.wait()
                else:
                    _CLOCK.wait(self, timeout)
        ended = self._ended
        if ended is not None and (ended == "overflow" or not queue):
            raise SubscriptionEnded(ended)
        if not queue:  # no exception for the common empty case: it costs, once per chunk sent
            return None
        try:
            return queue.popleft()[1]
        except IndexError:  # overflow cleared the queue from another thread just now
            return None

    def close(self) -> None:
        """Unsubscribe; safe to call more than once and from any thread."""
        self._broker._unsubscribe(self)
        self._end("closed")

    def _deliver(self, item: tuple[Any, Event]) -> bool:
        """Queue ``item``, a ``(key, event)`` pair; False when the queue is full (the
        subscription then ends).

        Called under the broker's lock, so deliveries never run concurrently. One pair
        serves every subscriber: nothing is allocated per subscriber and event.
        """
        if self._ended is not None:
            return False
        if len(self._queue) >= self._queue_size:
            self._ended = "overflow"
            self._queue.clear()
            self._ready.set()
            return False
        self._queue.append(item)
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
