"""GRIP: let Pushpin (or another GRIP proxy) hold the stream connections instead of Python.

A stream request that the proxy signed (``Grip-Sig``: a JWT, HS256 with the shared key,
``iss`` "pushpin" when present, ``exp`` not passed) is answered at once with a hold
instruction and the replay; the proxy keeps the connection, sends the heartbeats, and
the worker is free. :meth:`Grip.publish` stores an event in the broker as usual (ids,
replay, gap) and posts it to the proxy's publish endpoint with ``id`` and ``prev-id``
(the id of the event published on that channel just before, retained or not; the
reserved ``sseproto.nothing-yet`` before the first), so the proxy notices a missed
message and recovers it through the app (``Grip-Link``
``rel=next``; the recovery request names where each channel stands in ``Grip-Last``).
Requests without a valid signature get the normal stream, so the endpoint also works
without the proxy.

Standard library only: the pieces of GRIP used here are a few headers, one JWT check
and one JSON POST.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import random
import re
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from ._event import Event
from .brokers import Broker, BrokerUnavailable, Subscription

if TYPE_CHECKING:
    from .wsgi import EventStreamApp, Reply, WSGIEnvironment

__all__ = ["Grip", "parse_grip_last", "verify_grip_sig"]

log = logging.getLogger("sseproto.grip")

# An id no broker has stored: subscribing after it is a gap, whose replay (capped at one
# event) is the newest event retained on the channel (for brokers without ``last_id``).
_PROBE = "sseproto.grip.newest"
# The prev-id of a channel nothing was published on yet, in holds and in its first publish:
# a hold without a prev-id has Pushpin check nothing on that stream (a message it missed
# there is never recovered) and ask for the hold's link without Grip-Last. Reserved.
_NOTHING_YET = "sseproto.nothing-yet"
# Ids that can stand unquoted as a header parameter (prev-id=...).
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_grip_sig(token: str, key: bytes, *, iss: str | None = "pushpin", now: float | None = None) -> bool:
    """Whether ``token`` (a ``Grip-Sig`` value) is a JWT signed with ``key`` (HS256 only),
    not expired (``exp`` is required) and, when it names an issuer, issued by ``iss``."""
    try:
        header_b64, payload_b64, sig_b64 = token.split(".")
        header = json.loads(_b64decode(header_b64))
        expected = hmac.new(key, f"{header_b64}.{payload_b64}".encode("ascii"), hashlib.sha256).digest()
        if not isinstance(header, dict) or header.get("alg") != "HS256":
            return False
        if not hmac.compare_digest(expected, _b64decode(sig_b64)):
            return False
        claims = json.loads(_b64decode(payload_b64))
    except (ValueError, UnicodeError):  # json.JSONDecodeError and binascii.Error are ValueErrors
        return False
    if not isinstance(claims, dict):
        return False
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return False
    if exp <= (time.time() if now is None else now):
        return False
    return iss is None or claims.get("iss", iss) == iss


def parse_grip_last(value: str) -> dict[str, str]:
    """``Grip-Last: a; last-id=1, b; last-id=2`` as ``{"a": "1", "b": "2"}`` (channel names
    and ids hold no commas or semicolons: Pushpin has them from our own headers)."""
    out: dict[str, str] = {}
    for item in value.split(","):
        channel, *params = (part.strip() for part in item.split(";"))
        for param in params:
            name, _, param_value = param.partition("=")
            if name.strip() == "last-id" and channel:
                out[channel] = param_value.strip().strip('"')
    return out


class Grip:
    """The GRIP settings of one endpoint: the proxy's publish URL and the shared key.

    ``key`` is the proxy's ``sig_key``: text (``base64:...`` is decoded, as Pushpin does)
    or bytes. ``timeout`` bounds each publish request, in seconds.
    """

    def __init__(self, url: str, key: str | bytes, *, timeout: float = 5.0) -> None:
        if not url or not key:
            raise ValueError("GRIP needs the proxy's publish URL and its signing key")
        self.publish_url = url.rstrip("/") + "/publish/"
        if isinstance(key, str):
            key = base64.b64decode(key[7:]) if key.startswith("base64:") else key.encode("utf-8")
        self._key = key
        self.timeout = timeout
        # Publishing and the snapshot of a hold reply exclude each other (in this process), so
        # the prev-id a hold names is exactly the newest event its body covers.
        self._lock = threading.Lock()

    def signed(self, environ: WSGIEnvironment) -> bool:
        """Whether the request came through the proxy: a valid ``Grip-Sig``."""
        token = environ.get("HTTP_GRIP_SIG")
        return isinstance(token, str) and verify_grip_sig(token, self._key)

    def publish(self, broker: Broker, channel: str, event: Event) -> Event:
        """Store ``event`` in ``broker``, then send it to the proxy with its id and, as
        ``prev-id``, the id of the event published on the channel just before it (retained
        or not; ``sseproto.nothing-yet`` for a channel's first event, an id reserved for that).
        A proxy that cannot be reached is logged, not raised: the event is stored, and
        streams recover it at the next publish (prev-id)."""
        if event.id == _NOTHING_YET:
            raise ValueError(f"the id {_NOTHING_YET!r} is reserved: it stands for no event in GRIP's prev-id")
        with self._lock:
            stored, prev_id = _publish(broker, channel, event)
            item: dict[str, Any] = {"channel": channel,
                                    "formats": {"http-stream": {"content": stored.encode().decode("utf-8")}}}
            if stored.id is not None:
                item["id"] = stored.id
                item["prev-id"] = _NOTHING_YET if prev_id is None else prev_id
            try:
                self._post({"items": [item]})
            except OSError as exc:
                log.warning("GRIP publish to %s failed: %s", self.publish_url, exc)
        return stored

    def _post(self, body: Mapping[str, object]) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        request = urllib.request.Request(self.publish_url, data, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            response.read()

    def hold_reply(
        self, endpoint: EventStreamApp, channels: Sequence[str], last_event_id: str | None,
        environ: WSGIEnvironment,
    ) -> Reply:
        """The answer to a signed stream request: hold instructions, the opening ``retry:``
        and what the client missed (after the gap event, if any), all at once.

        Each channel's ``prev-id`` is its :meth:`~sseproto.brokers.MemoryBroker.last_id`,
        read before the replay: the id the next :meth:`publish` names as ``prev-id``.
        """
        from .wsgi import Reply, replay_prelude, stream_headers

        options = endpoint.options
        grip_last = environ.get("HTTP_GRIP_LAST")
        recovering = isinstance(grip_last, str) and bool(grip_last)
        retry = None if options.retry is None else (
            options.retry + (random.randint(0, options.retry_jitter) if options.retry_jitter else 0))
        with self._lock:
            try:
                newest = {channel: _last_id(endpoint.broker, channel) for channel in channels}
            except BrokerUnavailable:
                # No position to hold at: the client comes back with its Last-Event-ID later.
                return endpoint._come_back(environ, "unavailable", 3000 if retry is None else retry)
            if recovering:
                # Pushpin's recovery: each channel resumes from its own last id.
                last = parse_grip_last(str(grip_last))
                parts = [_recovered(endpoint, channel, last.get(channel, last_event_id), newest[channel])
                         for channel in channels]
            else:
                parts = [_missed(endpoint, channels, last_event_id)]
        body: list[bytes] = []
        if not recovering and retry is not None:
            body.append(b"retry: %d\n\n" % retry)
        for subscription_last_id, subscription in parts:
            try:
                for item in replay_prelude(subscription, subscription_last_id):
                    body.append(item if isinstance(item, bytes) else item.encode())
            finally:
                subscription.close()
        keep_alive = max(1, math.ceil(options.heartbeat))
        headers = [*stream_headers(), ("Grip-Hold", "stream"),
                   ("Grip-Channel", ", ".join(_channel_param(c, newest[c]) for c in channels)),
                   ("Grip-Keep-Alive", f":\\n; format=cstring; timeout={keep_alive}"),
                   ("Grip-Link", f"<{_next_link(environ)}>; rel=next")]
        return Reply("200 OK", headers + endpoint._cors(environ), body)


def _missed(
    endpoint: EventStreamApp, channels: Sequence[str], last_event_id: str | None
) -> tuple[str | None, Subscription]:
    subscription = endpoint.broker.subscribe(channels, last_event_id, max_replay=endpoint.options.max_replay)
    return last_event_id, subscription


def _publish(broker: Broker, channel: str, event: Event) -> tuple[Event, str | None]:
    """Publish ``event``; the stored event and the channel's last id before it (in one step
    with sseproto's brokers, so publishers in several processes get ids that chain)."""
    with_prev = getattr(broker, "_publish_with_prev", None)
    if callable(with_prev):
        return cast("tuple[Event, str | None]", with_prev(channel, event))
    prev_id = _last_id(broker, channel)
    return broker.publish(channel, event), prev_id


def _last_id(broker: Broker, channel: str) -> str | None:
    """The id of the newest event published on ``channel``: the broker's ``last_id`` if it
    has one, else the newest event it still retains (None: none)."""
    last_id = getattr(broker, "last_id", None)
    if callable(last_id):
        return cast("str | None", last_id(channel))
    return _newest(broker, channel)


def _recovered(
    endpoint: EventStreamApp, channel: str, last_id: str | None, newest: str | None
) -> tuple[str | None, Subscription]:
    """What a recovery misses on ``channel`` after ``last_id``. After "nothing yet": nothing
    while the channel is still empty, else all it retains, after the gap event (it cannot
    tell whether the channel lost any since)."""
    if last_id != _NOTHING_YET:
        return _missed(endpoint, [channel], last_id)
    if newest is None:
        return None, endpoint.broker.subscribe([channel], None, max_replay=endpoint.options.max_replay)
    return None, _missed(endpoint, [channel], _NOTHING_YET)[1]


def _newest(broker: Broker, channel: str) -> str | None:
    """The id of the newest event retained on ``channel`` (None: none)."""
    subscription = broker.subscribe([channel], _PROBE, max_replay=1)
    try:
        ids: Iterable[str | None] = [event.id for event in subscription.replay]
    finally:
        subscription.close()
    return next(iter(reversed(list(ids))), None)


def _channel_param(channel: str, prev_id: str | None) -> str:
    if prev_id is None:
        prev_id = _NOTHING_YET
    if not _TOKEN.fullmatch(prev_id):
        return channel  # no position to check against: delivery without recovery
    return f"{channel}; prev-id={prev_id}"


def _next_link(environ: WSGIEnvironment) -> str:
    """Where the proxy asks for missed events: this same request (its ``Grip-Last`` says where)."""
    path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    query = str(environ.get("QUERY_STRING", ""))
    return path + ("?" + query if query else "")
