"""The in-memory broker: one process, no server, the embedded default.

Each channel keeps a :class:`~sseproto.ReplayBuffer`. Ids the broker gives are
microseconds since the epoch, strictly increasing across channels; besides its id,
every event gets a position in one sequence of all channels, so a ``Last-Event-ID``
found on one channel of a stream places the client on all of them, whatever the id
looks like (the broker's, or one the publisher chose). Each subscriber has a bounded
queue: publishing never blocks, and a subscriber that falls ``queue_size`` events behind
is cut off (its client reconnects and replays) instead of slowing the others down.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from .._event import Event
from .._replay import ReplayBuffer, Stored, TimeIds
from ._base import MAX_EVENT_SIZE, Fanout, LocalSubscription, check_event_size


class MemoryBroker(Fanout):
    """Channels of events in this process's memory, for any number of threads or greenlets.

    ``queue_size`` bounds each subscriber's backlog of live events; keep it no larger
    than ``replay_size`` so a subscriber cut off for lagging can still replay what it
    missed. ``replay_size``, ``replay_max_bytes`` and ``replay_max_age`` (seconds) bound
    each channel's replay buffer; a channel gets one when first published to.
    ``retained_channels`` bounds how many channels keep one: past it, the channel
    published to least recently is forgotten (a client resuming on it gets the gap
    event). A channel whose buffer has emptied by age, with nobody subscribed, is
    forgotten too. ``max_event_size`` bounds one event's encoded bytes (None: no bound).

    A ``Last-Event-ID`` is known when one of the requested channels stored an event with
    that id (or it is the newest such event evicted): ids of channels a stream does not
    read are gaps, so ids and gap answers tell a client nothing about other channels.
    The broker's ids tell when an event was published, and nothing of how many events
    other channels had (only events within the same microsecond push an id one further).
    An id the publisher chose may take any form; if it repeats, the newest event with
    it on the requested channels counts.
    """

    def __init__(
        self,
        *,
        queue_size: int = 1000,
        replay_size: int = 1000,
        replay_max_bytes: int | None = None,
        replay_max_age: float | None = None,
        retained_channels: int = 10_000,
        max_event_size: int | None = MAX_EVENT_SIZE,
    ) -> None:
        for name, value in (("queue_size", queue_size), ("retained_channels", retained_channels)):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if max_event_size is not None and (type(max_event_size) is not int or max_event_size < 1):
            raise ValueError(f"max_event_size must be a positive int or None, got {max_event_size!r}")
        ReplayBuffer(replay_size, max_bytes=replay_max_bytes, max_age=replay_max_age)  # validates
        super().__init__()  # its lock orders publishing: live delivery follows id order on every channel
        self.queue_size = queue_size
        self.replay_size = replay_size
        self.replay_max_bytes = replay_max_bytes
        self.replay_max_age = replay_max_age
        self.retained_channels = retained_channels
        self.max_event_size = max_event_size
        self._ids = TimeIds()
        self._order = itertools.count()
        # Least recently published first.
        self._buffers: OrderedDict[str, ReplayBuffer] = OrderedDict()
        # Channels whose buffer was dropped: the (position, id) of their newest event, so a
        # client resuming on them learns exactly whether it missed something. Bounded too:
        # past it, the newest position dropped from here is remembered for all the others.
        self._forgotten: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._forgotten_floor = -1
        self._closed = False

    @property
    def channel_count(self) -> int:
        """How many channels keep a replay buffer now."""
        with self._lock:
            return len(self._buffers)

    def publish(self, channel: str, event: Event) -> Event:
        """Store ``event`` on ``channel`` (giving it the next id if it has none) and deliver it.

        ValueError when the event is larger than ``max_event_size``.
        """
        return self._publish_with_prev(channel, event)[0]

    def last_id(self, channel: str) -> str | None:
        """The id of the newest event published on ``channel``, retained or not; None when
        the channel was never published to (or was forgotten too long ago to remember).

        What a GRIP proxy checks a message's ``prev-id`` against (see :mod:`sseproto.grip`).
        """
        with self._lock:
            return self._last_id(channel)

    def _publish_with_prev(self, channel: str, event: Event) -> tuple[Event, str | None]:
        """:meth:`publish`, and the channel's :meth:`last_id` just before, read in the same step."""
        if not isinstance(channel, str) or not channel:
            raise ValueError(f"channel must be a non-empty str, got {channel!r}")
        check_event_size(event, self.max_event_size)
        with self._lock:
            if self._closed:
                raise RuntimeError("the broker is closed")
            prev_id = self._last_id(channel)
            buffer = self._buffers.get(channel)
            if buffer is None:
                buffer = self._new_buffer(channel)
            else:
                self._buffers.move_to_end(channel)
            event = buffer.append(event)
            item = (None, event)
            lagging = [sub for sub in self._subscribers.get(channel, ()) if not sub._deliver(item)]
            for sub in lagging:
                self._remove(sub)
            if self.replay_max_age is not None or self.replay_max_bytes is not None:
                self._sweep()
        for counter in self._publish_counters:
            counter.inc()
        return event, prev_id

    def subscribe(
        self, channels: Sequence[str], last_event_id: str | None = None, *, max_replay: int | None = None
    ) -> MemorySubscription:
        """Subscribe to ``channels``; with ``last_event_id``, collect the events after it
        (at most ``max_replay``: past it, the newest, with a gap on the channels cut)."""
        channels = tuple(dict.fromkeys(channels))
        if not channels:
            raise ValueError("subscribe to at least one channel")
        if max_replay is not None and (type(max_replay) is not int or max_replay < 0):
            raise ValueError(f"max_replay must be an int >= 0 or None, got {max_replay!r}")
        sub = MemorySubscription(self, channels, self.queue_size)
        with self._lock:
            if self._closed:
                raise RuntimeError("the broker is closed")
            if last_event_id:
                sub.replay, sub.gap = self._missed(channels, last_event_id, max_replay)
            # Registered under the same lock as the replay snapshot: no event falls
            # between the two or shows up in both.
            self._register(sub)
        return sub

    def close(self) -> None:
        """End every subscription and refuse further use."""
        with self._lock:
            self._closed = True
        self.disconnect_all()

    def _last_id(self, channel: str) -> str | None:
        """:meth:`last_id`, under the lock: the buffer's newest id (retained or evicted), else
        the one remembered when the channel was forgotten."""
        buffer = self._buffers.get(channel)
        if buffer is not None:
            return buffer.last_id or None  # "": a new buffer's placeholder, before its first event
        dropped = self._forgotten.get(channel)
        return None if dropped is None else dropped[1]

    def _new_buffer(self, channel: str) -> ReplayBuffer:
        """A buffer for ``channel`` (under the lock), forgetting the stalest channel past the bound."""
        # A channel used before and forgotten: what it dropped is lost to older clients.
        dropped = self._forgotten.pop(channel, None)
        while len(self._buffers) >= self.retained_channels:
            self._forget(next(iter(self._buffers)))
        buffer = ReplayBuffer(
            self.replay_size,
            max_bytes=self.replay_max_bytes,
            max_age=self.replay_max_age,
            counter=self._ids,
            order=self._order,
        )
        if dropped is None and self._forgotten_floor >= 0:
            dropped = (self._forgotten_floor, "")
        if dropped is not None:
            buffer._evicted = dropped
        self._buffers[channel] = buffer
        return buffer

    def _forget(self, channel: str) -> None:
        """Drop ``channel``'s buffer (under the lock), remembering where it ended."""
        buffer = self._buffers.pop(channel)
        position, last_id = buffer.last_position, buffer.last_id
        if position is None or last_id is None:
            return
        self._forgotten[channel] = (position, last_id)
        while len(self._forgotten) > self.retained_channels:
            _, (oldest, _) = self._forgotten.popitem(last=False)
            self._forgotten_floor = max(self._forgotten_floor, oldest)

    def _sweep(self) -> None:
        """Forget the stalest channels whose buffers emptied, when nobody reads them (a few per call)."""
        for channel in list(itertools.islice(self._buffers, 2)):
            if channel in self._subscribers or len(self._buffers[channel]):
                break
            self._forget(channel)

    def _missed(
        self, channels: tuple[str, ...], last_id: str, max_replay: int | None
    ) -> tuple[Replay, tuple[str, ...]]:
        """What ``channels`` stored after ``last_id`` (under the lock), and the channels with a gap."""
        buffers = [self._buffers.get(channel) for channel in channels]
        placed: int | None = None
        for channel, buffer in zip(channels, buffers, strict=True):
            if buffer is not None:
                position = buffer.position(last_id)
            else:
                dropped = self._forgotten.get(channel)
                position = dropped[0] if dropped is not None and dropped[1] == last_id else None
            if position is not None and (placed is None or position > placed):
                placed = position
        parts: list[list[Stored]] = []
        gap: list[str] = []
        for channel, buffer in zip(channels, buffers, strict=True):
            if placed is None:  # not an id of these channels: anything may have been missed
                gap.append(channel)
                stored = [] if buffer is None else buffer.after(-1)[0]
            elif buffer is not None:
                stored, lost = buffer.after(placed)
                if lost:
                    gap.append(channel)
            else:
                dropped = self._forgotten.get(channel)
                if (dropped[0] if dropped is not None else self._forgotten_floor) > placed:
                    gap.append(channel)
                stored = []
            parts.append(stored)
        if max_replay is not None and sum(map(len, parts)) > max_replay:
            parts = _newest(parts, max_replay, channels, gap)
        return Replay([part for part in parts if part]), tuple(sorted(gap, key=channels.index))


class Replay:
    """What a subscription missed: snapshots of its channels, merged in publish order as read.

    Iterating gives the events; :meth:`wire` gives their encoded bytes, shared with the
    broker's buffers, so a stream replaying them builds no copy of the history.
    """

    __slots__ = ("_parts",)

    def __init__(self, parts: list[list[Stored]]) -> None:
        self._parts = parts

    def __iter__(self) -> Iterator[Event]:
        return (item.event for item in self._merged())

    def __len__(self) -> int:
        return sum(map(len, self._parts))

    def wire(self) -> Iterator[bytes]:
        """The events' wire bytes, in the order iterating gives the events."""
        return (item.wire for item in self._merged())

    def _merged(self) -> Iterator[Stored]:
        if len(self._parts) == 1:
            return iter(self._parts[0])
        return heapq.merge(*self._parts)  # positions are unique: tuples compare by them alone


def _newest(
    parts: list[list[Stored]], limit: int, channels: tuple[str, ...], gap: list[str]
) -> list[list[Stored]]:
    """Keep the newest ``limit`` events of ``parts``; a channel that loses some joins ``gap``."""
    if limit == 0:
        cutoff = None
    else:
        tails = (item.position for part in parts for item in part[-limit:])
        cutoff = heapq.nlargest(limit, tails)[-1]
    kept = []
    for channel, part in zip(channels, parts, strict=True):
        start = len(part) if cutoff is None else bisect_left(part, cutoff, key=_position_of)
        if start and channel not in gap:
            gap.append(channel)
        kept.append(part[start:])
    return kept


def _position_of(item: Stored) -> int:
    return item.position


class MemorySubscription(LocalSubscription):
    """One stream's subscription to a :class:`MemoryBroker`: replay, then live events."""
