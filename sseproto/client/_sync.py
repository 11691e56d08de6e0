"""An EventSource on ``requests`` that behaves like a browser's: it reconnects, resumes and stops.

Reconnects after the stream ends or the network drops, sending ``Last-Event-ID``; honours
``retry:``; backs off exponentially with jitter on failures; stops on 204, and on any
other status or content type with an :class:`EventSourceError`. Events are handed over as
soon as their bytes arrive: every read takes what is there (one system call), never "wait
for N bytes", for chunked and connection-close-delimited bodies alike; a plain chunked
body is de-chunked here, so a burst of one-chunk events is decoded in one pass.
Comments reach ``on_comment`` in stream order with the events. Headers you give go only to
the origin of the URL you give, unless ``forward_headers=True``.
"""

from __future__ import annotations

import http.client
import logging
import random
import socket
import threading
from collections.abc import Callable, Collection, Iterator
from types import TracebackType
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3 import exceptions as u3

from .. import DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_LINE_SIZE, Decoder, Event
from ._chunked import Dechunker as _Dechunker
from ._errors import ContentTypeError, EventSourceError, HTTPStatusError, response_error
from ._policy import (
    CLOSED,
    CONNECTING,
    MAX_DELAY,
    MIN_FAILURE_DELAY,
    OPEN,
    Body,
    Headers,
    Policy,
    check_body,
    classify,
    comment_pieces,
    user_headers,
)
from ._policy import origin as _origin

__all__ = [
    "CLOSED",
    "CONNECTING",
    "OPEN",
    "ContentTypeError",
    "EventSource",
    "EventSourceError",
    "HTTPStatusError",
    "check_response",
    "iter_events",
]

log = logging.getLogger("sseproto.client")

#: Default (connect, read) timeouts in seconds; the read timeout must exceed the server's heartbeat.
DEFAULT_TIMEOUT = (10.0, 60.0)
_READ_SIZE = 64 * 1024

if not hasattr(urllib3.HTTPResponse, "read1"):  # pragma: no cover - urllib3 1.x
    raise ImportError("sseproto.client needs urllib3 >= 2.3 (it reads with HTTPResponse.read1)")


def check_response(response: requests.Response) -> bool:
    """True if ``response`` is an event stream, False for 204 (stop); raise an EventSourceError otherwise."""
    verdict = classify(response.status_code, response.headers.get("Content-Type", ""))
    if verdict == "stop":
        return False
    if verdict == "status":
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= _READ_SIZE:
            try:
                response.content  # noqa: B018 - a small error body is kept for the exception
            except requests.RequestException:
                pass
    if verdict != "open":
        raise response_error(verdict, response, response.reason)
    return True


def _socket_file(raw: Any) -> Any:
    """The buffered socket file under a chunked, uncompressed urllib3 response, or None."""
    encoding = raw.headers.get("Content-Encoding", "identity").strip().lower()
    fp = getattr(getattr(raw, "_fp", None), "fp", None)
    if encoding not in ("", "identity") or not hasattr(fp, "read1"):
        return None
    if getattr(raw._fp, "chunk_left", None) is not None:  # http.client started reading chunks
        return None
    return fp


def _chunks(response: requests.Response, size: int = _READ_SIZE) -> Iterator[bytes]:
    """The body's bytes as they arrive, decompressed; network errors as requests exceptions.

    Never "wait until ``size`` bytes": each read returns what has arrived (one system call).
    """
    raw = response.raw
    if raw is None or getattr(response, "_content_consumed", False):
        # Read already (stream=False): the whole body is there.
        if response.content:
            yield response.content
        return
    try:
        if raw.chunked:
            fp = _socket_file(raw)
            if fp is None:
                # Compressed: urllib3 undoes chunks and compression, each chunk once complete.
                yield from raw.read_chunked(size, decode_content=True)
                return
            dechunker = _Dechunker()
            while not dechunker.done:
                data = fp.read1(size)
                if not data:
                    raise http.client.IncompleteRead(b"", None)
                body = dechunker.feed(data)
                if body:
                    yield body
            return
        while True:
            data = raw.read1(size, decode_content=True)
            if not data:
                return
            yield data
    # The mapping of iter_content, so callers catch what they already catch from requests.
    except (u3.ReadTimeoutError, TimeoutError) as exc:
        raise requests.exceptions.ReadTimeout(exc, response=response) from exc
    except u3.SSLError as exc:
        raise requests.exceptions.SSLError(exc, response=response) from exc
    except u3.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc, response=response) from exc
    except (u3.ProtocolError, http.client.HTTPException) as exc:
        raise requests.exceptions.ChunkedEncodingError(exc, response=response) from exc
    except OSError as exc:
        raise requests.exceptions.ConnectionError(exc, response=response) from exc


def iter_events(response: requests.Response, *, decoder: Decoder | None = None) -> Iterator[Event]:
    """Decode an open ``requests`` response (made with ``stream=True``) into events, as they arrive.

    No reconnection: the iterator ends with the response. A 204 yields nothing; another
    status or content type raises an :class:`EventSourceError`. Pass a ``decoder`` to set
    limits or keep ``last_event_id`` across responses; its ``on_comment`` is called in stream
    order with the events yielded.
    """
    if not check_response(response):
        return
    decoder = decoder if decoder is not None else Decoder()
    in_order = decoder._on_comment is not None
    try:
        for chunk in _chunks(response):
            for piece in comment_pieces(chunk) if in_order else (chunk,):
                yield from decoder.feed(piece)
    finally:
        response.close()
    decoder.end()


def _shutdown(response: requests.Response) -> None:
    """Shut the response's socket down both ways: a read blocked in another thread sees EOF,
    and the server sees the connection end at once, even when no thread is reading.

    (urllib3's ``HTTPResponse.shutdown()`` only shuts the reading side: the server would
    keep the stream until the socket is garbage-collected.)
    """
    raw = response.raw
    connection = getattr(raw, "_connection", None)
    shut = getattr(raw, "_sock_shutdown", None)  # urllib3 >= 2.3: the socket's shutdown method
    if connection is not None and callable(shut):
        try:
            shut(socket.SHUT_RDWR)
            return
        except OSError:
            pass
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


_Auth = tuple[str, str] | AuthBase | Callable[[requests.PreparedRequest], requests.PreparedRequest] | None


class _CuttableAdapter(HTTPAdapter):
    """The adapter of a session we own: it tracks the connection in use so that close() can cut a
    request still connecting or waiting for the response headers (a user's session is left as is).
    """

    def __init__(self, closing: threading.Event) -> None:
        super().__init__()
        self._closing = closing
        self._connection: Any = None

    def get_connection_with_tls_context(self, *args: Any, **kwargs: Any) -> Any:
        pool = super().get_connection_with_tls_context(*args, **kwargs)
        get_conn = getattr(pool, "_get_conn", None)
        if get_conn is not None and not getattr(get_conn, "_sseproto", False):

            def tracked_get_conn(*a: Any, **kw: Any) -> Any:
                conn = get_conn(*a, **kw)
                self._connection = conn
                connect = getattr(conn, "connect", None)
                if connect is not None and not getattr(connect, "_sseproto", False):

                    def connect_unless_closing() -> None:
                        connect()
                        # close() may have run while the socket was being made: cut it now.
                        if self._closing.is_set():
                            self.cut()

                    connect_unless_closing._sseproto = True  # type: ignore[attr-defined]
                    conn.connect = connect_unless_closing
                return conn

            tracked_get_conn._sseproto = True  # type: ignore[attr-defined]
            setattr(pool, "_get_conn", tracked_get_conn)  # noqa: B010 - private hook, guarded above
        return pool

    def cut(self) -> None:
        sock = getattr(self._connection, "sock", None)
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# Errors after which a browser reconnects; SSLError (a ConnectionError) is not one of them.
_NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)

# What a request redirected to another origin keeps (unless forward_headers): the cookies
# and proxy credentials requests computed for the new URL, and the headers of the body,
# which requests leaves only when the body goes along (307, 308). Everything else is rebuilt
# from requests' defaults and the protocol's own headers.
_KEPT_ACROSS_ORIGINS = ("Cookie", "Proxy-Authorization", "Content-Type", "Content-Length",
                        "Transfer-Encoding")


def _clamp_timeout(timeout: float | tuple[float, float] | None) -> Any:
    """requests' timeout with every number clamped to :data:`MAX_DELAY` (a socket cannot wait longer)."""
    if isinstance(timeout, tuple):
        return tuple(None if t is None else min(t, MAX_DELAY) for t in timeout)
    return None if timeout is None else min(timeout, MAX_DELAY)


class EventSource:
    """A server-sent event stream, reconnecting like a browser's ``EventSource``; iterate for events.

    ``with EventSource(url) as source: for event in source: ...``. Iteration ends after
    :meth:`close` (from any thread, promptly, even during a blocked read), a 204, or the
    end of a one-shot stream; it raises :class:`EventSourceError` for another status or
    content type and :class:`~sseproto.LimitExceeded` for an event over the limits.
    ``timeout`` is requests' (connect, read) pair: a read timeout longer than the server's
    heartbeat detects a silent server. The rules of reconnection (``retry``, backoff,
    ``retry_statuses``, which requests are sent again) are :mod:`sseproto.client`'s
    ``Policy``, shared with :class:`~sseproto.client.AsyncEventSource`.

    ``method`` and a body (``json``, ``data`` or ``content``, sent again as they are on
    every attempt) make any request a stream: a POST is sent again only once its stream
    carried an id, or with ``reconnect=True``; ``reconnect=False`` makes any stream one-shot.
    ``headers`` is a mapping, or a function called for every attempt (fresh credentials);
    they, ``auth`` and the session's cookies go with every attempt. ``on_open(response)``
    runs for every stream opened, ``on_error(exc)`` for every failed attempt, drop or read
    timeout (reconnection goes on; call :meth:`close` to stop it); ``on_comment(text)`` for
    every comment (heartbeats), in stream order with the events. :meth:`restart` drops the
    connection and reconnects at once.

    Redirects are followed; every reconnection starts again at ``url``. Headers you give
    (``headers``, the session's own, those ``auth`` sets) go only to the origin (scheme,
    host, port) of ``url``: a redirect to another origin gets requests' default headers,
    the protocol's (``Accept``, ``Cache-Control``, ``Last-Event-ID``) and the session's
    cookies for that origin, and so does every hop after it. ``forward_headers=True`` sends
    them along, as requests does (it drops only ``Authorization`` on a change of host).
    """

    CONNECTING = CONNECTING
    OPEN = OPEN
    CLOSED = CLOSED

    def __init__(
        self,
        url: str,
        *,
        method: str = "GET",
        json: Any = None,
        data: Body = None,
        content: bytes | str | None = None,
        session: requests.Session | None = None,
        headers: Headers = None,
        auth: _Auth = None,
        last_event_id: str | None = None,
        timeout: float | tuple[float, float] | None = DEFAULT_TIMEOUT,
        reconnect: bool | None = None,
        reconnect_delay: float = 3.0,
        max_backoff: float = 30.0,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        on_open: Callable[[requests.Response], object] | None = None,
        on_error: Callable[[Exception], object] | None = None,
        on_comment: Callable[[str], object] | None = None,
        retry_statuses: Collection[int] = (),
        forward_headers: bool = False,
        min_failure_delay: float = MIN_FAILURE_DELAY,
        rng: random.Random | None = None,
    ) -> None:
        self._policy = Policy(
            method=method, last_event_id=last_event_id, reconnect=reconnect,
            reconnect_delay=reconnect_delay, max_backoff=max_backoff,
            min_failure_delay=min_failure_delay, retry_statuses=retry_statuses,
            max_event_size=max_event_size, max_line_size=max_line_size,
            on_comment=on_comment, rng=rng,
        )
        self._body = body_arguments(json=json, data=data, content=content)
        self.url = url
        self._closing = threading.Event()
        self._wake = threading.Event()  # ends a wait between attempts: close() or restart()
        self._own_session = session is None
        self._adapter: _CuttableAdapter | None = None
        if session is None:
            session = requests.Session()
            self._adapter = _CuttableAdapter(self._closing)
            session.mount("http://", self._adapter)
            session.mount("https://", self._adapter)
        self._session = session
        self._headers = headers
        self._auth = auth
        self._timeout = _clamp_timeout(timeout)
        self._forward_headers = forward_headers
        self._on_open = on_open
        self._on_error = on_error
        self._decoder = self._policy.decoder
        self._last_event_id = self._decoder.last_event_id
        self._delivering: Event | None = None
        self._ready_state = CONNECTING
        self._lock = threading.Lock()
        self._response: requests.Response | None = None
        self._running = False
        self._events = self._run()

    @property
    def ready_state(self) -> int:
        """CONNECTING (0), OPEN (1) or CLOSED (2), as the browser's ``readyState``."""
        return self._ready_state

    @property
    def last_event_id(self) -> str:
        """The last event id of the stream as delivered so far ("" for none): resume from it."""
        delivering = self._delivering
        return self._last_event_id if delivering is None else delivering.id or ""

    @property
    def reconnection_time(self) -> float:
        """Seconds to wait before reconnecting after a stream ends: the stream's ``retry`` or the default."""
        return self._policy.reconnection_time

    @property
    def will_reconnect(self) -> bool:
        """Whether the source comes back after the current connection ends or fails (else that
        end is final, and a failure is raised): the method's rule, ``reconnect``, a restart."""
        return self._policy.may_resend

    def next_delay(self, failures: int) -> float:
        """The wait, in seconds, before a reconnection that follows ``failures`` failed attempts in a row
        (clamped to :data:`MAX_DELAY`)."""
        return self._policy.next_delay(failures)

    def __iter__(self) -> Iterator[Event]:
        return self._events  # the generator itself: no extra call per event

    def __next__(self) -> Event:
        return next(self._events)

    def __enter__(self) -> EventSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop for good, from any thread: a blocked read or a wait ends at once; iteration ends quietly."""
        self._closing.set()
        self._wake.set()
        with self._lock:
            response = self._response
            running = self._running
            if not running:
                self._ready_state = CLOSED
        if response is not None:
            _shutdown(response)
        elif running and self._adapter is not None:
            self._adapter.cut()  # still waiting for the response headers
        if not running and self._own_session:
            self._session.close()

    def restart(self) -> None:
        """From any thread: drop the current connection now and reconnect at once, with
        ``Last-Event-ID`` (also a request that would not be sent again by itself)."""
        if self._closing.is_set():
            return
        self._policy.restart()
        with self._lock:
            response = self._response
        if response is not None:
            _shutdown(response)
        self._wake.set()

    def _request_headers(self, user: bool = True) -> dict[str, str | bytes]:
        """The protocol's headers, with the user's (``user=True``) between them."""
        return self._policy.request_headers(user_headers(self._headers) if user else None)

    def _connect(self) -> requests.Response | None:
        """One attempt: the response, or None after a network failure (counted for backoff)."""
        session = self._session
        try:
            response = session.request(
                self._policy.method,
                self.url,
                headers=self._request_headers(),
                auth=self._auth,
                timeout=self._timeout,
                stream=True,
                allow_redirects=False,
                **self._body,
            )
            # Redirects, one hop at a time: requests prepares each next request by its rules
            # (method, cookies, Authorization, proxies); headers stay with their origin here.
            origin = _origin(response.request.url or self.url)
            history: list[requests.Response] = []
            while (request := response.next) is not None:
                response.close()
                history.append(response)
                if len(history) > session.max_redirects:
                    raise requests.TooManyRedirects(
                        f"Exceeded {session.max_redirects} redirects.", response=response
                    )
                if self._closing.is_set():
                    return None
                if not self._forward_headers and _origin(request.url or "") != origin:
                    self._leave_headers_behind(request)
                settings = session.merge_environment_settings(request.url, {}, True, None, None)
                response = session.send(request, allow_redirects=False, timeout=self._timeout, **settings)
            if history:
                response.history = history
        except requests.exceptions.SSLError:
            raise
        except _NETWORK_ERRORS as exc:
            if self._closing.is_set():
                return None
            self._policy.failed()
            log.info("cannot connect to %s: %s", self.url, exc)
            self._failed(exc)
            return None
        with self._lock:
            if self._closing.is_set():
                response.close()
                return None
            self._response = response
        return response

    def _failed(self, exc: Exception) -> None:
        """A failed attempt, drop or timeout: tell ``on_error``; a one-shot stream raises it."""
        if self._on_error is not None:
            self._on_error(exc)
        if not self._policy.may_resend:
            raise exc

    def _leave_headers_behind(self, request: requests.PreparedRequest) -> None:
        """Strip a request redirected to another origin of every header the user gave."""
        log.info("redirected to another origin, %s: not sending your headers there", request.url)
        headers: Any = requests.utils.default_headers()  # a CaseInsensitiveDict
        headers.update(self._request_headers(user=False))
        for name in _KEPT_ACROSS_ORIGINS:
            value = request.headers.get(name)
            if value is not None:
                headers[name] = value
        request.headers = headers
        # As requests' rebuild_auth: ~/.netrc may hold credentials for the new host.
        netrc = requests.utils.get_netrc_auth(request.url or "") if self._session.trust_env else None
        if netrc is not None:
            request.prepare_auth(netrc)

    def _run(self) -> Iterator[Event]:
        with self._lock:
            if self._closing.is_set():
                self._ready_state = CLOSED
                return
            self._running = True
        policy = self._policy
        try:
            while not self._closing.is_set():
                self._ready_state = CONNECTING
                self._wake.clear()
                policy.connecting()
                response = self._connect()
                if response is not None:
                    try:
                        verdict = policy.response(response.status_code, response.headers)
                        if verdict == "retry":
                            log.info("%s answered %s: reconnecting", self.url, response.status_code)
                            if self._on_error is not None:
                                self._on_error(HTTPStatusError(
                                    f"{response.status_code} {response.reason} from {response.url}",
                                    response=response))
                        elif verdict != "open":
                            if not check_response(response):
                                log.info("%s answered 204 No Content: not reconnecting", self.url)
                                return
                        else:
                            self._ready_state = OPEN
                            if self._on_open is not None:
                                self._on_open(response)
                            yield from self._read(response)
                    finally:
                        with self._lock:
                            self._response = None
                        response.close()
                if self._closing.is_set():
                    return
                delay = policy.delay()
                if delay is None:
                    log.info("%s: the stream ended and is not sent again (%s)", self.url, policy.method)
                    return
                log.info("reconnecting to %s in %.3f s", self.url, delay)
                self._ready_state = CONNECTING
                self._wake.wait(delay)
        finally:
            # Ended for good (closed, 204, an error): the source cannot be iterated again.
            self._closing.set()
            self._ready_state = CLOSED
            with self._lock:
                self._running = False
            if self._own_session:
                self._session.close()

    def _read(self, response: requests.Response) -> Iterator[Event]:
        """The events of one response, until it ends, drops or times out, or the source closes."""
        policy = self._policy
        decoder = self._decoder
        closing = self._closing.is_set
        in_order = policy.on_comment is not None
        feed = policy.feed if in_order else policy.events
        dropped: Exception | None = None
        try:
            for chunk in _chunks(response):
                for event in feed(chunk):
                    if closing():
                        return
                    # The decoder has run ahead to the end of the piece: last_event_id
                    # reports the id of the event being delivered.
                    self._delivering = event
                    yield event
                self._delivering = None
                self._last_event_id = decoder.last_event_id
        except _NETWORK_ERRORS as exc:
            if closing():
                return
            log.info("stream from %s dropped: %s", self.url, exc)
            dropped = exc
        # The unfinished event of an ended or dropped response is never delivered.
        self._delivering = None
        policy.ended(dropped=dropped is not None)
        self._last_event_id = decoder.last_event_id
        if dropped is not None and not policy.restarting:
            self._failed(dropped)


def body_arguments(
    *, json: Any = None, data: Body = None, content: bytes | str | None = None
) -> dict[str, Any]:
    """requests' keyword arguments for a body that can be sent again on every attempt."""
    kind, value = check_body(json=json, data=data, content=content)
    if kind == "content":
        return {"data": value}
    return {} if kind is None else {kind: value}


