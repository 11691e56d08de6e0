"""The Redis broker: history in Redis Streams, one listener connection per process.

Works with Redis >= 6.2 and Valkey. Keys, under ``key_prefix`` (default ``sseproto:``):

- ``<prefix>clock``: a hash with the last id handed out (``ms``, ``seq``), the number
  of events published (``n``) and the first id ever handed out (``floor``).
- ``<prefix>channel:<name>``: one stream per channel, the replay history, trimmed with
  ``MAXLEN ~ replay_size`` (and ``MINID ~`` when ``replay_max_age`` is set).
- ``<prefix>feed``: one stream of every event of every channel, trimmed with ``MAXLEN ~
  feed_size``; each process reads it with one ``XREAD BLOCK`` connection and fans the
  events out to its local subscribers.

Ids are Redis stream ids (``<ms>-<seq>``) that a Lua script allocates from Redis
``TIME`` and the clock, then uses for both ``XADD`` calls in the same script: they
increase strictly across all channels of one Redis, so one ``Last-Event-ID`` resumes a
stream of several channels, and no two channels ever share an id. Each channel entry
also records the id of the channel's previous entry (field ``p``), so after trimming the
oldest retained entry names the newest trimmed one: an id older than that is a gap.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .._event import Event
from . import BrokerUnavailable
from ._base import Fanout, LocalSubscription

__all__ = ["RedisBroker", "RedisSubscription"]

log = logging.getLogger("sseproto.redis")

# Errors that mean "Redis cannot be reached now" (a refused or dropped connection, a
# timeout, a server still loading its data, no free connection in the pool).
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)

_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
_MAX = 2**64

# Allocates the next id from Redis TIME and the clock, appends the event to its channel
# stream and to the feed, trims both. One script, so ids and order are the same for both
# streams and no id is ever handed out twice.
# KEYS: clock, channel stream, feed. ARGV: channel, replay maxlen, max age in ms (0:
# none), feed maxlen, then the event's field/value pairs.
_PUBLISH = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local seq = 0
local n = 1
local clock = redis.call('HMGET', KEYS[1], 'ms', 'seq', 'n')
if clock[1] then
  local last = tonumber(clock[1])
  if ms <= last then
    ms = last
    seq = tonumber(clock[2]) + 1
  end
  n = tonumber(clock[3]) + 1
end
local id = string.format('%.0f-%.0f', ms, seq)
if not clock[1] then
  redis.call('HSET', KEYS[1], 'floor', id)
end
redis.call('HSET', KEYS[1], 'ms', string.format('%.0f', ms), 'seq', string.format('%.0f', seq),
           'n', string.format('%.0f', n))
local prev = ''
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if top[1] then
  prev = top[1][1]
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[2])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then prev = info[i + 1] end
  end
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id, 'p', prev, unpack(fields))
if ARGV[3] ~= '0' then
  redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('%.0f', ms - tonumber(ARGV[3])))
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], id, 'c', ARGV[1], 'n', string.format('%.0f', n),
           unpack(fields))
return id
"""

# The stream id of the newest entry whose own id (field ``i``) is ARGV[1], per channel
# stream in KEYS ('' where none), looking at no more than ARGV[2] entries of each.
_FIND = """
local found = {}
for k, key in ipairs(KEYS) do
  found[k] = ''
  local entries = redis.call('XREVRANGE', key, '+', '-', 'COUNT', ARGV[2])
  for _, entry in ipairs(entries) do
    local f = entry[2]
    for i = 1, #f, 2 do
      if f[i] == 'i' and f[i + 1] == ARGV[1] then found[k] = entry[1] end
    end
    if found[k] ~= '' then break end
  end
end
return found
"""


def _key(id: str | None) -> tuple[int, int] | None:
    """A stream id as a sortable pair, or None when ``id`` is not one."""
    if id is None:
        return None
    match = _ID.fullmatch(id)
    if match is None:
        return None
    ms, seq = int(match[1]), int(match[2])
    if ms >= _MAX or seq >= _MAX:
        return None
    return ms, seq


def _id(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]}"


def _event(entry_id: str, fields: Mapping[str, str]) -> Event:
    """The event a stream entry holds; its id is the stream id unless the publisher chose one."""
    retry = fields.get("r")
    return Event(
        fields.get("d", ""),
        fields.get("e", "message"),
        fields.get("i", entry_id),
        None if retry is None else int(retry),
    )


def _redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class RedisBroker(Fanout):
    """Channels of events in Redis, shared by every process and server that uses the same Redis.

    ``url`` is a redis-py URL: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://``
    (TLS) or ``unix://[[user]:password@]/path/to/socket[?db=N]``. Settings:

    - ``queue_size``: live events a subscriber may lag behind before it is cut off (it
      reconnects and replays); keep it no larger than ``replay_size``.
    - ``replay_size``: events kept per channel for replay, at least (``MAXLEN ~``: Redis
      trims whole stream nodes, so up to about 100 more stay).
    - ``replay_max_age``: seconds after which an event may be trimmed (``MINID ~``, applied
      when its channel is published to); None keeps events until ``replay_size`` evicts them.
    - ``feed_size``: events kept in the feed every process reads; a listener that falls
      this far behind (or finds Redis emptied by a restart) ends its local streams, whose
      clients reconnect and replay from the channel streams.
    - ``key_prefix``: the prefix of every key; brokers with different prefixes share nothing.
    - ``pool_size``: connections for publishing and replay queries; with the listener's,
      a process never holds more than ``pool_size + 1`` connections, whatever the number
      of streams.
    - ``socket_timeout``: seconds to connect, and to wait for an answer, before Redis
      counts as unreachable; ``block``: seconds one ``XREAD`` waits;
      ``reconnect_max``: the cap of the listener's reconnection backoff (seconds).

    Faults: when Redis cannot be reached, :meth:`publish` raises :class:`BrokerUnavailable`;
    the listener reconnects with capped, jittered backoff while open streams stay open
    (``get`` just times out, so heartbeats go on) and, once back, delivers everything
    stored meanwhile. A subscription asked for while Redis is unreachable ends at once
    with reason ``"unavailable"``, so its client retries later with the same
    ``Last-Event-ID``. If Redis comes back without the events (restarted without
    persistence, flushed), every local stream is ended; clients reconnect and get the gap
    event.

    Ids the publisher chose (``Event(id=...)``) are kept as the event's id, stored beside
    the stream id; resuming from one searches the stream's channels, newest entries first
    (up to ``replay_size + 1000`` each), and places it by its stream id on all of them
    (not found: a gap). An id that looks like a stream id (``digits-digits``) is refused,
    as it would be read as one.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        queue_size: int = 1000,
        replay_size: int = 1000,
        replay_max_age: float | None = None,
        feed_size: int = 10_000,
        key_prefix: str = "sseproto:",
        pool_size: int = 4,
        socket_timeout: float = 5.0,
        block: float = 5.0,
        reconnect_max: float = 2.0,
        client_name: str | None = "sseproto",
    ) -> None:
        for name, value in (("queue_size", queue_size), ("replay_size", replay_size),
                            ("feed_size", feed_size), ("pool_size", pool_size)):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if replay_max_age is not None and not replay_max_age > 0:
            raise ValueError(f"replay_max_age must be a positive number of seconds or None, "
                             f"got {replay_max_age!r}")
        for name, number in (("socket_timeout", socket_timeout), ("block", block),
                             ("reconnect_max", reconnect_max)):
            if not number > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {number!r}")
        self.url = url
        self.queue_size = queue_size
        self.replay_size = replay_size
        self.replay_max_age = replay_max_age
        self.feed_size = feed_size
        self.key_prefix = key_prefix
        self.pool_size = pool_size
        self.socket_timeout = socket_timeout
        self.block = block
        self.reconnect_max = reconnect_max
        self._clock_key = key_prefix + "clock"
        self._feed_key = key_prefix + "feed"
        common: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": socket_timeout,
            # No hidden retries: a command that failed reports it (a retried publish could
            # store an event twice), and the listener has its own backoff.
            "retry": Retry(NoBackoff(), 0),
            "client_name": client_name,
        }
        if not url.lower().startswith("unix:"):
            common["socket_keepalive"] = True  # TCP only
        # Raises ValueError for a URL redis-py does not understand.
        self._pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=pool_size, timeout=socket_timeout, socket_timeout=socket_timeout, **common
        )
        self._client = redis.Redis(connection_pool=self._pool)
        self._listen_pool = redis.ConnectionPool.from_url(
            url, max_connections=1, socket_timeout=block + socket_timeout, **common
        )
        self._listen_client = redis.Redis(connection_pool=self._listen_pool)
        self._publish_script = self._client.register_script(_PUBLISH)
        self._find_script = self._client.register_script(_FIND)
        self._pid = os.getpid()
        super().__init__()
        self._start_lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: threading.Thread | None = None
        self._connected = False
        self._closed = False
        # What the listener has read of the feed: everything up to ``_position`` has been
        # handed to the subscribers registered at the time, later events will be.
        self._position: tuple[int, int] | None = None
        self._n = 0  # the feed counter of the event at _position
        self._epoch: str | None = None  # the clock's floor: changes when Redis lost its data

    @property
    def connected(self) -> bool:
        """Whether the listener holds a working connection to Redis now."""
        return self._connected

    def publish(self, channel: str, event: Event) -> Event:
        """Store ``event`` on ``channel`` and hand it to every subscriber in every process.

        Returns the stored event, whose id is its stream id unless the publisher chose
        one. Raises :class:`BrokerUnavailable` when Redis cannot be reached; after a
        timeout (not a refused connection) the event may still have been stored.
        """
        if not isinstance(channel, str) or not channel:
            raise ValueError(f"channel must be a non-empty str, got {channel!r}")
        if event.id is not None and _key(event.id) is not None:
            raise ValueError(f"the Redis broker gives ids of the form {event.id!r} itself; "
                             "choose an id of another form, or none")
        if self._closed:
            raise RuntimeError("the broker is closed")
        event.encode()  # LocalProtocolError for text UTF-8 cannot carry (a lone surrogate)
        fields = ["d", event.data]
        if event.event != "message":
            fields += ["e", event.event]
        if event.id is not None:
            fields += ["i", event.id]
        if event.retry is not None:
            fields += ["r", str(event.retry)]
        age = 0 if self.replay_max_age is None else max(1, round(self.replay_max_age * 1000))
        try:
            stream_id = self._publish_script(
                keys=[self._clock_key, self._channel_key(channel), self._feed_key],
                args=[channel, self.replay_size, age, self.feed_size, *fields],
            )
        except _UNREACHABLE as exc:
            raise BrokerUnavailable(
                f"cannot publish to {channel!r}: Redis at {_redacted(self.url)} is unreachable ({exc})"
            ) from exc
        return Event(event.data, event.event, str(stream_id) if event.id is None else event.id, event.retry)

    def subscribe(self, channels: Sequence[str], last_event_id: str | None = None) -> RedisSubscription:
        """Subscribe to ``channels``; with ``last_event_id``, collect the events after it.

        Live delivery starts after the newest event stored at the time. When Redis cannot
        be reached, a subscription with ``last_event_id`` ends at once (reason
        ``"unavailable"``, nothing to replay: its client retries later); one without waits
        for Redis (unless this broker never reached it) and may then also get events
        published shortly before it subscribed.
        """
        channels = tuple(dict.fromkeys(channels))
        if not channels:
            raise ValueError("subscribe to at least one channel")
        if self._closed:
            raise RuntimeError("the broker is closed")
        sub = RedisSubscription(self, channels, self.queue_size)
        placed: tuple[int, int] | None = None
        try:
            self._start()
            if last_event_id:
                placed = self._place(channels, last_event_id)
        except _UNREACHABLE as exc:
            log.warning("cannot subscribe to %s: Redis is unreachable (%s)", ", ".join(channels), exc)
            sub._end("unavailable")
            return sub
        with self._lock:
            if self._closed:
                raise RuntimeError("the broker is closed")
            position = self._position
            assert position is not None  # set by _start
            # Registered first, delivering what the listener reads after its position; the
            # newest id read below then moves the start up: nothing falls between the
            # replay and live delivery, nothing is in both.
            sub._floor = position
            self._register(sub)
        try:
            if last_event_id:
                sub.replay, sub.gap, head = self._missed(channels, placed)
            else:
                _, head, _ = self._read_clock(self._client)
        except _UNREACHABLE as exc:
            if not last_event_id:  # live events from the listener's position on, once Redis is back
                return sub
            log.warning("cannot replay %s: Redis is unreachable (%s)", ", ".join(channels), exc)
            self._unsubscribe(sub)
            sub._end("unavailable")
            return sub
        with self._lock:
            sub._skip_to(head)  # drops what the listener queued that the replay holds
        return sub

    def close(self) -> None:
        """End every subscription, stop the listener, close the connections; refuse further use."""
        with self._lock:
            self._closed = True
        self._stopping.set()
        self.disconnect_all()
        listener = self._listener
        if listener is not None and listener is not threading.current_thread():
            deadline = time.monotonic() + self.block + self.socket_timeout
            while listener.is_alive() and time.monotonic() < deadline:
                # Wakes a blocked XREAD, again if one began while the last one ended.
                self._listen_pool.disconnect()
                listener.join(0.05)
        self._listen_pool.disconnect()
        self._pool.disconnect()

    def __enter__(self) -> RedisBroker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _channel_key(self, channel: str) -> str:
        return f"{self.key_prefix}channel:{channel}"

    def _start(self) -> None:
        """Know the feed position and run the listener (again, in a forked child)."""
        if self._pid != os.getpid():
            self._forked()
        if self._listener is not None and self._position is not None:
            return
        with self._start_lock:
            if self._position is None:
                self._sync(self._client)
            if self._listener is None:
                listener = threading.Thread(target=self._listen, name="sseproto-redis-listener", daemon=True)
                listener.start()
                self._listener = listener

    def _forked(self) -> None:
        """In a child process: the parent's listener thread, subscribers and connections are not ours."""
        self._pid = os.getpid()
        super().__init__()  # a fresh lock, and no subscribers
        self._start_lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener = None
        self._connected = False
        self._position = None
        self._n = 0
        self._epoch = None
        # redis-py's pools drop the parent's connections themselves on first use here.

    def _place(self, channels: tuple[str, ...], last_id: str) -> tuple[int, int] | None:
        """The stream id ``last_id`` stands for, or None when this Redis never handed it out."""
        key = _key(last_id)
        if key is None:  # an id the publisher chose, or a foreign one
            found = self._find_script(
                keys=[self._channel_key(c) for c in channels], args=[last_id, self.replay_size + 1000]
            )
            keys = [k for k in (_key(str(f)) for f in found) if k is not None]
            if not keys:
                return None
            key = max(keys)
        floor, head, _ = self._read_clock(self._client)
        first = _key(floor)
        if first is None or not first <= key <= head:
            return None
        return key

    def _missed(
        self, channels: tuple[str, ...], placed: tuple[int, int] | None
    ) -> tuple[list[Event], tuple[str, ...], tuple[int, int]]:
        """The events of ``channels`` after ``placed`` in id order, the gaps, and the newest id.

        ``placed`` None (an id this Redis never handed out) is a gap on every channel, whose
        retained events are then replayed in full. One transaction: the events, what was
        trimmed and the newest id handed out are read at one instant.
        """
        pipe = self._client.pipeline(transaction=True)
        pipe.hmget(self._clock_key, ["ms", "seq"])
        start = "-" if placed is None else "(" + _id(placed)
        for channel in channels:
            key = self._channel_key(channel)
            pipe.xrange(key, start, "+")
            pipe.xinfo_stream(key)
        results = pipe.execute(raise_on_error=False)
        clock = results[0]
        if isinstance(clock, Exception):
            raise clock
        head = (0, 0) if clock[0] is None else (int(clock[0]), int(clock[1]))
        found: list[tuple[tuple[int, int], Event]] = []
        gap: list[str] = []
        for i, channel in enumerate(channels):
            entries, info = results[1 + 2 * i], results[2 + 2 * i]
            if isinstance(entries, Exception):
                raise entries
            for entry_id, fields in entries:
                entry_key = _key(entry_id)
                if entry_key is not None:
                    found.append((entry_key, _event(entry_id, fields)))
            if placed is None:
                gap.append(channel)
            elif isinstance(info, dict):
                trimmed = _newest_trimmed(info)
                if trimmed is not None and trimmed > placed:
                    gap.append(channel)
            elif not isinstance(info, redis.ResponseError):
                raise TypeError(f"unexpected XINFO STREAM reply {info!r}")
            # else: the channel has no stream yet, nothing was published on it.
        found.sort(key=lambda item: item[0])
        return [event for _, event in found], tuple(gap), head

    def _read_clock(self, client: redis.Redis) -> tuple[str | None, tuple[int, int], int]:
        """The clock: first id ever handed out (None: none yet), last id ((0, 0): none), event count."""
        floor, ms, seq, n = cast(list[Any], client.hmget(self._clock_key, ["floor", "ms", "seq", "n"]))
        head = (0, 0) if ms is None else (int(ms), int(seq))
        return floor, head, int(n or 0)

    def _sync(self, client: redis.Redis) -> None:
        """Read the clock; on first use take its position, and if Redis lost data end every stream."""
        floor, head, count = self._read_clock(client)
        ended: set[RedisSubscription] = set()
        with self._lock:
            lost = self._position is not None and (
                (self._epoch is not None and floor != self._epoch) or count < self._n
            )
            if self._position is None or lost:
                if lost:
                    log.warning("Redis lost events (restarted empty or flushed): ending local streams")
                    ended = {sub for subs in self._subscribers.values() for sub in subs}
                    self._subscribers.clear()
                self._position, self._n, self._epoch = head, count, floor
            elif self._epoch is None:
                self._epoch = floor  # first events since an empty Redis: read them from the start
        for sub in ended:
            sub._end("closed")

    def _resync(self, client: redis.Redis) -> None:
        """The feed skipped events this listener had not read: end every stream, start at the head."""
        log.warning("the listener fell more than feed_size events behind: ending local streams")
        floor, head, count = self._read_clock(client)
        with self._lock:
            ended = {sub for subs in self._subscribers.values() for sub in subs}
            self._subscribers.clear()
            self._position, self._n, self._epoch = head, count, floor
        for sub in ended:
            sub._end("closed")

    def _listen(self) -> None:
        """The listener: read the feed from the position on, fan out; reconnect with backoff."""
        client = self._listen_client
        failures = 0
        skipped = False
        while not self._stopping.is_set():
            try:
                if skipped:
                    self._resync(client)
                    skipped = False
                else:
                    self._sync(client)
                if failures:
                    log.warning("reconnected to Redis after %d failed attempts", failures)
                failures = 0
                self._connected = True
                while not self._stopping.is_set():
                    with self._lock:
                        position = self._position
                    assert position is not None
                    reply: Any = client.xread({self._feed_key: _id(position)}, count=500,
                                              block=max(1, round(self.block * 1000)))
                    if reply and not self._dispatch(reply[0][1]):
                        skipped = True
                        break
            except Exception as exc:  # the listener must outlive any failure
                self._connected = False
                if self._stopping.is_set():
                    break
                failures += 1
                delay = min(self.reconnect_max, 0.05 * 2 ** min(failures, 16)) * random.uniform(0.5, 1.0)
                if failures == 1 or not isinstance(exc, _UNREACHABLE):
                    log.warning("Redis listener: %s; reconnecting", exc)
                self._stopping.wait(delay)
        self._connected = False

    def _dispatch(self, entries: list[tuple[str, dict[str, str]]]) -> bool:
        """Hand feed entries to the subscribers of their channels; False when entries were skipped."""
        with self._lock:
            for entry_id, fields in entries:
                n = int(fields.get("n", 0))
                key = _key(entry_id)
                if n != self._n + 1 or key is None:
                    return False
                self._n = n
                self._position = key
                subs = self._subscribers.get(fields.get("c", ""))
                if not subs:
                    continue
                try:
                    event = _event(entry_id, fields)
                except ValueError:  # not written by this broker: skip it, never stop on it
                    log.warning("skipping malformed feed entry %s", entry_id)
                    continue
                item = (key, event)
                lagging = [sub for sub in subs if key > sub._floor and not sub._deliver(item)]
                for sub in lagging:
                    self._remove(sub)
        return True


def _newest_trimmed(info: Mapping[str, Any]) -> tuple[int, int] | None:
    """From XINFO STREAM: the id of the newest entry trimmed from the stream, or None."""
    first = info.get("first-entry")
    if first:
        return _key(cast(Mapping[str, str], first[1]).get("p"))
    if info.get("length") == 0:  # all trimmed: the last one added was the newest trimmed
        return _key(str(info.get("last-generated-id")))
    return None


class RedisSubscription(LocalSubscription):
    """One stream's subscription to a :class:`RedisBroker`: replay, then live events.

    ``get`` returns None when its timeout passes, also while Redis is away; the reason
    ``"unavailable"`` ends a subscription that could not replay for want of Redis.
    """

    def __init__(self, broker: RedisBroker, channels: tuple[str, ...], queue_size: int) -> None:
        super().__init__(broker, channels, queue_size)
        # Live events with stream ids up to this one are not delivered (the replay holds them).
        self._floor: tuple[int, int] = (0, 0)

    def _skip_to(self, key: tuple[int, int]) -> None:
        """Deliver nothing up to stream id ``key``: under the broker's lock, before the
        subscription reaches its reader (so nothing else takes from the queue meanwhile)."""
        if key > self._floor:
            self._floor = key
        while self._queue and self._queue[0][0] <= key:
            self._queue.popleft()
