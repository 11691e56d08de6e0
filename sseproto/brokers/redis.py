"""The Redis broker: history in Redis Streams, one listener connection per process.

Works with Redis >= 6.2 and Valkey. Keys, each ``{<prefix>}`` followed by a fixed name,
where ``<prefix>`` is ``key_prefix`` (default ``sseproto:``, no ``{`` or ``}``) wrapped
as a Redis Cluster hash tag:

- ``{<prefix>}clock``: a hash with the last id handed out (``ms``, ``seq``), the number
  of events published (``n``) and the first id ever handed out (``floor``).
- ``{<prefix>}channel:<name>``: one stream per channel, the replay history, trimmed with
  ``MAXLEN ~ replay_size`` (and ``MINID ~`` when ``replay_max_age`` is set).
- ``{<prefix>}count:<name>``: a stream beside each channel's, with the same ids and only
  the channel count ``k`` of each entry (see below), kept to the retained entries and
  the newest trimmed one: counting and bisecting read it instead of the events.
- ``{<prefix>}ids:<name>`` and ``{<prefix>}idk:<name>``: the ids publishers chose on
  that channel: a hash of id -> stream id, and a sorted set of the same ids by the
  channel count (``k``) of their entry, by which the hash is trimmed with the stream.
- ``{<prefix>}feed``: one stream of every event of every channel, trimmed with ``MAXLEN ~
  feed_size``; each process reads it with one ``XREAD BLOCK`` connection and fans the
  events out to its local subscribers.

The prefix ends at the first ``}`` of every key, so brokers with different prefixes never
share a key, whatever the prefixes and channel names (``sse:`` and ``sse:channel:t:``
used to: channel ``t:channel:news`` of the first was ``news`` of the second); and all
keys of one broker hash to one cluster slot, as the multi-key scripts below need.

Ids are Redis stream ids (``<ms>-<seq>``) that a Lua script allocates from Redis
``TIME`` and the clock, then uses for both ``XADD`` calls in the same script: they
increase strictly across all channels of one prefix, so one ``Last-Event-ID`` resumes a
stream of several channels, and no two channels ever share an id. Each channel entry
also records its number on the channel (field ``k``: 1, 2, 3, ...), in the entry and in
the count stream, which keeps one entry more than the channel: the newest trimmed one.
So an id is known on a channel when its count stream has it, the events after an id are
counted with two lookups, a replay read page by page sees when Redis trimmed entries it
had not read yet (the next ``k`` is not the one expected), and the id published last on a
channel, retained or not (``last_id``, GRIP's prev-id), is its count stream's newest entry.
"""

from __future__ import annotations

import heapq
import logging
import os
import random
import re
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, NamedTuple, NoReturn, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .._event import Event
from . import BrokerUnavailable
from ._base import MAX_EVENT_SIZE, Fanout, LocalSubscription, SubscriptionEnded, check_event_size

__all__ = ["RedisBroker", "RedisSubscription"]

log = logging.getLogger("sseproto.redis")

# Errors that mean "Redis cannot be reached now" (a refused or dropped connection, a
# timeout, a server still loading its data, no free connection in the pool).
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)

_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
_MAX = 2**64

# A Lua function: the event id of a channel's newest entry, retained or the newest trimmed,
# from ``top`` (its count stream's newest entry): the id its publisher chose (the index of
# chosen ids holds it at that entry's count) or else its stream id; false when the channel
# has none. Where the counts were lost, the stream's last added id, named as its publisher
# chose while the entry is still retained.
_NEWEST_ID = """
local function newest_id(top, idk, stream)
  if top then
    return redis.call('ZRANGEBYSCORE', idk, top[2][2], top[2][2], 'LIMIT', 0, 1)[1] or top[1]
  end
  if redis.call('EXISTS', stream) == 0 then return false end
  local info = redis.call('XINFO', 'STREAM', stream)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' and info[i + 1] ~= '0-0' then
      local id = info[i + 1]
      local entry = redis.call('XRANGE', stream, id, id)[1]
      if entry then
        for j = 1, #entry[2], 2 do
          if entry[2][j] == 'i' then return entry[2][j + 1] end
        end
      end
      return id
    end
  end
  return false
end
"""

# The id of the newest event published on a channel (see _NEWEST_ID).
# KEYS: the channel's count stream, its id counts, its stream.
_LAST = _NEWEST_ID + """
return newest_id(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1], KEYS[2], KEYS[3])
"""

# Allocates the next id from Redis TIME and the clock, appends the event to its channel
# stream and to the feed, trims both, and keeps the channel's index of publisher-chosen
# ids to the entries still retained (and the newest trimmed one). One script, so ids and
# order are the same for both streams and no id is ever handed out twice.
# KEYS: clock, channel stream, feed, the channel's id hash, the channel's id counts, the
# channel's count stream. ARGV: channel, replay maxlen, max age in ms (0: none), feed maxlen, '1' when the
# publisher chose the id (else '0'), that id, then the event's field/value pairs.
# Returns the stream id and the event id of the channel's entry before it (nil: none).
_PUBLISH = _NEWEST_ID + """
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
-- The count of the channel's newest entry (retained or trimmed), from the count stream:
-- small entries, so no event is read.
local k = 1
local top = redis.call('XREVRANGE', KEYS[6], '+', '-', 'COUNT', 1)[1]
local prev = newest_id(top, KEYS[5], KEYS[2])
if top then
  k = tonumber(top[2][2]) + 1
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  -- The counts were lost (deleted by hand, evicted): the entries cannot be counted any
  -- more, so they go, and the newest one stays known as the newest trimmed (count 0).
  local info = redis.call('XINFO', 'STREAM', KEYS[2])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' and info[i + 1] ~= '0-0' then
      redis.call('XADD', KEYS[6], info[i + 1], 'k', '0')
    end
  end
  redis.call('DEL', KEYS[2], KEYS[4], KEYS[5])
end
local count = string.format('%.0f', k)
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id, 'k', count, unpack(fields))
if ARGV[3] ~= '0' then
  redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('%.0f', ms - tonumber(ARGV[3])))
end
-- Entries are numbered without holes, so the retained ones are k - XLEN + 1 .. k and the
-- newest trimmed one is k - XLEN: the count stream keeps those, and the index their ids.
local retained = redis.call('XLEN', KEYS[2])
redis.call('XADD', KEYS[6], id, 'k', count)
redis.call('XTRIM', KEYS[6], 'MAXLEN', retained + 1)
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[4], ARGV[6], id)
  redis.call('ZADD', KEYS[5], count, ARGV[6])
end
local below = '(' .. string.format('%.0f', k - retained)
while true do
  local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', below, 'LIMIT', 0, 500)
  if #old == 0 then break end
  redis.call('HDEL', KEYS[4], unpack(old))
  redis.call('ZREM', KEYS[5], unpack(old))
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], id, 'c', ARGV[1], 'n', string.format('%.0f', n),
           unpack(fields))
return {id, prev}
"""

# What a resuming stream missed, planned at one instant; no event is read here.
# KEYS: clock, then per requested channel its stream, its id hash and its count stream.
# ARGV: the last event id; '1' when it has the form of a stream id (normalized), else it
# is an id a publisher chose; the most events to replay ('': no limit).
# The id is placed only where a requested channel has it: as an entry or as its newest
# trimmed entry (both in its count stream), or in its index of chosen ids. Then
# per channel: a gap (the id was not placed, or the channel trimmed entries after it),
# the stream id after which its replay starts ('-': its first retained entry), the id of
# its newest entry, the count k of the entry before the replay's first, and how many
# events its replay holds. With a limit, the cut is the stream id of the (limit + 1)-th
# newest event of all replays, found by bisecting ids: each step counts the events after
# an id with one lookup per channel (its count stream's newest entry up to that id: no
# event is read), so the work grows with the number of channels and the log of the time
# span, never with the history or the size of events.
# Returns the clock's head id ('' when nothing was published), then five values per channel.
_RESUME = """
local function field(entry, name)
  local f = entry[2]
  for i = 1, #f, 2 do
    if f[i] == name then return f[i + 1] end
  end
  return nil
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local function fmt(x) return string.format('%.0f', x) end
local MAXSEQ = '18446744073709551615'

local clock = redis.call('HMGET', KEYS[1], 'ms', 'seq')
local head = ''
if clock[1] then head = clock[1] .. '-' .. clock[2] end
local last = ARGV[1]
local nch = (#KEYS - 1) / 3
local chans = {}
local placed = nil
for c = 1, nch do
  local key = KEYS[3 * c - 1]
  local ch = {key = key, counts = KEYS[3 * c + 1], count = 0, from = 0, start = '', top = ''}
  -- From the count stream (no event is read): the newest entry, the first retained one
  -- and, before it when the channel trimmed some, the newest trimmed one.
  local retained = redis.call('XLEN', key)
  local top = redis.call('XREVRANGE', ch.counts, '+', '-', 'COUNT', 1)[1]
  if retained > 0 and top then
    ch.top = top[1]
    ch.top_k = tonumber(field(top, 'k'))
    ch.first_k = ch.top_k - retained + 1
    local oldest = redis.call('XRANGE', ch.counts, '-', '+', 'COUNT', 2)
    if tonumber(field(oldest[1], 'k')) == ch.first_k - 1 then
      ch.trimmed = oldest[1][1]
      ch.first = oldest[2][1]
    else
      ch.first = oldest[1][1]
    end
  elseif top then
    ch.trimmed = top[1]  -- every entry trimmed: the newest one was
  end
  -- Is the last id one of this channel's (retained, or the newest trimmed)?
  local own
  if ARGV[2] == '1' then own = last else own = redis.call('HGET', KEYS[3 * c], last) end
  if own and redis.call('XRANGE', ch.counts, own, own)[1] then
    if placed == nil or before(placed, own) then placed = own end
  end
  chans[c] = ch
end

-- The k of the newest entry of ch up to stream id x, or of the entry before its first.
local function upto(ch, x)
  if not before(x, ch.top) then return ch.top_k end
  local e = redis.call('XREVRANGE', ch.counts, x, '-', 'COUNT', 1)[1]
  if e then return math.max(tonumber(field(e, 'k')), ch.first_k - 1) end
  return ch.first_k - 1
end

local total = 0
local low = nil  -- a stream id before every event of the replays
for c = 1, nch do
  local ch = chans[c]
  ch.gap = placed == nil or (ch.trimmed ~= nil and before(placed, ch.trimmed))
  if ch.first then
    if ch.gap then
      ch.from = ch.first_k - 1
      ch.start = '-'
      if low == nil or before(ch.first, low) then low = ch.first end
    else
      ch.from = upto(ch, placed)
      ch.start = '(' .. placed
      if low == nil or before(placed, low) then low = placed end
    end
    ch.count = ch.top_k - ch.from
    total = total + ch.count
  end
end

local limit = tonumber(ARGV[3])
if limit ~= nil and total > limit then
  -- Bisect for the smallest stream id after which at most limit events follow: the
  -- (limit + 1)-th newest. Each channel keeps its count up to both ends of the bracket
  -- (ka, kb): where they are equal it has no entry inside, and needs no lookup.
  local live = {}
  local high = nil  -- the newest event of the replays
  for c = 1, nch do
    local ch = chans[c]
    if ch.count > 0 then
      ch.ka, ch.kb = ch.from, ch.top_k
      live[#live + 1] = ch
      if high == nil or before(high, ch.top) then high = ch.top end
    end
  end
  local function after(x)
    local sum = 0
    for _, ch in ipairs(live) do
      if ch.ka == ch.kb then ch.kx = ch.ka else ch.kx = math.max(ch.from, upto(ch, x)) end
      sum = sum + ch.top_k - ch.kx
    end
    return sum
  end
  local function narrow(x)  -- true: x becomes the upper end of the bracket
    local low_enough = after(x) <= limit
    for _, ch in ipairs(live) do
      if low_enough then ch.kb = ch.kx else ch.ka = ch.kx end
    end
    return low_enough
  end
  -- First its millisecond (more than limit events after a-MAX, at most limit after b-MAX) ...
  local a = parse(low) - 1
  local b = parse(high)
  while b - a > 1 do
    local mid = math.floor((a + b) / 2)
    if narrow(fmt(mid) .. '-' .. MAXSEQ) then b = mid else a = mid end
  end
  -- ... then its sequence number within that millisecond.
  local ms = fmt(b)
  local sa, sb = -1, 0
  for _, ch in ipairs(live) do
    if ch.ka ~= ch.kb then
      local e = redis.call('XREVRANGE', ch.counts, ms .. '-' .. MAXSEQ, ms .. '-0', 'COUNT', 1)[1]
      if e then
        local _, s = parse(e[1])
        if s > sb then sb = s end
      end
    end
  end
  while sb - sa > 1 do
    local mid = math.floor((sa + sb) / 2)
    if narrow(ms .. '-' .. fmt(mid)) then sb = mid else sa = mid end
  end
  local cut = ms .. '-' .. fmt(sb)
  for _, ch in ipairs(live) do
    if ch.kb > ch.from then  -- kb: the count up to the cut
      ch.gap = true
      ch.from = ch.kb
      ch.start = '(' .. cut
      ch.count = ch.top_k - ch.kb
    end
  end
end

local out = {head}
for c = 1, nch do
  local ch = chans[c]
  out[#out + 1] = ch.gap and '1' or '0'
  out[#out + 1] = ch.start
  out[#out + 1] = ch.top
  out[#out + 1] = fmt(ch.from)
  out[#out + 1] = fmt(ch.count)
end
return out
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
    - ``replay_max_bytes``: refused (ValueError) unless None: Redis trims streams by count
      and age only.
    - ``max_event_size``: the most bytes an event may take encoded (as given to
      :meth:`publish`, without the id the broker adds); larger ones are refused with
      ValueError. None: no limit.
    - ``feed_size``: events kept in the feed every process reads; a listener that falls
      this far behind (or finds Redis emptied by a restart) ends its local streams, whose
      clients reconnect and replay from the channel streams.
    - ``key_prefix``: the prefix of every key, non-empty and without ``{`` or ``}``;
      brokers with different prefixes share nothing (see the module's key list).
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
    ``Last-Event-ID``; so does one whose replay cannot be read to its end (Redis went
    away, or trimmed events the replay had not read yet). If Redis comes back without
    the events (restarted without persistence, flushed), every local stream is ended;
    clients reconnect and get the gap event.

    Resuming: a ``Last-Event-ID`` counts only where a requested channel has it (an
    entry, or the newest one trimmed); anything else, such as an id of another channel
    or a guessed one, is a gap on every requested channel. Ids the publisher chose
    (``Event(id=...)``) are kept as the event's id, indexed per channel beside the stream
    id (found in one lookup), and place the other requested channels by that stream id.
    An id that looks like a stream id (``digits-digits``) is refused, as it would be read
    as one. The replay is read from Redis page by page as the stream sends it.

    What ids reveal: a stream id ``<ms>-<seq>`` is the Redis time, in milliseconds, at
    which the event was published (or the previous id's, if Redis's clock went back),
    and ``seq`` counts the events published before it in that millisecond on any channel
    of this key prefix. A client allowed some channels thus learns when their events
    were published and, from ``seq``, how many events of any channel (also ones it may
    not read) came just before in the same millisecond. Where that matters, publish
    with ids of your own (``Event(id=...)``): clients then see only those.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        queue_size: int = 1000,
        replay_size: int = 1000,
        replay_max_age: float | None = None,
        replay_max_bytes: int | None = None,
        max_event_size: int | None = MAX_EVENT_SIZE,
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
        if replay_max_bytes is not None:
            raise ValueError("the Redis broker cannot honour replay_max_bytes (SSE_REPLAY_MAX_BYTES): "
                             "Redis trims streams by count and age only; use replay_size or "
                             "replay_max_age, and max_event_size to bound each event")
        if max_event_size is not None and (type(max_event_size) is not int or max_event_size < 1):
            raise ValueError(f"max_event_size must be a positive int or None, got {max_event_size!r}")
        if not isinstance(key_prefix, str) or not key_prefix or "{" in key_prefix or "}" in key_prefix:
            raise ValueError(f"key_prefix must be a non-empty str without '{{' or '}}', got {key_prefix!r}")
        for name, number in (("socket_timeout", socket_timeout), ("block", block),
                             ("reconnect_max", reconnect_max)):
            if not number > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {number!r}")
        self.url = url
        self.queue_size = queue_size
        self.replay_size = replay_size
        self.replay_max_age = replay_max_age
        self.max_event_size = max_event_size
        self.feed_size = feed_size
        self.key_prefix = key_prefix
        self.pool_size = pool_size
        self.socket_timeout = socket_timeout
        self.block = block
        self.reconnect_max = reconnect_max
        # The prefix as a hash tag: it ends at the first '}', which it cannot contain.
        self._tag = "{" + key_prefix + "}"
        self._clock_key = self._tag + "clock"
        self._feed_key = self._tag + "feed"
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
        self._resume_script = self._client.register_script(_RESUME)
        self._last_script = self._client.register_script(_LAST)
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
        return self._publish_with_prev(channel, event)[0]

    def last_id(self, channel: str) -> str | None:
        """The id of the newest event published on ``channel`` (by any process), retained
        or trimmed; None when the channel has none. :class:`BrokerUnavailable` when Redis
        cannot be reached.

        What a GRIP proxy checks a message's ``prev-id`` against (see :mod:`sseproto.grip`).
        """
        if not isinstance(channel, str) or not channel:
            raise ValueError(f"channel must be a non-empty str, got {channel!r}")
        try:
            value = self._last_script(
                keys=[self._count_key(channel), self._idk_key(channel), self._channel_key(channel)]
            )
        except _UNREACHABLE as exc:
            raise BrokerUnavailable(f"cannot read the last id of {channel!r}: Redis at "
                                    f"{_redacted(self.url)} is unreachable ({exc})") from exc
        return None if value is None else str(value)

    def _publish_with_prev(self, channel: str, event: Event) -> tuple[Event, str | None]:
        """:meth:`publish`, and the id of the channel's event before it (published by any
        process), from the same script: two processes publishing on one channel get
        answers that chain."""
        if not isinstance(channel, str) or not channel:
            raise ValueError(f"channel must be a non-empty str, got {channel!r}")
        if event.id is not None and _key(event.id) is not None:
            raise ValueError(f"the Redis broker gives ids of the form {event.id!r} itself; "
                             "choose an id of another form, or none")
        if self._closed:
            raise RuntimeError("the broker is closed")
        event.encode()  # LocalProtocolError for text UTF-8 cannot carry (a lone surrogate)
        check_event_size(event, self.max_event_size)
        fields = ["d", event.data]
        if event.event != "message":
            fields += ["e", event.event]
        if event.id is not None:
            fields += ["i", event.id]
        if event.retry is not None:
            fields += ["r", str(event.retry)]
        age = 0 if self.replay_max_age is None else max(1, round(self.replay_max_age * 1000))
        chosen = ["0", ""] if event.id is None else ["1", event.id]
        try:
            stream_id, prev_id = cast(list[Any], self._publish_script(
                keys=[self._clock_key, self._channel_key(channel), self._feed_key,
                      self._ids_key(channel), self._idk_key(channel), self._count_key(channel)],
                args=[channel, self.replay_size, age, self.feed_size, *chosen, *fields],
            ))
        except _UNREACHABLE as exc:
            raise BrokerUnavailable(
                f"cannot publish to {channel!r}: Redis at {_redacted(self.url)} is unreachable ({exc})"
            ) from exc
        for counter in self._publish_counters:
            counter.inc()
        stored = Event(event.data, event.event, str(stream_id) if event.id is None else event.id, event.retry)
        return stored, None if prev_id is None else str(prev_id)

    def subscribe(
        self, channels: Sequence[str], last_event_id: str | None = None, *, max_replay: int | None = None
    ) -> RedisSubscription:
        """Subscribe to ``channels``; with ``last_event_id``, plan the replay of the events after it.

        ``max_replay``: the most events the replay holds; when more were missed, the
        newest ``max_replay`` are replayed and the channels whose events were cut are
        gaps. Live delivery starts after the newest event stored at the time. When Redis
        cannot be reached, a subscription with ``last_event_id`` ends at once (reason
        ``"unavailable"``, nothing to replay: its client retries later); one without waits
        for Redis (unless this broker never reached it) and may then also get events
        published shortly before it subscribed.
        """
        channels = tuple(dict.fromkeys(channels))
        if not channels:
            raise ValueError("subscribe to at least one channel")
        if max_replay is not None and (type(max_replay) is not int or max_replay < 0):
            raise ValueError(f"max_replay must be an int >= 0 or None, got {max_replay!r}")
        if self._closed:
            raise RuntimeError("the broker is closed")
        sub = RedisSubscription(self, channels, self.queue_size)
        try:
            self._start()
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
                head = self._plan(sub, last_event_id, max_replay)
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
        return f"{self._tag}channel:{channel}"

    def _ids_key(self, channel: str) -> str:
        return f"{self._tag}ids:{channel}"

    def _idk_key(self, channel: str) -> str:
        return f"{self._tag}idk:{channel}"

    def _count_key(self, channel: str) -> str:
        return f"{self._tag}count:{channel}"

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

    def _plan(self, sub: RedisSubscription, last_id: str, max_replay: int | None) -> tuple[int, int]:
        """Set ``sub``'s gaps and (lazy) replay of what came after ``last_id``; the newest id then.

        One script: where the id stands, what each channel trimmed, how many events each
        replays and the newest id handed out are read at one instant; the events are read
        later, page by page, as the stream sends them.
        """
        key = _key(last_id)
        keys = [self._clock_key]
        for channel in sub.channels:
            keys += [self._channel_key(channel), self._ids_key(channel), self._count_key(channel)]
        args = [last_id if key is None else _id(key), "0" if key is None else "1",
                "" if max_replay is None else str(max_replay)]
        reply = [str(v) for v in cast(list[Any], self._resume_script(keys=keys, args=args))]
        head = _key(reply[0]) or (0, 0)
        gap: list[str] = []
        plans: list[_Plan] = []
        for i, channel in enumerate(sub.channels):
            is_gap, start, end, before, count = reply[1 + 5 * i : 6 + 5 * i]
            if is_gap == "1":
                gap.append(channel)
            if int(count) > 0:
                plans.append(_Plan(self._channel_key(channel), start, end, int(before), int(count)))
        sub.gap = tuple(gap)
        sub.replay = _Replay(self, sub, plans)
        return head

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


class _Plan(NamedTuple):
    """One channel's part of a replay: the entries after ``start`` up to ``end``, numbered
    (field ``k``) ``before + 1`` to ``before + n``."""

    key: str
    start: str  # "(<stream id>" or "-" (from the first entry)
    end: str  # the stream id of the newest entry when the replay was planned
    before: int
    n: int


_Keyed = tuple[tuple[int, int], Event]  # an event and its stream id, for merging channels

#: Entries of a channel read by the first query of a replay (all channels in one round trip).
_FIRST_PAGE = 8
#: Bytes of one channel's page a replay aims at after the first, and the most entries per page.
_PAGE_BYTES = 64 * 1024
_MAX_PAGE = 1000


class _Replay:
    """The events a subscription missed, in id order, read from Redis as they are iterated.

    Each channel is read in pages (``XRANGE ... COUNT``): ``_FIRST_PAGE`` entries, then
    about ``_PAGE_BYTES`` (at least one entry), so a stream holds about one page per
    channel; merged by stream id, exactly up to the entry that was newest when the replay
    was planned.
    Every entry carries its number on the channel (field ``k``): a page that does not go
    on where the last one ended means Redis trimmed entries not read yet, and iterating
    then raises :class:`SubscriptionEnded` (``"unavailable"``), as when Redis is away, so
    the stream ends and its client resumes from the last id it got. Each ``iter()`` reads
    the replay again from the start.
    """

    def __init__(self, broker: RedisBroker, sub: RedisSubscription, plans: list[_Plan]) -> None:
        self._broker = broker
        self._sub = weakref.ref(sub)
        self._plans = plans

    def __iter__(self) -> Iterator[Event]:
        return self._events()

    def __len__(self) -> int:
        """How many events the replay holds, unless reading it ends early."""
        return sum(plan.n for plan in self._plans)

    def __repr__(self) -> str:
        return f"<replay of {len(self)} events from Redis>"

    def _events(self) -> Iterator[Event]:
        if not self._plans:
            return
        try:
            pipe = self._broker._client.pipeline(transaction=False)
            for plan in self._plans:
                pipe.xrange(plan.key, plan.start, plan.end, count=min(plan.n, _FIRST_PAGE))
            firsts = pipe.execute()
            channels = [self._channel(plan, page) for plan, page in zip(self._plans, firsts, strict=True)]
            for _, event in heapq.merge(*channels, key=_first):
                yield event
        except _UNREACHABLE as exc:
            self._lost(f"Redis is unreachable ({exc})")

    def _channel(self, plan: _Plan, page: list[tuple[str, dict[str, str]]]) -> Iterator[_Keyed]:
        """One channel's entries of the replay, page by page, checked to follow each other."""
        expected, last = plan.before + 1, plan.before + plan.n
        while True:
            if not page:
                self._lost(f"{plan.key} holds fewer entries than planned")
            size = 0
            for entry_id, fields in page:
                if fields.get("k") != str(expected):
                    self._lost(f"Redis trimmed {plan.key} while its replay was read")
                key = _key(entry_id)
                assert key is not None  # Redis gives stream ids only
                size += len(entry_id) + sum(len(k) + len(v) for k, v in fields.items())
                try:
                    event = _event(entry_id, fields)
                except ValueError:  # not written by this broker: skip it, never stop on it
                    log.warning("skipping malformed entry %s of %s", entry_id, plan.key)
                else:
                    yield key, event
                if expected == last:
                    return
                expected += 1
            count = min(last - expected + 1, _MAX_PAGE, max(1, _PAGE_BYTES * len(page) // max(size, 1)))
            page = cast(list[tuple[str, dict[str, str]]],
                        self._broker._client.xrange(plan.key, "(" + page[-1][0], plan.end, count=count))

    def _lost(self, why: str) -> NoReturn:
        """The replay cannot go on exactly: end the subscription (its client resumes later)."""
        log.warning("replay ended early: %s", why)
        sub = self._sub()
        if sub is not None:
            with self._broker._lock:
                self._broker._remove(sub)
                sub._queue.clear()  # live events after the hole must not be delivered either
                sub._end("unavailable")
        raise SubscriptionEnded("unavailable")


def _first(item: _Keyed) -> tuple[int, int]:
    return item[0]


class RedisSubscription(LocalSubscription):
    """One stream's subscription to a :class:`RedisBroker`: replay, then live events.

    ``get`` returns None when its timeout passes, also while Redis is away; the reason
    ``"unavailable"`` ends a subscription that could not replay for want of Redis, or
    whose replay Redis trimmed while it was read. ``replay`` is read lazily (see
    ``_Replay``); ``gap`` is known when :meth:`RedisBroker.subscribe` returns.
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
