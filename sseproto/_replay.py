"""The replay buffer: recent events of one stream, so a reconnecting client misses nothing."""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from itertools import count, islice
from typing import NamedTuple

from ._event import Event


class TimeIds:
    """Ids for events that have none: microseconds since the epoch, strictly increasing.

    Time-based, so a restarted process does not hand out ids an old client still holds,
    and so the gap between two ids tells how much time passed, not how many events other
    streams drawing from the same source published in between (only events stored within
    the same microsecond push an id one further). Thread-safe.
    """

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def __iter__(self) -> TimeIds:
        return self

    def __next__(self) -> int:
        now = time.time_ns() // 1000
        with self._lock:
            self._last = now if now > self._last else self._last + 1
            return self._last


class Stored(NamedTuple):
    """One stored event: its position in the shared order, the event, its wire bytes, when."""

    position: int
    event: Event
    wire: bytes
    stored_at: float


class ReplayBuffer:
    """Keeps the last events of a stream and answers "what came after id X?".

    Bounded by ``maxlen`` events and, optionally, by ``max_bytes`` of encoded events
    and ``max_age`` seconds. Events appended without an id get the next number of
    ``counter`` (by default a :class:`TimeIds`). Any id is found by what it is, never by
    its form: ids of the application's own (``"1"``, ``"row-7"``) and given ones mix
    freely. Every event also gets the next number of ``order``: buffers that share one
    ``order`` (one per channel of a broker) place their events in one sequence, so a
    broker can resume a stream of several channels from an id found on any one of them.
    Each event is encoded once, when stored; streams replaying it share those bytes.
    Safe to share between threads.
    """

    def __init__(
        self,
        maxlen: int = 1000,
        *,
        max_bytes: int | None = None,
        max_age: float | None = None,
        counter: Iterator[int] | None = None,
        order: Iterator[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if type(maxlen) is not int or maxlen < 1:
            raise ValueError(f"maxlen must be a positive int, got {maxlen!r}")
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 1):
            raise ValueError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        if max_age is not None and not max_age > 0:
            raise ValueError(f"max_age must be a positive number of seconds or None, got {max_age!r}")
        self.maxlen = maxlen
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._clock = clock
        self._counter = TimeIds() if counter is None else counter
        self._order = count() if order is None else order
        self._items: deque[Stored] = deque()  # oldest first, positions increasing
        self._positions: dict[str, int] = {}  # id -> position of its newest stored event
        self._bytes = 0
        # The newest evicted event, (position, id): a client that holds its id missed nothing.
        self._evicted: tuple[int, str] | None = None
        self._lock = threading.Lock()

    def append(self, event: Event) -> Event:
        """Store ``event``, giving it the next id if it has none; return what was stored."""
        with self._lock:
            if event.id is None:
                event = Event(event.data, event.event, str(next(self._counter)), event.retry)
            wire = event.encode()
            position = next(self._order)
            self._items.append(Stored(position, event, wire, self._clock()))
            self._positions[event.id] = position  # type: ignore[index]
            self._bytes += len(wire)
            self._evict()
            return event

    def since(self, last_id: str) -> list[Event] | None:
        """The events stored after the newest event with id ``last_id``, oldest first.

        An empty list means the client is up to date. None means ``last_id`` is unknown or
        was evicted: events may have been lost in between (a gap), and the caller decides
        how to tell the client.
        """
        with self._lock:
            self._evict()
            position = self._position(last_id)
            if position is None:
                return None
            stored, lost = self._after(position)
            return None if lost else [item.event for item in stored]

    def position(self, last_id: str) -> int | None:
        """The position of the newest event with id ``last_id`` (retained, or the newest
        evicted one), or None when this buffer does not know the id."""
        with self._lock:
            self._evict()
            return self._position(last_id)

    def after(self, position: int) -> tuple[list[Stored], bool]:
        """The stored events after ``position``, oldest first, and whether any event after
        it was evicted (lost to a client that saw everything up to ``position``)."""
        with self._lock:
            self._evict()
            return self._after(position)

    @property
    def last_id(self) -> str | None:
        """The id of the newest event stored (retained, or else the newest evicted), or None."""
        with self._lock:
            if self._items:
                return self._items[-1].event.id
            return None if self._evicted is None else self._evicted[1]

    @property
    def last_position(self) -> int | None:
        """The position of the newest event this buffer stored (retained or evicted), or None."""
        with self._lock:
            if self._items:
                return self._items[-1].position
            return None if self._evicted is None else self._evicted[0]

    def __len__(self) -> int:
        with self._lock:
            self._evict()
            return len(self._items)

    def __iter__(self) -> Iterator[Event]:
        """The stored events, oldest first (a snapshot)."""
        with self._lock:
            self._evict()
            return iter([item.event for item in self._items])

    def _position(self, last_id: str) -> int | None:
        position = self._positions.get(last_id)
        if position is None and self._evicted is not None and self._evicted[1] == last_id:
            position = self._evicted[0]
        return position

    def _after(self, position: int) -> tuple[list[Stored], bool]:
        items = self._items
        start = bisect_right(items, position, key=_position_of)
        lost = self._evicted is not None and self._evicted[0] > position
        return ([] if start == len(items) else list(islice(items, start, None))), lost

    def _evict(self) -> None:
        items = self._items
        oldest = None if self.max_age is None else self._clock() - self.max_age
        while items and (
            len(items) > self.maxlen
            or (self.max_bytes is not None and self._bytes > self.max_bytes)
            or (oldest is not None and items[0].stored_at < oldest)
        ):
            item = items.popleft()
            self._bytes -= len(item.wire)
            event_id: str = item.event.id  # type: ignore[assignment]
            if self._positions.get(event_id) == item.position:
                del self._positions[event_id]
            self._evicted = (item.position, event_id)


def _position_of(item: Stored) -> int:
    return item.position
