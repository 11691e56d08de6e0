"""The connection policy of both clients, sans-IO: what to send, what a response means,
when (and whether) to come back.

:class:`Policy` takes what happened — a response's status and headers, the bytes of its
body, its end or its drop, the clock — and answers what to do; it does no I/O. The
``requests`` client and the ``httpx`` client are thin loops around it, so their rules
are the same by construction:

- Every attempt sends ``Accept: text/event-stream``, ``Cache-Control: no-cache`` and,
  once the stream had an id, ``Last-Event-ID`` (trimmed of spaces and tabs, UTF-8).
- 200 with ``text/event-stream`` opens the stream; 204 ends it quietly; a status of
  ``retry_statuses`` is a failed attempt (wait at least its ``Retry-After``); anything
  else ends it with an error.
- After a stream ends or drops, the client comes back after the stream's ``retry``
  (else ``reconnect_delay``); after failed attempts (no connection, a retry status, a
  drop before the response, a stream that ended without an event before ``max_backoff``
  seconds) it waits a random time between that (at least ``min_failure_delay``) and an
  exponentially growing bound capped at ``max_backoff``. Every wait is clamped to
  :data:`MAX_DELAY`.
- A GET (and any idempotent method) comes back as browsers do. A request that is not
  idempotent (POST, PATCH) is sent again, with the same body, only once its stream
  carried an id (then with ``Last-Event-ID``: the server can resume it), after a status
  of ``retry_statuses`` (the server did nothing) or when ``reconnect=True``; otherwise
  the stream is one-shot: it ends with its response, and a drop is an error (what was
  cut is not silently lost). ``reconnect=False`` makes any
  stream one-shot.
- :meth:`Policy.restart` asks for a reconnection at once (with ``Last-Event-ID``),
  whatever the method.
- Redirects are followed hop by hop and every reconnection starts at the URL given; the
  headers a caller gives go only to that URL's :func:`origin` (``forward_headers=True``
  sends them along).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from .._decoder import DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_LINE_SIZE, Decoder
from .._errors import LimitExceeded
from .._event import Event

#: ``ready_state`` values, as the browser's ``EventSource.readyState``.
CONNECTING, OPEN, CLOSED = 0, 1, 2
#: Default floor (seconds) of the wait after a failed attempt, even after ``retry: 0``.
MIN_FAILURE_DELAY = 0.1
#: The longest wait (seconds) the platform can sleep: every reconnection delay and timeout is
#: clamped to it, since ``retry:`` may ask for up to 2**64-1 ms (OverflowError unclamped).
MAX_DELAY = threading.TIMEOUT_MAX
#: Methods a client may send again without asking (RFC 9110 section 9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

#: A request body: form fields (a mapping or pairs), or bytes or text sent as they are.
Body = Mapping[str, Any] | Sequence[tuple[str, Any]] | bytes | str | None
#: Request headers, or a function called for every attempt (fresh credentials).
Headers = Mapping[str, str] | Callable[[], Mapping[str, str]] | None

#: What a response means: open the stream, stop quietly (204), a failed attempt to retry,
#: or an error (``"status"``: not 200; ``"content-type"``: not an event stream).
Verdict = Literal["open", "stop", "retry", "status", "content-type"]


class Policy:
    """The rules of one event source's connections, fed what happened, answering what to do.

    Holds the decoder (so ``last_event_id`` and ``retry`` live here), the count of failed
    attempts in a row, and the reconnection decision. Not thread-safe: one transport
    loop drives it; :meth:`restart` may be called from elsewhere (it only sets a flag).
    """

    def __init__(
        self,
        *,
        method: str = "GET",
        last_event_id: str | None = None,
        reconnect: bool | None = None,
        reconnect_delay: float = 3.0,
        max_backoff: float = 30.0,
        min_failure_delay: float = MIN_FAILURE_DELAY,
        retry_statuses: Collection[int] = (),
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        on_comment: Callable[[str], object] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # min_failure_delay must be > 0: zero would let failed attempts come back to back.
        delays = (("reconnect_delay", reconnect_delay, False), ("max_backoff", max_backoff, False),
                  ("min_failure_delay", min_failure_delay, True))
        for name, value, positive in delays:
            if not (isinstance(value, (int, float)) and math.isfinite(value)
                    and (value > 0 if positive else value >= 0)):
                raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0 seconds, "
                                 f"got {value!r}")
        if any(type(status) is not int or not 300 <= status <= 599 for status in retry_statuses):
            raise ValueError(f"retry_statuses must be HTTP error statuses (300-599), got {retry_statuses!r}")
        if not isinstance(method, str) or not method.isalpha():
            raise ValueError(f"method must be an HTTP method name, got {method!r}")
        if reconnect not in (None, True, False):
            raise ValueError(f"reconnect must be None (by the method), True or False, got {reconnect!r}")
        self.method = method.upper()
        self.reconnect = reconnect
        self.reconnect_delay = reconnect_delay
        self.max_backoff = max_backoff
        self.min_failure_delay = min_failure_delay
        self.retry_statuses = frozenset(retry_statuses)
        self.on_comment = on_comment
        self.decoder = Decoder(
            last_event_id=last_event_id or "",
            max_event_size=max_event_size,
            max_line_size=max_line_size,
            on_comment=on_comment,
        )
        self.failures = 0  # failed attempts in a row
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._opened_at = 0.0
        self._delivered = False
        self._restart = False
        self._retry_after = 0.0
        self._refused = False  # the last answer was a retry status: nothing was done, send again

    # -- what to send ----------------------------------------------------------------------

    def request_headers(self, user: Mapping[str, str] | None = None) -> dict[str, str | bytes]:
        """The headers of the next attempt: the protocol's, with ``user``'s between them."""
        headers: dict[str, str | bytes] = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if user:
            headers.update(user)
        # As Chromium: spaces and tabs around the id are trimmed (a header value cannot
        # carry them), and nothing is sent when nothing is left. UTF-8, as browsers send it.
        last_id = self.decoder.last_event_id.strip(" \t")
        if last_id:
            headers["Last-Event-ID"] = last_id.encode("utf-8")
        return headers

    # -- what came back --------------------------------------------------------------------

    def response(self, status: int, headers: Mapping[str, str]) -> Verdict:
        """What a response with ``status`` and ``headers`` (a case-insensitive mapping) means."""
        if status in self.retry_statuses:
            self.failures += 1
            self._retry_after = retry_after(headers.get("Retry-After", ""))
            self._refused = True
            return "retry"
        verdict = classify(status, headers.get("Content-Type", ""))
        if verdict != "open":
            return verdict
        self._opened_at = self._clock()
        self._delivered = False
        # A restart asked for while this attempt was under way: the connection just opened
        # is the fresh one (sending the request again would repeat it, a POST's answer too).
        self._restart = False
        return "open"

    def feed(self, chunk: bytes) -> Iterator[Event]:
        """The events of ``chunk``, as they complete. With ``on_comment``, comments are
        called in stream order with the events (hand each event over before the next one)."""
        decoder = self.decoder
        try:
            for piece in comment_pieces(chunk) if self.on_comment is not None else (chunk,):
                events = decoder.feed(piece)
                if events:
                    self._delivered = True
                    yield from events
        except LimitExceeded as exc:
            raise limit_error(exc) from None

    def events(self, chunk: bytes) -> list[Event]:
        """The events of ``chunk``, all at once (no ``on_comment``: nothing to keep in order)."""
        try:
            events = self.decoder.feed(chunk)
        except LimitExceeded as exc:
            raise limit_error(exc) from None
        if events:
            self._delivered = True
        return events

    def ended(self, *, dropped: bool = False) -> None:
        """The open stream ended (``dropped``: by a network error). An unfinished event is
        never delivered; a stream without an event that lasted less than ``max_backoff`` is
        a failed attempt (a server answering ``retry: 0`` and closing at once meets the
        backoff; a quiet channel ended after a while does not)."""
        try:
            self.decoder.end()
        except LimitExceeded as exc:
            raise limit_error(exc) from None
        healthy = self._delivered or self._clock() - self._opened_at >= self.max_backoff
        if not self._restart:  # a restart asked for is no failure of the server's
            self.failures = 0 if healthy else self.failures + 1

    def failed(self) -> None:
        """An attempt failed before a response (refused, timed out, dropped)."""
        self.failures += 1

    def connecting(self) -> None:
        """An attempt starts: a restart asked for before it (during the wait) is done, and
        does not also end the stream it opens with a reconnection at once."""
        self._restart = False

    def restart(self) -> None:
        """Reconnect at once after the current connection (which the transport drops)."""
        self._restart = True

    @property
    def restarting(self) -> bool:
        """Whether a restart was asked for and has not happened yet (a drop now is no error)."""
        return self._restart

    # -- when to come back -----------------------------------------------------------------

    @property
    def may_resend(self) -> bool:
        """Whether the request may be sent again by itself (see the module's rules)."""
        if self._restart or (self._refused and self.reconnect is not False):
            return True
        if self.reconnect is not None:
            return self.reconnect
        # An id means the server can resume the stream: sending it again repeats nothing.
        return self.method in IDEMPOTENT or bool(self.decoder.last_event_id)

    def delay(self) -> float | None:
        """Seconds to wait before the next attempt, or None: do not come back (one-shot)."""
        retry_after = self._retry_after
        self._retry_after = 0.0
        resend = self.may_resend
        self._refused = False
        if self._restart:
            self._restart = False
            return 0.0
        if not resend:
            return None
        return min(max(self.next_delay(self.failures), retry_after), MAX_DELAY)

    @property
    def reconnection_time(self) -> float:
        """Seconds to wait before reconnecting after a stream ends: the stream's ``retry`` or the default."""
        retry = self.decoder.retry
        return self.reconnect_delay if retry is None else retry / 1000

    def next_delay(self, failures: int) -> float:
        """The wait, in seconds, before a reconnection that follows ``failures`` failed attempts in a row
        (clamped to :data:`MAX_DELAY`)."""
        base = min(self.reconnection_time, MAX_DELAY)
        if failures <= 0:
            return base
        low = max(base, self.min_failure_delay)
        high = max(low, min(self.max_backoff, low * 2.0 ** min(failures, 64), MAX_DELAY))
        return self._rng.uniform(low, high)


def classify(status: int, content_type: str) -> Literal["open", "stop", "status", "content-type"]:
    """What a response is to an event-stream client, as a browser's EventSource judges it:
    200 with ``text/event-stream`` opens the stream, 204 stops it quietly, any other status
    or content type is an error."""
    if status == 204:
        return "stop"
    if status != 200:
        return "status"
    if content_type.split(";", 1)[0].strip().lower() != "text/event-stream":
        return "content-type"
    return "open"


def check_body(
    *, json: Any = None, data: Body = None, content: bytes | str | None = None
) -> tuple[Literal["json", "data", "content"] | None, Any]:
    """The one body given, as (kind, value): bytes for ``content``; TypeError for a body
    that could not be sent again on the next attempt (an iterator, a file)."""
    bodies = (("json", json), ("data", data), ("content", content))
    given = [name for name, value in bodies if value is not None]
    if len(given) > 1:
        raise TypeError(f"give one body, not {' and '.join(given)}")
    if content is not None:
        if not isinstance(content, (bytes, str)):
            raise TypeError("content must be bytes or str: a body is sent again on every attempt")
        return "content", content.encode() if isinstance(content, str) else content
    if data is not None:
        if not isinstance(data, (Mapping, list, tuple, bytes, str)):
            raise TypeError("data must be a mapping, pairs, bytes or str: it is sent again on every attempt")
        return "data", data
    if json is not None:
        return "json", json
    return None, None


def user_headers(headers: Headers) -> Mapping[str, str] | None:
    """The user's headers for one attempt (a function is called for each)."""
    return headers() if callable(headers) else headers


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``, the port filled in for http and https: the headers
    a caller gives go only to the origin of the URL given (unless ``forward_headers``)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, parts.hostname or "", port if port is not None else _DEFAULT_PORTS.get(scheme)


def retry_after(value: str) -> float:
    """A ``Retry-After`` value in seconds (0 when absent, a date, or unreasonable)."""
    value = value.strip()
    return float(value) if value.isdigit() and int(value) <= 3600 else 0.0


def limit_error(exc: LimitExceeded) -> LimitExceeded:
    """The decoder's error worded for the client, whose own arguments set the limits."""
    found = str(exc).split(";", 1)[0]  # "a line of at least N bytes exceeds max_line_size=M"
    kind = "lines" if exc.limit == "max_line_size" else "events"
    advice = f"pass a larger EventSource({exc.limit}=...) if such {kind} are expected"
    return LimitExceeded(exc.limit, exc.value, f"{found}; {advice}")


# The pairs of bytes that hold a blank line (CRLF, LF and CR breaks: LF LF, CR CR, LF CR;
# CRLF CRLF holds LF CR), where an event may end.
_BLANK_LINES = (b"\n\n", b"\r\r", b"\n\r")


def comment_pieces(chunk: bytes) -> Sequence[bytes]:
    """``chunk`` cut before each comment line that follows an event's end inside it.

    The decoder calls ``on_comment`` while it parses a chunk and returns the chunk's
    events afterwards: fed these pieces one by one, with each piece's events handed over
    before the next piece is fed, comments and events reach the caller in stream order.
    Without an interior comment (the usual chunk) this is one scan and no copy.
    """
    colons = []  # where a line starting with ":" starts, after a line break in the chunk
    for needle in (b"\n:", b"\r:") if 13 in chunk else (b"\n:",):
        at = chunk.find(needle)
        while at >= 0:
            colons.append(at + 1)
            at = chunk.find(needle, at + 2)
    if not colons:
        return (chunk,)
    colons.sort()
    blanks = _BLANK_LINES if 13 in chunk else _BLANK_LINES[:1]
    pieces = []
    start = previous = 0
    for colon in colons:
        # Cut only when an event may end between the previous comment (or the chunk's
        # start, where a leading break may end a blank line begun in the last chunk) and
        # this one; a run of heartbeats stays one piece.
        if (previous == 0 and chunk[0] in b"\r\n") or any(
            chunk.find(blank, previous, colon) >= 0 for blank in blanks
        ):
            pieces.append(chunk[start:colon])
            start = colon
        previous = colon
    pieces.append(chunk[start:])
    return pieces
