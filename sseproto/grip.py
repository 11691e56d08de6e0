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

Pushpin's recovery requests carry none of the client's headers (no cookies, no
``Authorization``: only ``Grip-Sig``, ``Grip-Last`` and ``Grip-Feature``), so the hold's
link carries a grant the app signs itself: the channels were authorized when the hold
was made, and a signed recovery request whose grant covers exactly its channels skips
the ``authorize`` callback until the grant expires (:attr:`Grip.recovery_ttl`).

Standard library only: the pieces of GRIP used here are a few headers, one JWT check
and one JSON POST.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
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
from urllib.parse import parse_qsl, unquote_plus

from ._decoder import Decoder
from ._event import Event
from .brokers import Broker, BrokerUnavailable, Subscription, SubscriptionEnded

if TYPE_CHECKING:
    from .wsgi import EventStreamApp, Reply, WSGIEnvironment

__all__ = ["MAX_RECOVERY_TTL", "Grip", "parse_grip_last", "verify_grip_sig"]

log = logging.getLogger("sseproto.grip")

# An id no broker has stored: subscribing after it is a gap, whose replay (capped at one
# event) is the newest event retained on the channel (for brokers without ``last_id``).
_PROBE = "sseproto.grip.newest"
# The query parameter of a hold's Grip-Link that carries its grant: "<expiry>.<signature>".
_GRANT = "grip_grant"
_GRANT_VALUE = re.compile(r"([0-9]{1,12})\.([A-Za-z0-9_-]{43})")
# The prev-id of a channel nothing was published on yet, in holds and in its first publish:
# a hold without a prev-id has Pushpin check nothing on that stream (a message it missed
# there is never recovered) and ask for the hold's link without Grip-Last. Reserved.
_NOTHING_YET = "sseproto.nothing-yet"
# Ids that can stand unquoted as a header parameter (prev-id=...); others travel encoded.
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
# Pushpin sends Grip-Last's last-id back unquoted, and a hold without a prev-id leaves the
# channel unchecked: every id travels as a token ("~" + base64url for the rest).
_ENCODED = "~"
# The longest recovery_ttl: ten years (grants carry their expiry in at most 12 digits).
MAX_RECOVERY_TTL = 10 * 365 * 86400


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
    """``Grip-Last: a; last-id=1, b; last-id=2`` as ``{"a": "1", "b": "2"}``, each id decoded
    from the token form GRIP carries it in (Pushpin has the ids and the channel names, which
    hold no commas or semicolons, from our own headers)."""
    out: dict[str, str] = {}
    for item in value.split(","):
        channel, *params = (part.strip() for part in item.split(";"))
        for param in params:
            name, _, param_value = param.partition("=")
            if name.strip() == "last-id" and channel:
                out[channel] = _event_id(param_value.strip().strip('"'))
    return out


def _grip_id(event_id: str) -> str:
    """An event id as GRIP carries it (``id``, ``prev-id``, ``Grip-Last``): a header token
    as it is, anything else (or one that starts with ``~``) as ``~`` + base64url of it."""
    if _TOKEN.fullmatch(event_id) and not event_id.startswith(_ENCODED):
        return event_id
    return _ENCODED + base64.urlsafe_b64encode(event_id.encode("utf-8")).rstrip(b"=").decode("ascii")


def _event_id(grip_id: str) -> str:
    """The event id a :func:`_grip_id` stands for (an undecodable one as it came)."""
    if not grip_id.startswith(_ENCODED):
        return grip_id
    try:
        return _b64decode(grip_id[1:]).decode("utf-8")
    except (ValueError, UnicodeError):
        return grip_id


class Grip:
    """The GRIP settings of one endpoint: the proxy's publish URL and the shared key.

    ``key`` is the proxy's ``sig_key``: text (``base64:...`` is decoded, as Pushpin does)
    or bytes. ``timeout`` bounds each publish request, in seconds.

    ``recovery_ttl`` (seconds, default an hour) is how long after the ``authorize``
    callback last passed a hold its recovery requests skip it (see
    :meth:`recovery_granted`). After that, a recovery goes through ``authorize`` like any
    request; one that reads credentials refuses it (403, as Pushpin sends none), Pushpin
    retries five times within about three seconds and then ends the stream, and the
    client reconnects with its credentials and ``Last-Event-ID``: the stream is
    authorized again and replays what it missed (lost only if the broker no longer
    retains it).
    """

    def __init__(
        self, url: str, key: str | bytes, *, timeout: float = 5.0, recovery_ttl: float = 3600.0
    ) -> None:
        if not url or not key:
            raise ValueError("GRIP needs the proxy's publish URL and its signing key")
        if type(recovery_ttl) not in (int, float) or not 0 < recovery_ttl <= MAX_RECOVERY_TTL:
            raise ValueError(f"recovery_ttl must be a number of seconds > 0 and <= {MAX_RECOVERY_TTL} "
                             f"(MAX_RECOVERY_TTL, ten years), got {recovery_ttl!r}")
        self.publish_url = url.rstrip("/") + "/publish/"
        if isinstance(key, str):
            key = base64.b64decode(key[7:]) if key.startswith("base64:") else key.encode("utf-8")
        self._key = key
        self.timeout = timeout
        self.recovery_ttl = recovery_ttl
        # Publishing and the snapshot of a hold reply exclude each other (in this process), so
        # the prev-id a hold names is exactly the newest event its body covers.
        self._lock = threading.Lock()

    def signed(self, environ: WSGIEnvironment) -> bool:
        """Whether the request came through the proxy: a valid ``Grip-Sig``."""
        token = environ.get("HTTP_GRIP_SIG")
        return isinstance(token, str) and verify_grip_sig(token, self._key)

    def recovery_granted(self, environ: WSGIEnvironment, channels: Sequence[str]) -> bool:
        """Whether ``environ`` is the proxy's recovery request for a hold of exactly
        ``channels`` made less than :attr:`recovery_ttl` after they were authorized: a valid
        ``Grip-Sig``, a ``Grip-Last``, and the hold link's unexpired grant. Such a request
        may skip authorization (it carries no client credentials); the stream endpoint does."""
        grip_last = environ.get("HTTP_GRIP_LAST")
        if not isinstance(grip_last, str) or not grip_last or not self.signed(environ):
            return False
        return self._grant_expiry(environ, channels) is not None

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
                item["id"] = _grip_id(stored.id)
                item["prev-id"] = _grip_prev_id(prev_id)
            try:
                self._post({"items": [item]})
            except (OSError, http.client.HTTPException, ValueError) as exc:  # stored: never raised
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
        read before the replay: the id the next :meth:`publish` names as ``prev-id``; or,
        when the body replays that channel alone, the newest id in it if that is later (an
        event another process published in between is in the body, and Pushpin, which
        would deliver it again, then drops and recovers it instead). The
        ``Grip-Link`` carries a grant for these channels: the one the request came with
        while it is valid (its expiry stays), else a new one valid for :attr:`recovery_ttl`.
        """
        from .wsgi import Reply, replay_prelude, stream_headers

        options = endpoint.options
        grip_last = environ.get("HTTP_GRIP_LAST")
        recovering = isinstance(grip_last, str) and bool(grip_last)
        expiry = self._grant_expiry(environ, channels) if recovering else None
        if expiry is None:
            expiry = math.ceil(time.time() + self.recovery_ttl)
        retry = None if options.retry is None else (
            options.retry + (random.randint(0, options.retry_jitter) if options.retry_jitter else 0))
        come_back_retry = 3000 if retry is None else retry  # when no hold can be made
        with self._lock:
            try:
                newest = {channel: _last_id(endpoint.broker, channel) for channel in channels}
            except BrokerUnavailable:
                # No position to hold at: the client comes back with its Last-Event-ID later.
                return endpoint._come_back(environ, "unavailable", come_back_retry)
            if recovering:
                # Pushpin's recovery: each channel resumes from its own last id.
                last = parse_grip_last(str(grip_last))
                parts = [_recovered(endpoint, channel, last.get(channel, last_event_id), newest[channel])
                         for channel in channels]
            else:
                parts = [_missed(endpoint, channels, last_event_id)]
        # The channel each part replays (None: several, merged in publish order).
        part_channels = list(channels) if recovering else [channels[0] if len(channels) == 1 else None]
        body: list[bytes] = []
        if not recovering and retry is not None:
            body.append(b"retry: %d\n\n" % retry)
        ended: SubscriptionEnded | None = None
        for channel, (subscription_last_id, subscription) in zip(part_channels, parts, strict=True):
            start = len(body)
            try:
                if ended is None:
                    for item in replay_prelude(subscription, subscription_last_id):
                        body.append(item if isinstance(item, bytes) else item.encode())
                    subscription.get(0)  # raises when the broker could not give the replay exactly
            except SubscriptionEnded as exc:
                ended = exc
            finally:
                subscription.close()
            if ended is not None:
                continue
            if channel is not None and len(body) > start:
                # The newest event the body covers: an event another process published after
                # the ids were read is in the body, and Pushpin must not deliver it again.
                newest[channel] = _last_id_in(body[start:]) or newest[channel]
        if ended is not None:
            # No hold at a position the body does not reach (Pushpin would take the client as
            # up to date): the client comes back with its Last-Event-ID and gets the replay.
            return endpoint._come_back(environ, "unavailable", come_back_retry)
        keep_alive = max(1, math.ceil(options.heartbeat))
        headers = [*stream_headers(), ("Grip-Hold", "stream"),
                   ("Grip-Channel", ", ".join(_channel_param(c, newest[c]) for c in channels)),
                   ("Grip-Keep-Alive", f":\\n; format=cstring; timeout={keep_alive}"),
                   ("Grip-Link", f"<{_next_link(environ, self._grant(expiry, channels))}>; rel=next")]
        return Reply("200 OK", headers + endpoint._cors(environ), body)

    def _grant(self, expiry: int, channels: Sequence[str]) -> str:
        """The grant of a hold of ``channels`` until ``expiry`` (Unix seconds): HMAC-SHA256
        with the key over the expiry and the set of channels."""
        message = json.dumps(["sseproto.grip.grant", expiry, sorted(set(channels))], separators=(",", ":"))
        digest = hmac.new(self._key, message.encode("utf-8"), hashlib.sha256).digest()
        return f"{expiry}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode('ascii')}"

    def _grant_expiry(self, environ: WSGIEnvironment, channels: Sequence[str]) -> int | None:
        """The expiry of the request's grant when it is one of ours for exactly ``channels``
        and not expired; None otherwise (missing, repeated, tampered, expired)."""
        query = str(environ.get("QUERY_STRING", ""))
        if _GRANT not in query:
            return None
        values = [value for name, value in parse_qsl(query, keep_blank_values=True, max_num_fields=200)
                  if name == _GRANT]
        match = _GRANT_VALUE.fullmatch(values[0]) if len(values) == 1 else None
        if match is None:
            return None
        expiry = int(match[1])
        if expiry <= time.time() or not hmac.compare_digest(self._grant(expiry, channels), match[0]):
            return None
        return expiry


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


def _last_id_in(wire: Sequence[bytes]) -> str | None:
    """The last event id in encoded events (None: no id)."""
    decoder = Decoder()
    for chunk in wire:
        for _ in decoder.feed(chunk):
            pass
    return decoder.last_event_id or None


def _newest(broker: Broker, channel: str) -> str | None:
    """The id of the newest event retained on ``channel`` (None: none)."""
    subscription = broker.subscribe([channel], _PROBE, max_replay=1)
    try:
        ids: Iterable[str | None] = [event.id for event in subscription.replay]
    finally:
        subscription.close()
    return next(iter(reversed(list(ids))), None)


def _grip_prev_id(prev_id: str | None) -> str:
    """A channel's position as GRIP carries it: its last id, or "nothing yet" (None)."""
    return _grip_id(_NOTHING_YET if prev_id is None else prev_id)


def _channel_param(channel: str, prev_id: str | None) -> str:
    return f"{channel}; prev-id={_grip_prev_id(prev_id)}"


def _next_link(environ: WSGIEnvironment, grant: str) -> str:
    """Where the proxy asks for missed events: this same request (its ``Grip-Last`` says
    where), with ``grant`` in place of any grant it came with."""
    path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    query = str(environ.get("QUERY_STRING", ""))
    kept = [item for item in query.split("&") if item and unquote_plus(item.partition("=")[0]) != _GRANT]
    return path + "?" + "&".join([*kept, f"{_GRANT}={grant}"])
