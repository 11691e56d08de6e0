"""An EventSource on ``httpx`` for asyncio and trio (through anyio), with the requests client's rules.

``async with AsyncEventSource(url) as source: async for event in source: ...``. The sans-IO
``Policy`` of :mod:`sseproto.client._policy` decides what each attempt sends, what a
response means and when to come back, exactly as for :class:`~sseproto.client.EventSource`;
this module only moves bytes. The body is read as it arrives (httpx's chunks, decoded by
the policy's decoder), and every read, connection attempt and wait runs in an anyio cancel
scope of its own, never across a ``yield``, so that :meth:`AsyncEventSource.aclose` and
:meth:`AsyncEventSource.restart` from any task end it at once.
"""

from __future__ import annotations

import functools
import http.client
import inspect
import logging
import os
import random
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection, Mapping
from types import TracebackType
from typing import Any, Literal

import anyio
import h11
import httpcore
import httpx

from .. import DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_LINE_SIZE, Decoder, Event
from ._chunked import Dechunker
from ._errors import HTTPStatusError, response_error
from ._policy import (
    CLOSED,
    CONNECTING,
    MAX_DELAY,
    MIN_FAILURE_DELAY,
    OPEN,
    Body,
    Policy,
    check_body,
    classify,
    comment_pieces,
    origin,
)

__all__ = ["AsyncEventSource", "aiter_events"]

log = logging.getLogger("sseproto.client")

#: Default (connect, read) timeouts in seconds, as the requests client's.
DEFAULT_TIMEOUT = (10.0, 60.0)
_READ_SIZE = 64 * 1024

#: Request headers, or a function (plain or async) called for every attempt (fresh credentials).
AsyncHeaders = Mapping[str, str] | Callable[[], Mapping[str, str] | Awaitable[Mapping[str, str]]] | None
#: httpx's ``auth``: a pair, an ``httpx.Auth`` or a function of the request.
Auth = tuple[str | bytes, str | bytes] | httpx.Auth | Callable[[httpx.Request], httpx.Request] | None
#: An ``httpx.Timeout``, one number for every phase, or a (connect, read) pair as requests takes it.
Timeout = httpx.Timeout | float | tuple[float | None, float | None] | None

# Errors after which a browser reconnects. A TLS failure while connecting is not one of them
# (httpx reports it as a ConnectError caused by an ssl.SSLError): see _tls_failure.
_NETWORK_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)
# What a request redirected to another origin keeps (unless forward_headers), besides httpx's
# defaults and the protocol's headers: its Host, the cookies httpx chose for the new URL, and
# the headers of the body when a 307/308 keeps it.
_KEPT_ACROSS_ORIGINS = ("Host", "Cookie")
_BODY_HEADERS = ("Content-Type", "Content-Length", "Transfer-Encoding")

Phase = Literal["connect", "read", "wait"]

try:  # The layers of httpx's default transport, to read an HTTP/1.1 body below h11 (_raw_body).
    from h11._readers import ChunkedReader, Http10Reader
    from httpcore._async.connection_pool import PoolByteStream
    from httpcore._async.http11 import HTTP11ConnectionByteStream
    from httpx._client import BoundAsyncStream
    from httpx._transports.default import AsyncResponseStream

    _LAYERS: tuple[type, ...] | None = (BoundAsyncStream, AsyncResponseStream, PoolByteStream,
                                        HTTP11ConnectionByteStream, httpcore.AsyncHTTP11Connection,
                                        h11.Connection, ChunkedReader, Http10Reader)
except ImportError:  # pragma: no cover - another layout: every body is read through httpx
    _LAYERS = None


async def check_response(response: httpx.Response) -> bool:
    """True if ``response`` is an event stream, False for 204 (stop); raise an EventSourceError otherwise."""
    verdict = classify(response.status_code, response.headers.get("Content-Type", ""))
    if verdict == "stop":
        return False
    if verdict == "status":
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= _READ_SIZE:
            try:
                await response.aread()  # a small error body is kept for the exception
            except httpx.HTTPError:
                pass
    if verdict != "open":
        raise response_error(verdict, response, response.reason_phrase)
    return True


async def aiter_events(response: httpx.Response, *, decoder: Decoder | None = None) -> AsyncIterator[Event]:
    """Decode an ``httpx`` response (from ``client.stream(...)`` or ``send(..., stream=True)``) into
    events, as they arrive.

    No reconnection: the iterator ends with the response, which it closes. A 204 yields
    nothing; another status or content type raises an :class:`EventSourceError`. Pass a
    ``decoder`` to set limits or keep ``last_event_id`` across responses; its ``on_comment``
    is called in stream order with the events yielded.
    """
    if not await check_response(response):
        return
    decoder = decoder if decoder is not None else Decoder()
    in_order = decoder._on_comment is not None
    chunks = _body(response)
    try:
        async for chunk in chunks:
            for piece in comment_pieces(chunk) if in_order else (chunk,):
                for event in decoder.feed(piece):
                    yield event
    finally:
        with anyio.CancelScope(shield=True):
            await chunks.aclose()  # type: ignore[attr-defined]
            await response.aclose()
    decoder.end()


def _raw_body(response: httpx.Response) -> tuple[Any, bytes, bool] | None:
    """``(network stream, body bytes h11 holds already, chunked?)`` for an unread, uncompressed,
    chunked or close-delimited HTTP/1.1 body on httpx's own transport; None for anything else
    (HTTP/2, a content-encoding, a Content-Length, a transport of the caller's, other versions).

    Reading that stream ourselves skips h11's, httpcore's and httpx's work per HTTP chunk. h11
    is left waiting for the body, so closing the response closes the connection (never reused).
    """
    if _LAYERS is None or response.is_stream_consumed or response.is_closed:
        return None
    bound, transport, pool, body, connection, state, chunked, close_delimited = _LAYERS
    if response.extensions.get("http_version") != b"HTTP/1.1":
        return None
    if response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        return None
    layer: Any = response.stream
    connection_layer: Any = None
    for kind, inner in ((bound, "_stream"), (transport, "_httpcore_stream"), (pool, "_stream"),
                        (body, "_connection"), (connection, "_h11_state")):
        if type(layer) is not kind:
            return None
        if kind is body and getattr(layer, "_closed", True):
            return None
        if kind is connection:
            connection_layer = layer
        layer = getattr(layer, inner, None)
    h11_state: Any = layer
    if type(h11_state) is not state or getattr(h11_state, "their_state", None) is not h11.SEND_BODY:
        return None
    reader = getattr(h11_state, "_reader", None)
    if type(reader) is chunked:
        # Nothing of the body parsed yet: no chunk begun, no CRLF or trailer pending.
        if (getattr(reader, "_bytes_in_chunk", None) != 0 or getattr(reader, "_bytes_to_discard", None) != b""
                or getattr(reader, "_reading_trailer", None) is not False):
            return None
    elif type(reader) is not close_delimited:
        return None
    buffered, eof = getattr(h11_state, "trailing_data", (b"", True))
    network = getattr(connection_layer, "_network_stream", None)
    if eof or network is None or network is not response.extensions.get("network_stream"):
        return None
    return network, buffered, type(reader) is chunked


async def _raw_chunks(
    response: httpx.Response, network: Any, buffered: bytes, chunked: bool
) -> AsyncIterator[bytes]:
    """The body of ``response`` read from its network stream: what h11 holds, then each read as it
    comes, de-chunked (many one-event chunks come out as one piece); errors as httpx's."""
    request = response.request
    timeout = request.extensions.get("timeout", {}).get("read")
    dechunker = Dechunker() if chunked else None
    data = buffered
    try:
        while True:
            if data:
                if dechunker is None:
                    yield data
                else:
                    body, error = dechunker.take(data)
                    if body:
                        yield body
                    if error is not None:
                        raise error
                    if dechunker.done:
                        return
            data = await network.read(_READ_SIZE, timeout)
            if not data:
                if dechunker is not None:
                    raise httpx.RemoteProtocolError(
                        "peer closed connection without sending complete message body "
                        "(incomplete chunked read)", request=request)
                return
    # The mapping httpx applies to httpcore's errors, so callers catch what they catch from httpx.
    except httpcore.TimeoutException as exc:
        raise httpx.ReadTimeout(str(exc), request=request) from exc
    except (httpcore.NetworkError, OSError) as exc:
        raise httpx.ReadError(str(exc), request=request) from exc
    except http.client.HTTPException as exc:
        raise httpx.RemoteProtocolError(f"malformed chunked body: {exc!r}", request=request) from exc


def _body(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive, decompressed: below h11 when :func:`_raw_body` allows,
    else ``aiter_bytes()``."""
    raw = _raw_body(response)
    if raw is None:
        return response.aiter_bytes()
    return _raw_chunks(response, *raw)


def _clamp(seconds: float | None) -> float | None:
    return None if seconds is None else min(seconds, MAX_DELAY)


def _timeout(timeout: Timeout) -> httpx.Timeout:
    """httpx's timeout for ``timeout``, every number clamped to :data:`MAX_DELAY`; a (connect, read)
    pair applies its connect timeout to writes and to waiting for a pooled connection too."""
    if isinstance(timeout, httpx.Timeout):
        return httpx.Timeout(connect=_clamp(timeout.connect), read=_clamp(timeout.read),
                             write=_clamp(timeout.write), pool=_clamp(timeout.pool))
    if isinstance(timeout, tuple):
        connect, read = timeout
        return httpx.Timeout(_clamp(connect), read=_clamp(read))
    return httpx.Timeout(_clamp(timeout))


def _body_arguments(
    *, json: Any = None, data: Body = None, content: bytes | str | None = None
) -> dict[str, Any]:
    """httpx's keyword arguments for a body that can be sent again on every attempt: form fields
    as ``data`` (pairs become a mapping of lists), bytes and text as ``content``."""
    kind, value = check_body(json=json, data=data, content=content)
    if kind == "data":
        if isinstance(value, str):
            return {"content": value.encode()}
        if isinstance(value, bytes):
            return {"content": value}
        if not isinstance(value, Mapping):
            fields: dict[str, list[Any]] = {}
            for name, field in value:
                fields.setdefault(name, []).append(field)
            value = fields
    return {} if kind is None else {kind: value}


def _tls_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (an httpx error) was caused by a TLS failure: not retried, as requests' SSLError."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@functools.cache
def _default_headers() -> httpx.Headers:
    """The headers httpx sends with every request (Accept, Accept-Encoding, Connection, User-Agent)."""
    return httpx.AsyncClient(transport=httpx.AsyncBaseTransport(), trust_env=False).headers


@functools.lru_cache(maxsize=4)
def _ssl_context(*environment: str | None) -> ssl.SSLContext:
    """httpx's default TLS context, made once per process and shared by the clients the sources
    make (loading the CA bundle takes some 20 ms: a one-request stream would pay it every
    time); the environment variables it reads are the cache key."""
    return httpx.create_ssl_context()


def _new_client() -> httpx.AsyncClient:
    """The client a source makes when given none: httpx's defaults, the TLS context shared."""
    env = os.environ
    context = _ssl_context(env.get("SSL_CERT_FILE"), env.get("SSL_CERT_DIR"), env.get("SSLKEYLOGFILE"))
    return httpx.AsyncClient(verify=context)


def _raw_socket(response: httpx.Response) -> Any:
    """The socket under ``response`` (httpcore's ``network_stream`` extension; a trio or a
    standard socket), or None (HTTP/2, a transport of the caller's)."""
    stream = response.extensions.get("network_stream")
    get_extra_info = getattr(stream, "get_extra_info", None)
    sock = get_extra_info("socket") if get_extra_info is not None else None
    return sock if callable(getattr(sock, "shutdown", None)) else None


def _shutdown(sock: Any) -> None:
    """Shut ``sock`` down both ways: a read blocked on it sees the end at once, and the server sees
    the connection end at once, even when no task is reading (as the requests client does)."""
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


async def _call(hook: Callable[[Any], object], value: Any) -> None:
    """Call a hook; await what it returns if it is awaitable (an ``async def`` hook)."""
    result = hook(value)
    if inspect.isawaitable(result):
        await result


class AsyncEventSource:
    """A server-sent event stream on httpx, reconnecting like a browser's ``EventSource``.

    ``async with AsyncEventSource(url) as source: async for event in source: ...``, on
    asyncio or trio. The arguments, rules and errors are :class:`~sseproto.client.EventSource`'s
    (one ``Policy`` drives both); here ``client`` is an ``httpx.AsyncClient`` to use (left
    open; by default the source makes and closes its own), ``auth`` is httpx's, ``timeout``
    an ``httpx.Timeout``, a number or a (connect, read) pair, and ``headers``, ``on_open``
    and ``on_error`` may be ``async`` functions. Errors carry the httpx response; network
    errors are httpx's.

    :meth:`aclose` from any task of the loop ends a blocked read or a wait at once;
    cancelling the iterating task ends it at once too, closing the connection.
    :meth:`restart` drops the connection and reconnects at once with ``Last-Event-ID``.
    Redirects are followed hop by hop, every reconnection starting at ``url``; the headers
    you give (``headers``, the client's own, those ``auth`` sets) go only to the origin of
    ``url`` unless ``forward_headers=True``.
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
        client: httpx.AsyncClient | None = None,
        headers: AsyncHeaders = None,
        auth: Auth = None,
        last_event_id: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        reconnect: bool | None = None,
        reconnect_delay: float = 3.0,
        max_backoff: float = 30.0,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        on_open: Callable[[httpx.Response], object] | None = None,
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
        self._body = _body_arguments(json=json, data=data, content=content)
        self.url = url
        self._client = client  # made on the first attempt when not given
        self._own_client = client is None
        self._headers = headers
        self._auth = auth
        self._timeout = _timeout(timeout)
        self._forward_headers = forward_headers
        self._on_open = on_open
        self._on_error = on_error
        self._decoder = self._policy.decoder
        self._last_event_id = self._decoder.last_event_id
        self._delivering: Event | None = None
        self._ready_state = CONNECTING
        self._closing = False
        self._response: httpx.Response | None = None
        self._socket: Any = None  # the response's socket, when the transport has one
        self._drop = False  # restart() asked to drop the current response
        self._scope: anyio.CancelScope | None = None  # the await in progress: cancelled to cut it
        self._phase: Phase | None = None
        self._iterating = False  # a task is inside __anext__ (the generator runs, or awaits)
        # The generator hands over the events of each piece of the body at once; __anext__
        # takes them one by one from here, with no step into the generator per event.
        self._batch: list[Event] = []
        self._next = 0
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

    def __aiter__(self) -> AsyncEventSource:
        return self

    async def __anext__(self) -> Event:
        # Once closing, the generator is left alone: another task may be finalizing it.
        if self._closing:
            raise StopAsyncIteration
        batch, i = self._batch, self._next
        if i < len(batch):
            self._next = i + 1
        else:
            self._iterating = True
            try:
                batch = await self._events.__anext__()  # never empty
            finally:
                self._iterating = False
            self._batch, self._next, i = batch, 1, 0
        event = self._delivering = batch[i]
        return event

    async def __aenter__(self) -> AsyncEventSource:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop for good, from any task: a blocked read, connection attempt or wait ends at once, the
        connection is closed and iteration ends quietly."""
        self._closing = True
        scope = self._scope
        if scope is not None:
            scope.cancel()  # the iterating task is in an await: it wakes up, closes and ends
        _shutdown(self._socket)  # the server sees the end at once, even if no task is reading
        if not self._iterating:
            # Not started, or suspended after an event: end the generator here (its finally
            # closes the response and our client). A running one ends itself.
            self._iterating = True  # a second aclose() meanwhile only asks
            try:
                with anyio.CancelScope(shield=True):
                    await self._events.aclose()
            finally:
                self._iterating = False
            self._ready_state = CLOSED

    def restart(self) -> None:
        """From any task of the loop: drop the current connection now and reconnect at once, with
        ``Last-Event-ID`` (also a request that would not be sent again by itself)."""
        if self._closing:
            return
        self._policy.restart()
        if self._response is not None:
            self._drop = True
            _shutdown(self._socket)
        if self._phase in ("read", "wait") and self._scope is not None:
            self._scope.cancel()

    def _cut_scope(self, phase: Phase) -> anyio.CancelScope:
        """A cancel scope for the next await, which aclose() (and restart(), but for a connection
        attempt) cancels."""
        scope = anyio.CancelScope()
        self._scope, self._phase = scope, phase
        return scope

    async def _request_headers(self) -> httpx.Headers:
        """The headers of the next attempt: the protocol's, with the user's between them."""
        user = self._headers() if callable(self._headers) else self._headers
        if inspect.isawaitable(user):
            user = await user
        return self._protocol_headers(user)

    def _protocol_headers(self, user: Mapping[str, str] | None = None) -> httpx.Headers:
        headers = httpx.Headers()
        for name, value in self._policy.request_headers(user).items():
            # Last-Event-ID comes as UTF-8 bytes; httpx.Headers encodes what it is set to as UTF-8.
            headers[name] = value.decode("utf-8") if isinstance(value, bytes) else value
        return headers

    async def _connect(self) -> httpx.Response | None:
        """One attempt: the response, or None after a network failure (counted for backoff) or aclose()."""
        client = self._client
        if client is None:
            client = self._client = _new_client()
        request = client.build_request(
            self._policy.method, self.url, headers=await self._request_headers(), timeout=self._timeout,
            **self._body,
        )
        if self._closing:
            return None
        response: httpx.Response | None = None
        failure: Exception | None = None
        with self._cut_scope("connect") as scope:
            try:
                response = await self._send(client, request)
            except _NETWORK_ERRORS as exc:
                if _tls_failure(exc):
                    raise
                failure = exc
        self._scope = self._phase = None
        if scope.cancelled_caught or self._closing:
            if response is not None:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
            return None
        if response is None:
            assert failure is not None
            self._policy.failed()
            log.info("cannot connect to %s: %s", self.url, failure)
            await self._failed(failure)
            return None
        self._response = response
        self._drop = False
        self._socket = _raw_socket(response)
        return response

    async def _send(self, client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response | None:
        """Send ``request`` and follow its redirects, one hop at a time: httpx builds each next
        request by its rules (method, body, cookies, Authorization); headers stay with their origin here."""
        auth: Any = self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT
        response = await client.send(request, auth=auth, stream=True, follow_redirects=False)
        try:
            start = origin(str(response.request.url))
            history: list[httpx.Response] = []
            while (hop := response.next_request) is not None:
                await response.aclose()
                history.append(response)
                if len(history) > client.max_redirects:
                    raise httpx.TooManyRedirects("Exceeded maximum allowed redirects.", request=hop)
                if self._closing:
                    return None
                if not self._forward_headers and origin(str(hop.url)) != start:
                    self._leave_headers_behind(hop)
                # Auth was applied to the first request; what it set travels as headers do.
                response = await client.send(hop, auth=None, stream=True, follow_redirects=False)
            if history:
                response.history = history
            return response
        except BaseException:
            with anyio.CancelScope(shield=True):
                await response.aclose()
            raise

    def _leave_headers_behind(self, request: httpx.Request) -> None:
        """Strip a request redirected to another origin of every header the user gave."""
        log.info("redirected to another origin, %s: not sending your headers there", request.url)
        headers = httpx.Headers()
        kept = request.headers
        for name in _KEPT_ACROSS_ORIGINS:
            if name in kept:
                headers[name] = kept[name]
        headers.update(_default_headers())
        headers.update(self._protocol_headers())
        if "Content-Length" in kept or "Transfer-Encoding" in kept:  # the body goes along (307, 308)
            for name in _BODY_HEADERS:
                if name in kept:
                    headers[name] = kept[name]
        request.headers = headers

    async def _failed(self, exc: Exception) -> None:
        """A failed attempt, drop or timeout: tell ``on_error``; a one-shot stream raises it."""
        if self._on_error is not None:
            await _call(self._on_error, exc)
        if not self._policy.may_resend:
            raise exc

    async def _next_chunk(self, chunks: AsyncIterator[bytes]) -> bytes | None:
        """The next piece of the body as it arrives; None at its end or once cut (aclose, restart).

        Reads are cut by shutting the socket down (no cost per read), or, on a transport
        without one (HTTP/2, a transport of the caller's), by a cancel scope around each read.
        """
        if self._closing or self._drop:
            return None
        if self._socket is not None:
            return await anext(chunks, None)
        with self._cut_scope("read") as scope:
            chunk = await anext(chunks, None)
        self._scope = self._phase = None
        return None if scope.cancelled_caught else chunk

    async def _read(self, response: httpx.Response) -> AsyncGenerator[list[Event], None]:
        """The events of one response, until it ends, drops or times out, or the source closes:
        those of each piece of the body together, or one by one with ``on_comment`` (comments
        in stream order). ``__anext__`` hands them over, ``_delivering`` the one it handed last
        (the decoder has run ahead to the end of the piece: last_event_id reports its id)."""
        policy = self._policy
        decoder = self._decoder
        in_order = policy.on_comment is not None
        chunks = _body(response)
        dropped: Exception | None = None
        try:
            while (chunk := await self._next_chunk(chunks)) is not None:
                if in_order:
                    for event in policy.feed(chunk):
                        if self._closing:
                            return
                        yield [event]
                elif events := policy.events(chunk):
                    if self._closing:
                        return
                    yield events
                self._delivering = None
                self._last_event_id = decoder.last_event_id
        except _NETWORK_ERRORS as exc:
            if self._closing:
                return
            log.info("stream from %s dropped: %s", self.url, exc)
            dropped = exc
        finally:
            self._last_event_id = self.last_event_id  # as delivered: also when closed at an event
            self._delivering = None
            with anyio.CancelScope(shield=True):
                await chunks.aclose()  # type: ignore[attr-defined]
        if self._closing:
            return
        # The unfinished event of an ended or dropped response is never delivered.
        policy.ended(dropped=dropped is not None)
        self._last_event_id = decoder.last_event_id
        if dropped is not None and not policy.restarting:
            await self._failed(dropped)

    async def _run(self) -> AsyncGenerator[list[Event], None]:
        if self._closing:
            self._ready_state = CLOSED
            return
        policy = self._policy
        try:
            while not self._closing:
                self._ready_state = CONNECTING
                policy.connecting()
                response = await self._connect()
                if response is not None:
                    try:
                        verdict = policy.response(response.status_code, response.headers)
                        if verdict == "retry":
                            log.info("%s answered %s: reconnecting", self.url, response.status_code)
                            if self._on_error is not None:
                                await _call(self._on_error, HTTPStatusError(
                                    f"{response.status_code} {response.reason_phrase} from {response.url}",
                                    response=response))
                        elif verdict != "open":
                            if not await check_response(response):
                                log.info("%s answered 204 No Content: not reconnecting", self.url)
                                return
                        else:
                            self._ready_state = OPEN
                            if self._on_open is not None:
                                await _call(self._on_open, response)
                            reader = self._read(response)
                            try:
                                async for events in reader:
                                    yield events
                            finally:
                                with anyio.CancelScope(shield=True):
                                    await reader.aclose()
                    finally:
                        self._response = self._socket = None
                        with anyio.CancelScope(shield=True):
                            await response.aclose()
                if self._closing:
                    return
                delay = policy.delay()
                if delay is None:
                    log.info("%s: the stream ended and is not sent again (%s)", self.url, policy.method)
                    return
                log.info("reconnecting to %s in %.3f s", self.url, delay)
                self._ready_state = CONNECTING
                with self._cut_scope("wait"):
                    await anyio.sleep(delay)
                self._scope = self._phase = None
        finally:
            # Ended for good (closed, 204, an error, cancelled): the source cannot be iterated again.
            self._closing = True
            self._ready_state = CLOSED
            self._scope = self._phase = None
            if self._own_client and self._client is not None:
                with anyio.CancelScope(shield=True):
                    await self._client.aclose()
