"""The replay buffer: recent events of one stream, so a reconnecting client misses nothing."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from itertools import count

from ._event import Event


class ReplayBuffer:
    """Keeps the last events of a stream and answers "what came after id X?".

    Bounded by ``maxlen`` events and, optionally, by ``max_bytes`` of encoded events
    and ``max_age`` seconds. Events appended without an id get the next number of
    ``counter`` (by default a counter starting at the current time in microseconds, so a
    restarted process does not hand out ids an old client still holds). Buffers that
    share one counter (one per channel of a broker) hand out ids that order events
    across all of them, so one ``Last-Event-ID`` can resume a stream of several channels.
    Safe to share between threads.
    """

    def __init__(
        self,
        maxlen: int = 1000,
        *,
        max_bytes: int | None = None,
        max_age: float | None = None,
        counter: Iterator[int] | None = None,
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
        self._counter = count(time.time_ns() // 1000) if counter is None else counter
        # Numeric ids below this one were handed out before this buffer existed: what
        # happened to them is not known here.
        self._floor = next(self._counter)
        # (event, encoded size, time appended), oldest first.
        self._items: deque[tuple[Event, int, float]] = deque()
        self._seq: dict[str, int] = {}  # id -> position counter of its newest event
        self._first_seq = 0  # position counter of self._items[0]
        self._bytes = 0
        # The id of the newest evicted event: a client that holds it has missed nothing.
        self._evicted_id: str | None = None
        self._lock = threading.Lock()

    def append(self, event: Event) -> Event:
        """Store ``event``, giving it the next id if it has none; return what was stored."""
        with self._lock:
            if event.id is None:
                event = Event(event.data, event.event, str(next(self._counter)), event.retry)
            size = len(event.encode())
            self._items.append((event, size, self._clock()))
            self._seq[event.id] = self._first_seq + len(self._items) - 1  # type: ignore[index]
            self._bytes += size
            self._evict()
            return event

    def since(self, last_id: str) -> list[Event] | None:
        """The events stored after ``last_id``, oldest first.

        An empty list means the client is up to date. None means ``last_id`` is unknown or
        was evicted: events may have been lost in between (a gap), and the caller decides
        how to tell the client. A numeric ``last_id`` this buffer never held (an id of
        another buffer on the same counter) is placed by its number: it is known if it
        is not older than this buffer and nothing after it was evicted.
        """
        with self._lock:
            self._evict()
            seq = self._seq.get(last_id)
            if seq is not None:
                start = seq - self._first_seq + 1
                return [self._items[i][0] for i in range(start, len(self._items))]
            if last_id == self._evicted_id:
                return [item[0] for item in self._items]
            number = _number(last_id)
            if number is None or number < self._floor:
                return None
            evicted = _number(self._evicted_id) if self._evicted_id is not None else None
            if self._evicted_id is not None and (evicted is None or evicted > number):
                return None
            # Start after the last event numbered up to last_id; events with ids of the
            # application's own between it and the next numbered one are included.
            start = 0
            for i in range(len(self._items) - 1, -1, -1):
                n = _number(self._items[i][0].id)
                if n is not None and n <= number:
                    start = i + 1
                    break
            return [self._items[i][0] for i in range(start, len(self._items))]

    @property
    def last_id(self) -> str | None:
        """The id of the newest stored event, or None when empty."""
        with self._lock:
            return self._items[-1][0].id if self._items else self._evicted_id

    def __len__(self) -> int:
        with self._lock:
            self._evict()
            return len(self._items)

    def __iter__(self) -> Iterator[Event]:
        """The stored events, oldest first (a snapshot)."""
        with self._lock:
            self._evict()
            return iter([item[0] for item in self._items])

    def _evict(self) -> None:
        items = self._items
        oldest = None if self.max_age is None else self._clock() - self.max_age
        while items and (
            len(items) > self.maxlen
            or (self.max_bytes is not None and self._bytes > self.max_bytes)
            or (oldest is not None and items[0][2] < oldest)
        ):
            event, size, _ = items.popleft()
            self._bytes -= size
            if self._seq.get(event.id) == self._first_seq:  # type: ignore[arg-type]
                del self._seq[event.id]  # type: ignore[arg-type]
            self._first_seq += 1
            self._evicted_id = event.id


def _number(id: str | None) -> int | None:
    """An id as the counter's number, or None for an id that is not one."""
    if id is None or not id.isascii() or not id.isdigit() or len(id) > 30:
        return None
    return int(id)
