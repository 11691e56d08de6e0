"""The in-memory broker: one process, no server, the embedded default.

Each channel keeps a :class:`~sseproto.ReplayBuffer`; all of them draw ids from one
shared counter, so ids order events across channels and one ``Last-Event-ID`` resumes
a stream of several channels. Each subscriber has a bounded queue: publishing never
blocks, and a subscriber that falls ``queue_size`` events behind is cut off (its client
reconnects and replays) instead of slowing the others down.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Iterator, Sequence

from .._event import Event
from .._replay import ReplayBuffer
from ._base import Fanout, LocalSubscription


class MemoryBroker(Fanout):
    """Channels of events in this process's memory, for any number of threads or greenlets.

    ``queue_size`` bounds each subscriber's backlog of live events; keep it no larger
    than ``replay_size`` so a subscriber cut off for lagging can still replay what it
    missed. ``replay_size``, ``replay_max_bytes`` and ``replay_max_age`` (seconds) bound
    each channel's replay buffer; a channel gets one when first published to.

    Ids the broker gives are numbers from one counter for all channels, so any of them
    resumes a stream of several channels. An id the publisher chose is kept as is; it
    resumes streams on its own channel, and is a gap for the others.
    """

    def __init__(
        self,
        *,
        queue_size: int = 1000,
        replay_size: int = 1000,
        replay_max_bytes: int | None = None,
        replay_max_age: float | None = None,
    ) -> None:
        if type(queue_size) is not int or queue_size < 1:
            raise ValueError(f"queue_size must be a positive int, got {queue_size!r}")
        ReplayBuffer(replay_size, max_bytes=replay_max_bytes, max_age=replay_max_age)  # validates
        super().__init__()  # its lock orders publishing: live delivery follows id order on every channel
        self.queue_size = queue_size
        self.replay_size = replay_size
        self.replay_max_bytes = replay_max_bytes
        self.replay_max_age = replay_max_age
        self._counter = itertools.count(time.time_ns() // 1000)
        # Ids from this number on were handed out by this broker: every channel's buffer
        # starts here, so a channel first used late still places earlier ids.
        self._floor = next(self._counter)
        self._high = self._floor  # the largest numeric id handed out
        self._buffers: dict[str, ReplayBuffer] = {}
        self._closed = False

    def publish(self, channel: str, event: Event) -> Event:
        """Store ``event`` on ``channel`` (giving it the next id if it has none) and deliver it."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the broker is closed")
            buffer = self._buffers.get(channel)
            if buffer is None:
                buffer = self._buffers[channel] = self._new_buffer()
            event = buffer.append(event)
            number = _number(event.id)
            if number is not None and number > self._high:
                self._high = number
            item = (None, event)
            lagging = [sub for sub in self._subscribers.get(channel, ()) if not sub._deliver(item)]
            for sub in lagging:
                self._remove(sub)
            return event

    def subscribe(self, channels: Sequence[str], last_event_id: str | None = None) -> MemorySubscription:
        """Subscribe to ``channels``; with ``last_event_id``, collect the events after it."""
        channels = tuple(dict.fromkeys(channels))
        if not channels:
            raise ValueError("subscribe to at least one channel")
        sub = MemorySubscription(self, channels, self.queue_size)
        with self._lock:
            if self._closed:
                raise RuntimeError("the broker is closed")
            if last_event_id:
                sub.replay, sub.gap = self._missed(channels, last_event_id)
            # Registered under the same lock as the replay snapshot: no event falls
            # between the two or shows up in both.
            self._register(sub)
        return sub

    def close(self) -> None:
        """End every subscription and refuse further use."""
        with self._lock:
            self._closed = True
        self.disconnect_all()

    def _new_buffer(self) -> ReplayBuffer:
        return ReplayBuffer(
            self.replay_size,
            max_bytes=self.replay_max_bytes,
            max_age=self.replay_max_age,
            counter=_starting_at(self._floor, self._counter),
        )

    def _missed(self, channels: tuple[str, ...], last_id: str) -> tuple[list[Event], tuple[str, ...]]:
        """Per channel ``since(last_id)`` merged in id order, and the channels with a gap."""
        number = _number(last_id)
        # A number this broker never handed out (from before it started, or not yet
        # issued) cannot be placed on any channel.
        unplaceable = number is not None and not self._floor <= number <= self._high
        found: list[list[Event]] = []
        gap: list[str] = []
        known = False
        unused: list[str] = []
        for channel in channels:
            buffer = self._buffers.get(channel)
            if buffer is None:
                unused.append(channel)
                continue
            events = None if unplaceable else buffer.since(last_id)
            if events is None:
                gap.append(channel)
                events = list(buffer)
            else:
                known = True
            found.append(events)
        # A channel nothing was ever published on missed nothing, if the id is ours at all.
        if unused and (unplaceable or (number is None and not known)):
            gap.extend(unused)
        gap.sort(key=channels.index)
        merged = heapq.merge(*(_keyed(i, events) for i, events in enumerate(found)), key=lambda k: k[0])
        return [event for _, event in merged], tuple(gap)


class MemorySubscription(LocalSubscription):
    """One stream's subscription to a :class:`MemoryBroker`: replay, then live events."""


def _starting_at(first: int, rest: Iterator[int]) -> Iterator[int]:
    """``first``, then the numbers of ``rest``: a buffer's floor, then the shared ids."""
    yield first
    yield from rest


def _keyed(channel: int, events: list[Event]) -> Iterator[tuple[tuple[int, int, int], Event]]:
    """One channel's events with sort keys, for merging channels in id order.

    An id that is not a number sorts right after the numbered event before it.
    """
    number = 0
    for position, event in enumerate(events):
        own = _number(event.id)
        if own is not None:
            number = own
        yield (number, channel, position), event


def _number(id: str | None) -> int | None:
    if id is None or not id.isascii() or not id.isdigit() or len(id) > 30:
        return None
    return int(id)
