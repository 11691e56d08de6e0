"""Server-sent event streams for any WSGI application: plain WSGI, Flask, Django, Bottle.

:class:`EventStreamApp` is a complete stream endpoint (channels from the query string,
``Last-Event-ID`` replay, limits, authorization, CORS, a connection limit);
:class:`EventStream` is the response body underneath, usable on its own with any
framework that streams an iterable of bytes and calls its ``close()``.

Wire conventions:

- Headers go out at once, with the first chunk: optional padding, then ``retry:``.
  ``Content-Type: text/event-stream; charset=utf-8``, ``Cache-Control: no-cache,
  no-transform``, ``X-Accel-Buffering: no``; the body is never compressed.
- ``retry:`` opens every stream (``retry`` ms, plus up to ``retry_jitter`` ms at random
  so that clients dropped together do not come back together).
- A ``:`` comment line goes out after ``heartbeat`` seconds without a write; a vanished
  client is noticed when a write fails or, where the server lets us see its socket
  (gunicorn, Werkzeug, waitress with ``channel_request_lookahead``), at the next heartbeat.
- The last event id comes from the ``Last-Event-ID`` header or, for polyfills, from a
  query parameter named ``lastEventId`` (any case, ``-`` and ``_`` ignored, so
  ``last-event-id`` and ``last_event_id`` work too; ``evs_last_event_id`` also). The
  stream then replays exactly the events published after it, on all its channels.
- When the id cannot be placed on a channel (unknown, or evicted from its replay
  buffer) the stream first sends an event of type ``sseproto.gap``, with no id, and
  data ``{"lastEventId": "<the id>", "channels": ["<channel>", ...]}``; the replay then
  holds every event still retained on those channels (merged in id order with the
  other channels' missed events). Events on the listed channels may have been lost.
- ``padding`` (or ``?padding=1`` on the request) opens the stream with a 2 KiB comment,
  for old browsers and proxies that hold back the first bytes. ``max_bytes`` ends the
  stream at the first event boundary past that many bytes (not counting the opening
  padding and ``retry:``), so XHR-based polyfills, whose response text grows without
  end, reconnect and resume with nothing lost.
- ``max_duration`` ends every stream after that many seconds (at random between 0.75 and
  1 times it), between events: the client reconnects with its last event id and loses
  nothing, and the authorization callback runs again, so revoked access ends within
  ``max_duration``; long-lived streams also spread again over new server processes.
- A write that makes no progress for ``write_timeout`` seconds (a client that stopped
  reading, its buffers full) fails, and the server drops that connection (gunicorn and
  Werkzeug; on waitress, which buffers output itself, the kernel drops it through
  ``TCP_USER_TIMEOUT`` on Linux: run waitress with ``--outbuf-high-watermark=65536``, see
  below).
- Errors: 400 for a bad channel list or an oversized ``Last-Event-ID``, 403 when the
  authorization callback refuses a channel, 503 with ``Retry-After`` past the connection
  limit (or, with ``busy="retry"``, a stream of just ``retry:`` that ends at once, so
  browsers come back instead of giving up), 405 for methods other than GET and OPTIONS
  (the CORS preflight).
- A process on its way out (SIGTERM with :func:`sseproto.gunicorn.drain_on_sigterm`) ends
  its streams and answers new stream requests with ``: draining`` and ``retry:`` only:
  clients come back elsewhere.

Use::

    broker = MemoryBroker()
    app = EventStreamApp(broker, heartbeat=15)      # a WSGI app: mount it at /events
    broker.publish("news", Event("hello"))          # from any thread

    # Django, Bottle, ...: any view that can return an iterable of bytes; the endpoint's
    # replies keep its connection limit, write timeout and disconnect probe
    reply = app.subscription_reply(["news"], last_event_id_from(environ), environ)
    # (or app.iterable_reply(generator(), environ) / app.polling_reply(func, 1.0, environ))
    response = StreamingHttpResponse(reply.body, status=int(reply.status.split()[0]))
    for name, value in reply.headers:
        response[name] = value
    # (examples/django_project and docs/deployment.md: the whole recipe, tested)

Servers (each is tested as a real process). Every open stream holds a thread (or a
greenlet) for its lifetime; keep ``max_connections`` below what the server can hold so
the endpoint answers 503 instead of the server queueing requests. The in-memory broker
lives in one process: run one worker process with it, or use the Redis broker with any
number of workers and servers.

- Flask's dev server: threaded (the default of ``flask run`` and ``app.run()``).
- gunicorn: ``-k gthread --threads N`` or ``-k gevent --worker-connections N``, with
  ``-w 1``; not the sync worker (one stream would hold the whole worker until its timeout).
- waitress: ``--threads N``, ``--channel-request-lookahead=1`` (without it a vanished
  client is noticed only when a write fails, up to two heartbeats later) and
  ``--outbuf-high-watermark=65536`` (by default a client that stops reading costs up to
  16 MiB of buffer, past 1 MiB in temp files, before its stream waits; with 64 KiB it
  waits at once, falls ``queue_size`` events behind and is cut off). Waitress 3
  sends each chunk at once; older versions need ``send_bytes=1``.
- Behind nginx, ``X-Accel-Buffering: no`` turns off its buffering for the stream (do not
  make nginx ignore it: buffered, events wait and a vanished client keeps its slot); keep
  ``proxy_read_timeout`` above the heartbeat.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import random
import re
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, NoReturn, Protocol
from urllib.parse import parse_qsl

from ._event import Event
from .brokers import Broker, Subscription, SubscriptionEnded
from .brokers._base import DRAINING

if TYPE_CHECKING:  # prometheus_client is imported only when metrics are turned on
    from .grip import Grip
    from .metrics import Metrics

__all__ = [
    "CONTENT_TYPE",
    "GAP_EVENT",
    "EventStream",
    "EventStreamApp",
    "Options",
    "Reply",
    "StartResponse",
    "WSGIEnvironment",
    "event_from",
    "last_event_id_from",
    "replay_prelude",
    "stream_headers",
]

CONTENT_TYPE = "text/event-stream; charset=utf-8"
#: The type of the event that tells a client replay could not cover its last event id.
GAP_EVENT = "sseproto.gap"
#: 2 KiB comment for clients that buffer the start of a response before parsing it.
PADDING = b":" + b" " * 2048 + b"\n"
HEARTBEAT = b":\n"
# Live events waiting in a subscription are sent together up to this many bytes.
_CHUNK = 64 * 1024

WSGIEnvironment = Mapping[str, Any]


class StartResponse(Protocol):
    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = ..., /) -> Any: ...


@dataclass(frozen=True)
class Options:
    """Settings of stream endpoints; every limit has a name and a default.

    Times: ``heartbeat``, ``max_duration``, ``retry_after`` and ``write_timeout`` in seconds,
    ``retry`` and ``retry_jitter`` in milliseconds. ``max_replay`` caps the events one
    resume replays (past it: the gap event, then the newest; None: no cap).
    ``cors_origins`` is None (no CORS headers), ``"*"``, or origins matched exactly (a
    list, or one string of them separated by commas or spaces, as an environment
    variable holds them); ``cors_credentials`` allows cookies, and needs origins named.
    ``busy`` is what a request past ``max_connections`` gets: ``"503"`` (with
    ``Retry-After``; a browser's EventSource then gives up for good) or ``"retry"`` (a
    stream holding only ``retry:``, 1 to 2 times ``retry_after``, so every EventSource
    comes back later by itself).
    """

    heartbeat: float = 15.0
    retry: int | None = 3000
    retry_jitter: int = 0
    padding: bool = False
    max_bytes: int | None = None
    max_duration: float | None = None
    default_channels: tuple[str, ...] = ("sse",)
    max_channels: int = 16
    max_channel_length: int = 128
    channel_pattern: str = r"[A-Za-z0-9_.:@/-]+"
    max_last_event_id_length: int = 256
    max_replay: int | None = 1000
    max_connections: int | None = 1000
    retry_after: int = 5
    busy: Literal["503", "retry"] = "503"
    write_timeout: float | None = 30.0
    cors_origins: str | tuple[str, ...] | None = None
    cors_credentials: bool = False
    _channel_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.heartbeat > 0:
            raise ValueError(f"heartbeat must be a positive number of seconds, got {self.heartbeat!r}")
        _check_seconds("max_duration", self.max_duration)
        _check_seconds("write_timeout", self.write_timeout)
        Event(retry=self.retry)  # validates
        for name in ("retry_jitter", "max_channels", "max_channel_length", "max_last_event_id_length",
                     "retry_after", "max_bytes", "max_connections", "max_replay"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int
                                      or value < (0 if name in ("retry_jitter", "max_replay") else 1)):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.busy == 503:  # type: ignore[comparison-overlap]  # the number, from a config file
            object.__setattr__(self, "busy", "503")
        if self.busy not in ("503", "retry"):
            raise ValueError(f'busy must be "503" or "retry", got {self.busy!r}')
        object.__setattr__(self, "cors_origins", _origins(self.cors_origins))
        if self.cors_credentials and (self.cors_origins is None or self.cors_origins == "*"):
            raise ValueError("cors_credentials needs a list of origins: a wildcard with credentials "
                             "would let any site read its visitors' streams")
        object.__setattr__(self, "default_channels", tuple(self.default_channels))
        object.__setattr__(self, "_channel_re", re.compile(self.channel_pattern))
        for channel in self.default_channels:
            self.check_channel(channel)

    def check_channel(self, channel: str) -> None:
        """Raise ValueError unless ``channel`` is a valid channel name under these limits."""
        if not channel or len(channel) > self.max_channel_length:
            raise ValueError(f"channel names have 1 to {self.max_channel_length} characters")
        if not self._channel_re.fullmatch(channel):
            raise ValueError(f"channel names match {self.channel_pattern}")

    def replace(self, **changes: Any) -> Options:
        return dataclasses.replace(self, **changes)


_ORIGIN = re.compile(r"null|[A-Za-z][A-Za-z0-9+.-]*://[^/\s,?#]+")


def _origins(value: object) -> str | tuple[str, ...] | None:
    """``cors_origins`` as None, ``"*"`` or a tuple of exact origins; ValueError for anything else.

    A string is never matched as a substring: it is ``"*"`` or origins separated by
    commas or whitespace (which no origin contains).
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = value.replace(",", " ").split()
        if value == ["*"]:
            return "*"
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise ValueError(f"cors_origins must be None, '*' or a list of origins, got {value!r}")
    origins = tuple(value)
    if origins == ("*",):
        return "*"
    for origin in origins:
        if not isinstance(origin, str) or not _ORIGIN.fullmatch(origin):
            raise ValueError(f"cors_origins: {origin!r} is not an origin (scheme://host[:port], "
                             "no path or trailing slash) or is '*' among others")
    return origins


def _check_seconds(name: str, value: float | None) -> None:
    """ValueError unless ``value`` is None or a positive number of seconds."""
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")


class Reply(NamedTuple):
    """A WSGI response in parts, for frameworks that build their own response objects."""

    status: str
    headers: list[tuple[str, str]]
    body: Iterable[bytes]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Send this reply as a WSGI application would."""
        start_response(self.status, self.headers)
        return self.body


def stream_headers() -> list[tuple[str, str]]:
    """The headers of every event stream."""
    return [
        ("Content-Type", CONTENT_TYPE),
        ("Cache-Control", "no-cache, no-transform"),
        ("X-Accel-Buffering", "no"),
    ]


def event_from(item: object) -> Event | None:
    """What a stream sends for ``item``: an Event as is, str as data, None as nothing, else JSON."""
    if item is None or isinstance(item, Event):
        return item
    if isinstance(item, str):
        return Event(item)
    return Event(json.dumps(item, separators=(",", ":"), ensure_ascii=False))


def last_event_id_from(environ: WSGIEnvironment) -> str | None:
    """The ``Last-Event-ID`` of a request: the header, else a polyfill's query parameter."""
    value: str | None = environ.get("HTTP_LAST_EVENT_ID")
    if not value:
        for name, param in _query(environ):
            if name.lower().replace("-", "").replace("_", "") in ("lasteventid", "evslasteventid") and param:
                return param
        return None
    return _wsgi_text(value)


class _Source(Protocol):
    """Where a stream's events come from: ``next`` waits at most ``timeout`` seconds;
    ``ended`` says why it raised StopIteration (see :data:`sseproto.metrics.DISCONNECT_REASONS`)."""

    can_drain: bool
    ended: str

    def next(self, timeout: float) -> Event | None: ...

    def close(self) -> None: ...


class _SubscriptionSource:
    can_drain = True
    ended = "closed"

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription

    def next(self, timeout: float) -> Event | None:
        try:
            return self.subscription.get(timeout)
        except SubscriptionEnded as exc:
            self.ended = _ended_reason(exc)
            raise StopIteration from None

    def close(self) -> None:
        self.subscription.close()


class _IterableSource:
    """A generator or other iterable; a None item means "nothing now" (time for a heartbeat)."""

    can_drain = False
    ended = "finished"

    def __init__(self, iterable: Iterable[object]) -> None:
        self.iterable = iterable
        self.iterator = iter(iterable)

    def next(self, timeout: float) -> Event | None:
        return event_from(next(self.iterator))

    def close(self) -> None:
        close = getattr(self.iterator, "close", None) or getattr(self.iterable, "close", None)
        if close is not None:
            close()


class _PollingSource:
    """A function called every ``interval`` seconds; it returns one item (None: nothing)."""

    can_drain = False
    ended = "finished"

    def __init__(self, func: Callable[[], object], interval: float) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        self.func = func
        self.interval = interval
        self.due = time.monotonic()

    def next(self, timeout: float) -> Event | None:
        wait = self.due - time.monotonic()
        if wait > timeout:
            time.sleep(timeout)
            return None
        if wait > 0:
            time.sleep(wait)
        self.due = time.monotonic() + self.interval
        return event_from(self.func())

    def close(self) -> None:
        pass


def replay_prelude(subscription: Subscription, last_event_id: str | None) -> Iterable[Event | bytes]:
    """What a stream of ``subscription`` sends before live events: the gap event, if any, then
    the replay (as the broker's encoded bytes where it holds them)."""
    replay = subscription.replay
    wire = getattr(replay, "wire", None)  # encoded bytes the broker already holds
    prelude: Iterable[Event | bytes] = wire() if callable(wire) else replay
    if subscription.gap:
        gap = {"lastEventId": last_event_id, "channels": list(subscription.gap)}
        prelude = itertools.chain([Event(json.dumps(gap, separators=(",", ":")), GAP_EVENT)], prelude)
    return prelude


def _ended_reason(exc: SubscriptionEnded) -> str:
    """The disconnect reason of a subscription's end: the broker's reason, in metrics' words."""
    if exc.reason == "overflow":
        return "lagging"
    if exc.reason == "closed" and DRAINING.is_set():  # gunicorn's drain on SIGTERM
        return "draining"
    return exc.reason


class EventStream:
    """The body of one event stream: an iterator of bytes chunks for a WSGI server.

    Sends the opening chunk at once (so the headers go out before any event), then
    ``prelude`` (replayed events), then what the source yields, with heartbeats when
    idle. It ends at an event boundary past ``max_bytes`` bytes or, at random, between
    0.75 and 1 times ``max_duration`` seconds. ``close()`` (which every WSGI server calls,
    also when the client vanished) releases the source and runs ``on_close``; it also runs
    if the stream is collected unclosed. A class rather than a generator, because a
    generator that never started would skip its cleanup when closed. With ``metrics``
    (:class:`sseproto.metrics.Metrics`) it counts itself open, its events once per chunk,
    its gap event and why it ended.
    """

    status = "200 OK"

    def __init__(
        self,
        source: _Source,
        *,
        heartbeat: float = 15.0,
        retry: int | None = 3000,
        retry_jitter: int = 0,
        padding: bool = False,
        max_bytes: int | None = None,
        max_duration: float | None = None,
        prelude: Iterable[Event | bytes] = (),
        disconnected: Callable[[], bool] | None = None,
        on_close: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.headers = stream_headers()
        self._source = source
        self._heartbeat = heartbeat
        self._limit = math.inf if max_bytes is None else max_bytes  # the byte cap
        self._disconnected = disconnected
        if retry is not None and retry_jitter:
            retry += random.randint(0, retry_jitter)
        Event(retry=retry)  # validates
        opening = (PADDING if padding else b"") + (b":\n" if retry is None else b"retry: %d\n\n" % retry)
        self._opening: bytes | None = opening
        # Replayed events, read as the stream is: never the whole history at once.
        self._prelude: Iterator[Event | bytes] | None = iter(prelude)
        self._carry = b""  # an encoded prelude event that did not fit in the last chunk
        # The byte cap counts from after the opening, so padding alone never ends a stream.
        self._sent = -len(opening)
        self._ending = False  # stop at the next call: the source ended or close() was called
        now = time.monotonic()
        self._last_write = now
        _check_seconds("max_duration", max_duration)
        # Spread over the last quarter, so that streams opened together do not end together.
        self._end_at = math.inf if max_duration is None else now + max_duration * random.uniform(0.75, 1.0)
        self._next_check = min(now + heartbeat, self._end_at)
        self._metrics = metrics
        self._gap = False  # the prelude opens with the gap event (counted apart from deliveries)
        self._why: list[str | None] = [None]  # why it ended; None at cleanup: the client went
        if metrics is not None:
            metrics.stream_opened()
        self._cleanup = weakref.finalize(self, _cleanup, source, on_close, metrics, self._why)

    @classmethod
    def from_iterable(cls, iterable: Iterable[object], **options: Any) -> EventStream:
        """A stream of what ``iterable`` yields (see :func:`event_from`); None items are idle ticks."""
        return cls(_IterableSource(iterable), **options)

    @classmethod
    def from_polling(cls, func: Callable[[], object], interval: float, **options: Any) -> EventStream:
        """A stream of what ``func()`` returns, called every ``interval`` seconds (None: nothing)."""
        return cls(_PollingSource(func, interval), **options)

    @classmethod
    def from_subscription(
        cls, subscription: Subscription, last_event_id: str | None = None, **options: Any
    ) -> EventStream:
        """A stream of a broker subscription: its replay (after a gap event, if any), then live events.

        ``last_event_id`` is the id the subscription was asked to resume from.
        """
        prelude = replay_prelude(subscription, last_event_id)
        stream = cls(_SubscriptionSource(subscription), prelude=prelude, **options)
        stream._gap = bool(subscription.gap)
        return stream


    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._ending or self._sent >= self._limit:
            self._stop("max_bytes")  # unless an end was already recorded
        if self._prelude is not None:
            chunk = self._take_prelude()
            if chunk:
                return self._write(chunk)
            if self._ending:
                self._stop(self._source.ended)
        source = self._source
        while True:
            now = time.monotonic()
            if now >= self._next_check:
                if now >= self._end_at:
                    self._stop("max_duration")
                if DRAINING.is_set():
                    self._stop("draining")
                if self._disconnected is not None and self._disconnected():
                    self._stop("client_gone")
                self._next_check = min(now + self._heartbeat, self._end_at)
            timeout = self._last_write + self._heartbeat - now
            if timeout <= 0:
                return self._write(HEARTBEAT)
            try:
                event = source.next(min(timeout, self._next_check - now))
            except StopIteration:
                self._stop(source.ended)
            if event is not None:
                return self._write(self._drain(event.encode()))
            if self._ending:  # closed from another thread while waiting (close() ran)
                raise StopIteration

    def close(self) -> None:
        """End the stream: unsubscribe or close the generator, release the connection slot."""
        self._ending = True
        self._cleanup()

    def _stop(self, reason: str) -> NoReturn:
        """End the stream for ``reason`` (kept if the first recorded) and stop iterating."""
        self._end_for(reason)
        self.close()
        raise StopIteration

    def _end_for(self, reason: str) -> None:
        """Record why the stream ends, unless a reason was recorded first."""
        if self._why[0] is None:
            self._why[0] = reason

    def _take_prelude(self) -> bytes:
        """The opening (first time) and replayed events up to the chunk size and the byte
        cap, whole events only; b"" once the replay is over."""
        parts = [self._opening] if self._opening is not None else []
        self._opening = None
        size = len(parts[0]) if parts else 0
        events = 0
        if self._carry:
            parts.append(self._carry)
            size += len(self._carry)
            self._carry = b""
            events = 1
        room = min(_CHUNK, self._limit - self._sent)
        prelude = self._prelude
        assert prelude is not None
        try:
            while size < room:
                item = next(prelude, None)
                if item is None:
                    self._prelude = None
                    break
                wire = item if isinstance(item, bytes) else item.encode()
                if parts and size + len(wire) > _CHUNK:
                    self._carry = wire
                    break
                parts.append(wire)
                size += len(wire)
                events += 1
        except SubscriptionEnded as exc:  # the broker cannot finish the replay exactly: the client resumes
            self._prelude = None
            self._ending = True
            self._end_for(_ended_reason(exc))
        metrics = self._metrics
        if metrics is not None:
            if self._gap and events:  # the first event of the first chunk
                self._gap = False
                events -= 1
                metrics.gaps.inc()
            if events:
                metrics.deliveries.inc(events)
        return b"".join(parts)

    def _drain(self, chunk: bytes) -> bytes:
        """Append events already waiting in the source, up to the chunk size and byte cap."""
        room = min(_CHUNK, self._limit - self._sent) if self._source.can_drain else 0
        next_event = self._source.next
        events = 1
        while len(chunk) < room:
            try:
                event = next_event(0)
            except StopIteration:
                self._ending = True
                self._end_for(self._source.ended)
                break
            if event is None:
                break
            chunk += event.encode()
            events += 1
        if self._metrics is not None:
            self._metrics.deliveries.inc(events)
        return chunk

    def _write(self, chunk: bytes) -> bytes:
        self._sent += len(chunk)
        self._last_write = time.monotonic()
        return chunk


def _cleanup(
    source: _Source, on_close: Callable[[], None] | None, metrics: Metrics | None, why: list[str | None]
) -> None:
    try:
        source.close()
    finally:
        try:
            if on_close is not None:
                on_close()
        finally:
            if metrics is not None:
                metrics.stream_closed(why[0] or "client_gone")


class EventStreamApp:
    """A WSGI application serving event streams of a broker's channels.

    ``GET ?channel=a&channel=b`` (or ``?channel=a,b``) streams those channels (default:
    ``options.default_channels``), replaying from the request's last event id.
    ``authorize(environ, channel) -> bool`` is asked about each channel (False: 403), but
    not for a GRIP proxy's recovery of a hold within its grant, which carries no client
    credentials (:meth:`sseproto.grip.Grip.recovery_granted`).
    The connection limit counts every stream this object opens, including those of
    :meth:`iterable_reply` and :meth:`polling_reply`. ``metrics`` turns on Prometheus
    metrics (:class:`sseproto.metrics.Metrics`; True: ``Metrics()``, on prometheus_client's
    default registry); events published are counted when the broker is one of sseproto's.
    ``grip`` (:class:`sseproto.grip.Grip`) answers requests a GRIP proxy signed with a hold.
    """

    def __init__(
        self,
        broker: Broker,
        options: Options | None = None,
        *,
        authorize: Callable[[WSGIEnvironment, str], bool] | None = None,
        metrics: Metrics | bool | None = None,
        grip: Grip | None = None,
        **overrides: Any,
    ) -> None:
        self.broker = broker
        self.grip = grip
        self.options = (options or Options()).replace(**overrides) if overrides else (options or Options())
        self.authorize = authorize
        self._active = 0
        self._lock = threading.Lock()
        if metrics is True:
            from .metrics import Metrics

            metrics = Metrics()
        self.metrics: Metrics | None = metrics or None
        count_publishes = getattr(broker, "count_publishes", None)
        if self.metrics is not None and callable(count_publishes):
            count_publishes(self.metrics.published)

    @property
    def active_streams(self) -> int:
        """How many streams this endpoint holds open now."""
        with self._lock:
            return self._active

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        return self.respond(environ)(environ, start_response)

    def respond(self, environ: WSGIEnvironment) -> Reply:
        """The reply to one request to the endpoint."""
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "OPTIONS":
            return self._preflight(environ)
        if method != "GET":
            return self._error(environ, "405 Method Not Allowed", "use GET", [("Allow", "GET, OPTIONS")])
        try:
            channels = self.channels_from(environ)
            last_id = last_event_id_from(environ)
            self._check_last_event_id(last_id)
        except ValueError as exc:
            return self._error(environ, "400 Bad Request", str(exc))
        # A GRIP proxy's recovery of a hold of these channels carries no client credentials:
        # its grant says they were authorized when the hold was made.
        authorize = self.authorize
        if authorize is not None and (self.grip is None or not self.grip.recovery_granted(environ, channels)):
            for channel in channels:
                if not authorize(environ, channel):
                    return self._error(environ, "403 Forbidden", f"not allowed to read {channel!r}")
        return self.subscription_reply(channels, last_id, environ)

    def channels_from(self, environ: WSGIEnvironment) -> tuple[str, ...]:
        """The validated channel names a request asks for; ValueError when they break a limit."""
        names: list[str] = []
        for name, value in _query(environ):
            if name == "channel":
                names.extend(value.split(","))
        channels = tuple(dict.fromkeys(names)) or self.options.default_channels
        if len(channels) > self.options.max_channels:
            raise ValueError(f"at most {self.options.max_channels} channels per stream")
        for channel in channels:
            self.options.check_channel(channel)
        return channels

    def subscription_reply(
        self,
        channels: Sequence[str],
        last_event_id: str | None = None,
        environ: WSGIEnvironment | None = None,
    ) -> Reply:
        """A stream of ``channels`` from the broker, replaying after ``last_event_id``
        (400 when it is longer than ``max_last_event_id_length``)."""
        try:
            self._check_last_event_id(last_event_id)
        except ValueError as exc:
            return self._error(environ or {}, "400 Bad Request", str(exc))
        if self.grip is not None and environ is not None and self.grip.signed(environ):
            return self.grip.hold_reply(self, channels, last_event_id, environ)  # the proxy holds it
        if not self._admit():
            return self._busy(environ)
        try:
            subscription = self.broker.subscribe(channels, last_event_id, max_replay=self.options.max_replay)
        except BaseException:
            self._release()
            raise
        try:
            stream = EventStream.from_subscription(subscription, last_event_id, **self._settings(environ))
        except BaseException:
            subscription.close()
            self._release()
            raise
        return self._reply(stream, environ)

    def _check_last_event_id(self, last_id: str | None) -> None:
        limit = self.options.max_last_event_id_length
        if last_id is not None and len(last_id) > limit:
            raise ValueError(f"Last-Event-ID is longer than {limit} (max_last_event_id_length)")

    def iterable_reply(self, iterable: Iterable[object], environ: WSGIEnvironment | None = None) -> Reply:
        """A stream of what ``iterable`` yields (see :func:`event_from`); None items are idle ticks."""
        if not self._admit():
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
            return self._busy(environ)
        return self._reply(EventStream.from_iterable(iterable, **self._settings(environ)), environ)

    def polling_reply(
        self, func: Callable[[], object], interval: float, environ: WSGIEnvironment | None = None
    ) -> Reply:
        """A stream of what ``func()`` returns, called every ``interval`` seconds (None: nothing)."""
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        if not self._admit():
            return self._busy(environ)
        return self._reply(EventStream.from_polling(func, interval, **self._settings(environ)), environ)

    def _settings(self, environ: WSGIEnvironment | None) -> dict[str, Any]:
        """EventStream keyword arguments for a request under these options."""
        options = self.options
        environ = environ or {}
        return {
            "heartbeat": options.heartbeat,
            "retry": options.retry,
            "retry_jitter": options.retry_jitter,
            "padding": options.padding or _flag(environ, "padding"),
            "max_bytes": options.max_bytes,
            "max_duration": options.max_duration,
            "disconnected": _disconnect_probe(environ),
            "on_close": self._release,
            "metrics": self.metrics,
        }

    def _reply(self, stream: EventStream, environ: WSGIEnvironment | None) -> Reply:
        if environ is not None and self.options.write_timeout is not None:
            _limit_writes(environ, self.options.write_timeout)
        return Reply(stream.status, stream.headers + self._cors(environ or {}), stream)

    def _admit(self) -> bool:
        if DRAINING.is_set():
            return False
        with self._lock:
            limit = self.options.max_connections
            if limit is not None and self._active >= limit:
                return False
            self._active += 1
            return True

    def _release(self) -> None:
        with self._lock:
            self._active -= 1

    def _busy(self, environ: WSGIEnvironment | None) -> Reply:
        environ = environ or {}
        seconds = self.options.retry_after
        if self.metrics is not None:
            self.metrics.refused("draining" if DRAINING.is_set() else "busy")
        if DRAINING.is_set():
            # This process is going away: come back (to another one) as after a drop.
            retry = self.options.retry if self.options.retry is not None else 3000
            return self._come_back(environ, "draining", retry + random.randint(0, self.options.retry_jitter))
        if self.options.busy == "retry":
            # Spread over [1, 2) x retry_after so that the clients turned away together do
            # not come back together.
            return self._come_back(environ, "busy", random.randrange(seconds * 1000, seconds * 2000))
        return self._error(environ, "503 Service Unavailable", "too many open streams",
                           [("Retry-After", str(seconds))])

    def _come_back(self, environ: WSGIEnvironment, why: str, retry: int) -> Reply:
        """A stream of just ``retry:`` that ends at once: EventSource reconnects after ``retry``
        ms with its last event id, where an error status would fail it for good."""
        body = b": %s\nretry: %d\n\n" % (why.encode(), retry)
        return Reply(EventStream.status, stream_headers() + self._cors(environ), [body])

    def _error(
        self, environ: WSGIEnvironment, status: str, message: str, extra: Sequence[tuple[str, str]] = ()
    ) -> Reply:
        body = (message + "\n").encode()
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                   ("Cache-Control", "no-cache"), *extra, *self._cors(environ)]
        return Reply(status, headers, [body])

    def _preflight(self, environ: WSGIEnvironment) -> Reply:
        headers = [("Allow", "GET, OPTIONS"), ("Content-Length", "0"), *self._cors(environ)]
        if len(headers) > 2:
            headers += [
                ("Access-Control-Allow-Methods", "GET"),
                ("Access-Control-Allow-Headers", "Last-Event-ID, Cache-Control, Accept, X-Requested-With"),
                ("Access-Control-Max-Age", "86400"),
            ]
        return Reply("204 No Content", headers, [])

    def _cors(self, environ: WSGIEnvironment) -> list[tuple[str, str]]:
        origins = self.options.cors_origins
        if origins is None:
            return []
        if origins == "*":
            return [("Access-Control-Allow-Origin", "*")]
        origin = environ.get("HTTP_ORIGIN")
        if origin is None or origin not in origins:
            return [("Vary", "Origin")]
        headers = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        if self.options.cors_credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers


def _query(environ: WSGIEnvironment) -> list[tuple[str, str]]:
    """The query parameters (ValueError past 200 of them)."""
    return parse_qsl(str(environ.get("QUERY_STRING", "")), keep_blank_values=True, max_num_fields=200)


def _wsgi_text(value: str) -> str:
    """A header value as text: WSGI hands over the raw bytes as latin-1."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _flag(environ: WSGIEnvironment, name: str) -> bool:
    """Whether the query string turns on ``name`` (``?name``, ``?name=1``, ``?name=true``)."""
    try:
        query = _query(environ)
    except ValueError:
        return False
    return any(key == name and value.lower() in ("", "1", "true", "yes", "on") for key, value in query)


def _client_socket(environ: WSGIEnvironment) -> Any:
    """The client's socket, where the server exposes it (gunicorn, Werkzeug), else None."""
    return environ.get("gunicorn.socket") or environ.get("werkzeug.socket")


def _limit_writes(environ: WSGIEnvironment, seconds: float) -> None:
    """Let a write to a client that stopped reading fail after ``seconds``, where the server
    exposes its socket (gunicorn, Werkzeug): the server then drops the connection and the
    stream gives back its slot and thread, instead of waiting on that client forever.

    Waitress writes from its own thread and buffers what the application yields, so a
    socket timeout cannot reach it: there (on Linux) ``TCP_USER_TIMEOUT`` makes the kernel
    drop a connection whose data stays unacknowledged, a peer's closed window included,
    for ``seconds``, and waitress then ends the stream.
    """
    sock = _client_socket(environ)
    if hasattr(sock, "settimeout"):
        try:
            sock.settimeout(seconds)
        except OSError:
            pass
        return
    sock = _waitress_socket(environ)
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if sock is not None and option is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, option, max(1, round(seconds * 1000)))
        except (OSError, ValueError):
            pass


def _waitress_socket(environ: WSGIEnvironment) -> Any:
    """The client's socket under waitress (the channel behind its ``client_disconnected``
    check; waitress has no public way to it), else None."""
    channel = getattr(environ.get("waitress.client_disconnected"), "__self__", None)
    sock = getattr(channel, "socket", None)
    return sock if hasattr(sock, "setsockopt") else None


def _disconnect_probe(environ: WSGIEnvironment) -> Callable[[], bool] | None:
    """A check whether the client has gone, from what the server exposes, or None."""
    waitress_check = environ.get("waitress.client_disconnected")
    if callable(waitress_check):
        return waitress_check  # type: ignore[no-any-return]
    sock = _client_socket(environ)
    if not (hasattr(sock, "recv") and hasattr(sock, "fileno")):
        return None

    def gone() -> bool:
        # Readable with nothing to read means the client closed its end. poll(), not
        # select(): select() refuses descriptors past 1023, common on a busy server.
        try:
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            if not poller.poll(0):
                return False
            return bool(sock.recv(1, socket.MSG_PEEK) == b"")
        except (OSError, ValueError):
            return True

    return gone
