"""GRIP recovery: the prev-id chain between holds and publishes, and the grant that lets
Pushpin's recovery requests, which carry no client credentials, past ``authorize``.

The first tests drive :class:`sseproto.grip.Grip` behind an EventStreamApp with requests
signed as Pushpin signs them (publishing to a stand-in for Pushpin's publish endpoint);
the rest run test_grip's private Pushpin in front of this module's app, whose replay keeps
little (``SSE_REPLAY_MAX_BYTES``) and whose grants expire soon (``SSE_GRIP_RECOVERY_TTL``).

What Pushpin (1.36) was seen doing: a recovery request (the hold's ``Grip-Link``) carries
Host, Accept, Accept-Encoding, ``Grip-Last``, ``Grip-Sig`` and ``Grip-Feature``, none of the
client's headers (no Cookie, no Authorization); a message whose ``prev-id`` differs from
the last id it delivered on that connection is dropped and recovered instead; a recovery
answered with an error status is retried five times within about three seconds, and then
the stream just ends (the client reconnects). A client's own ``Grip-*`` request headers
never reach the app, and the hold's ``Grip-*`` headers never reach the client.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import test_grip
from servers import Server, spawn, stop
from test_grip import KEY, publish_one, token

from sseproto import Event
from sseproto.brokers import Broker, BrokerUnavailable, MemoryBroker, Subscription, SubscriptionEnded
from sseproto.client import EventSource, iter_events
from sseproto.grip import Grip, parse_grip_last
from sseproto.wsgi import EventStreamApp, Reply

# test_grip's Pushpin fixtures, here in front of this module's own app (grip_app below:
# pytest resolves their dependency by name, from this module).
grip_urls = test_grip.grip_urls
stack = test_grip.stack

TTL = 4.0  # the app's SSE_GRIP_RECOVERY_TTL
MAX_BYTES = 20_000  # the app's SSE_REPLAY_MAX_BYTES: a larger event is evicted as soon as stored
COOKIE = {"Cookie": "session=ok"}  # what the app's authorize wants for "private-..." channels
NOTHING = "sseproto.nothing-yet"  # the prev-id of a channel nothing was published on yet


# --- the prev-id chain, without Pushpin ---------------------------------------------------------

@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def broker(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A broker of each kind (Redis: the session's private server, keys of this test only)."""
    if request.param == "memory":
        made: Any = MemoryBroker(replay_max_bytes=1000)
    else:
        from sseproto.brokers.redis import RedisBroker

        made = RedisBroker(request.getfixturevalue("redis_url"), key_prefix=f"t{uuid.uuid4().hex[:12]}:")
    yield made
    made.close()


def posting(grip: Grip) -> list[dict[str, Any]]:
    """The items ``grip`` publishes, caught instead of posted to Pushpin."""
    items: list[dict[str, Any]] = []
    grip._post = lambda body: items.extend(body["items"])  # type: ignore[assignment,index,method-assign]
    return items


def signed(query: str, grip_last: str | None = None, **headers: str) -> dict[str, Any]:
    """A stream request as Pushpin forwards it (signed), or recovers a hold (``grip_last``)."""
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/stream", "QUERY_STRING": query,
               "HTTP_GRIP_SIG": token(), **{"HTTP_" + k.upper(): v for k, v in headers.items()}}
    if grip_last is not None:
        environ["HTTP_GRIP_LAST"] = grip_last
    return environ


def header(reply: Reply, name: str) -> str:
    return dict(reply.headers)[name]


def grant_of(grip_link: str) -> str:
    """The grant in a hold's ``Grip-Link: <target>; rel=next``."""
    target = grip_link.split(">", 1)[0].lstrip("<")
    return dict(parse_qsl(urlsplit(target).query))["grip_grant"]


def test_each_publish_names_the_id_published_before_even_when_no_longer_retained(broker: Any) -> None:
    """Regression: prev-id was the newest event still retained, so after an eviction a
    publish named an older id, or none, and Pushpin could not tell what a stream missed."""
    grip = Grip("http://127.0.0.1:9", KEY)
    items = posting(grip)
    first = grip.publish(broker, "a", Event("first"))
    # Larger than the memory broker's replay_max_bytes: evicted as soon as stored.
    grip.publish(broker, "a", Event("x" * 2000, id="large"))
    after = grip.publish(broker, "a", Event("after"))
    mine = grip.publish(broker, "a", Event("mine", id="row-7"))
    last = grip.publish(broker, "a", Event("last"))
    assert [(item["id"], item["prev-id"]) for item in items] == [
        (first.id, NOTHING), ("large", first.id), (after.id, "large"), ("row-7", after.id),
        (last.id, "row-7")]
    assert mine.id == "row-7"


def test_a_hold_names_the_last_published_id_the_next_publish_names_as_prev_id(broker: Any) -> None:
    """Regression: a hold's prev-id was the newest event still retained: none once the
    channel's last event was evicted, so Pushpin checked nothing on that stream and
    silently lost what it missed; or an older one, and the next publish recovered needlessly."""
    grip = Grip("http://127.0.0.1:9", KEY)
    items = posting(grip)
    endpoint = EventStreamApp(broker, grip=grip)
    # Events larger than the memory broker's replay_max_bytes are evicted as soon as stored.
    for event in (Event("x" * 2000, id="large"), Event("small"), Event("y" * 2000), Event("z", id="row-7")):
        held = header(endpoint.respond(signed("channel=a,b")), "Grip-Channel")
        grip.publish(broker, "a", event)
        assert held == f"a; prev-id={items[-1]['prev-id']}, b; prev-id={NOTHING}"  # b: never published
    assert [item["prev-id"] for item in items][:2] == [NOTHING, "large"]
    last_hold = endpoint.respond(signed("channel=a,b"))
    assert header(last_hold, "Grip-Channel") == f"a; prev-id=row-7, b; prev-id={NOTHING}"


def test_a_broker_without_last_id_still_gets_prev_ids_from_its_replay() -> None:
    """The Broker protocol does not require ``last_id``: Grip then names the newest event
    the broker still retains (right as long as the channel's last event is retained)."""
    class Minimal:
        def __init__(self) -> None:
            self._inner = MemoryBroker()

        def publish(self, channel: str, event: Event) -> Event:
            return self._inner.publish(channel, event)

        def subscribe(self, channels: Any, last_event_id: str | None = None, *,
                      max_replay: int | None = None) -> Subscription:
            return self._inner.subscribe(channels, last_event_id, max_replay=max_replay)

        def close(self) -> None:
            self._inner.close()

    minimal: Broker = Minimal()
    grip = Grip("http://127.0.0.1:9", KEY)
    items = posting(grip)
    endpoint = EventStreamApp(minimal, grip=grip)
    first = grip.publish(minimal, "a", Event("1"))
    assert header(endpoint.respond(signed("channel=a")), "Grip-Channel") == f"a; prev-id={first.id}"
    second = grip.publish(minimal, "a", Event("2"))
    assert [item["prev-id"] for item in items] == [NOTHING, first.id] and second.id != first.id


def test_a_channel_nothing_was_published_on_has_a_position_too(broker: Any) -> None:
    """Regression: a hold on a channel with no event yet named no prev-id, so Pushpin
    checked nothing on that stream (what it missed there was never recovered) and asked
    for the hold's link without Grip-Last, as a client's own request would come."""
    grip = Grip("http://127.0.0.1:9", KEY)
    items = posting(grip)
    endpoint = EventStreamApp(broker, grip=grip, retry=None)
    assert header(endpoint.respond(signed("channel=a")), "Grip-Channel") == f"a; prev-id={NOTHING}"
    empty = endpoint.respond(signed("channel=a", grip_last=f"a; last-id={NOTHING}"))
    assert header(empty, "Grip-Channel") == f"a; prev-id={NOTHING}" and b"".join(empty.body) == b""
    first = grip.publish(broker, "a", Event("first"))  # as if Pushpin missed it
    assert items[-1]["prev-id"] == NOTHING
    recovery = endpoint.respond(signed("channel=a", grip_last=f"a; last-id={NOTHING}"))
    assert header(recovery, "Grip-Channel") == f"a; prev-id={first.id}"
    # All the channel holds, after the gap event: the app cannot tell whether it lost any since.
    gap = json.dumps({"lastEventId": None, "channels": ["a"]}, separators=(",", ":"))
    body = f"event: sseproto.gap\ndata: {gap}\n\nid: {first.id}\ndata: first\n\n"
    assert b"".join(recovery.body) == body.encode()
    with pytest.raises(ValueError, match="reserved"):
        grip.publish(broker, "a", Event("x", id=NOTHING))


def test_an_event_published_elsewhere_while_a_hold_is_made_is_not_delivered_twice(broker: Any) -> None:
    """Regression: a hold read each channel's last id, then the replay; an event another
    process published in between was in the body and, its prev-id being the hold's, Pushpin
    delivered it again. A body that replays one channel names the newest id it holds."""
    grip = Grip("http://127.0.0.1:9", KEY)
    posting(grip)
    endpoint = EventStreamApp(broker, grip=grip, retry=None)
    up_to_date = grip.publish(broker, "a", Event("seen"))
    read_last_id = broker.last_id
    elsewhere: list[Event] = []

    def last_id_then_another_process_publishes(channel: str) -> str | None:
        found = read_last_id(channel)
        elsewhere.append(broker.publish(channel, Event("elsewhere")))  # past this process's lock
        return found

    broker.last_id = last_id_then_another_process_publishes
    reply = endpoint.respond(signed("channel=a", Last_Event_ID=str(up_to_date.id)))
    broker.last_id = read_last_id
    assert b"".join(reply.body) == f"id: {elsewhere[0].id}\ndata: elsewhere\n\n".encode()
    assert header(reply, "Grip-Channel") == f"a; prev-id={elsewhere[0].id}"  # was {up_to_date.id}
    recovery = endpoint.respond(signed("channel=a,b", grip_last=f"a; last-id={up_to_date.id}"))
    assert header(recovery, "Grip-Channel") == f"a; prev-id={elsewhere[0].id}, b; prev-id={NOTHING}"


@pytest.mark.parametrize("odd", ["order:7", "2024-01-01T00:00:00Z", "a b", "x,y;z", "~tilde", "é"])
def test_ids_that_are_not_header_tokens_still_give_every_channel_a_position(odd: str) -> None:
    """Regression: a hold whose channel's newest id was no header token (``order:7``, an ISO
    time) named no prev-id, so Pushpin checked nothing on that stream (a publish it missed
    was lost) and left the channel out of Grip-Last. Ids travel as tokens, decoded back."""
    broker = MemoryBroker()
    grip = Grip("http://127.0.0.1:9", KEY)
    items = posting(grip)
    endpoint = EventStreamApp(broker, grip=grip, retry=None)
    grip.publish(broker, "a", Event("odd", id=odd))
    held = header(endpoint.respond(signed("channel=a")), "Grip-Channel")
    after = grip.publish(broker, "a", Event("after"))
    assert held == f"a; prev-id={items[-1]['prev-id']}" and items[0]["id"] == items[1]["prev-id"]
    assert re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", items[1]["prev-id"])
    # Pushpin names the position back in Grip-Last as it had it: the app finds the id.
    recovery = endpoint.respond(signed("channel=a", grip_last=f"a; last-id={items[1]['prev-id']}"))
    assert b"".join(recovery.body) == f"id: {after.id}\ndata: after\n\n".encode()
    assert parse_grip_last(f"a; last-id={items[1]['prev-id']}") == {"a": odd}


class _Unreplayable(MemoryBroker):
    """A broker whose replays cannot be given exactly (Redis lost mid-plan or mid-read)."""

    def __init__(self, midway: bool) -> None:
        super().__init__()
        self.midway = midway

    def subscribe(self, channels: Any, last_event_id: str | None = None, *,
                  max_replay: int | None = None) -> Any:
        real = super().subscribe(channels, last_event_id, max_replay=max_replay)
        midway = self.midway

        class Ended:
            channels = real.channels
            gap = real.gap

            @property
            def replay(self) -> Iterator[Event]:
                if midway:
                    yield from list(real.replay)[:1]
                    raise SubscriptionEnded("unavailable")
                return

            def get(self, timeout: float | None = None) -> Event | None:
                raise SubscriptionEnded("unavailable")

            def close(self) -> None:
                real.close()

        return Ended()


@pytest.mark.parametrize("midway", [False, True], ids=["ended before the replay", "ended midway"])
def test_a_hold_whose_replay_the_broker_cannot_give_sends_the_client_back(midway: bool) -> None:
    """Regression: a subscription that ended while planning its replay (Redis away) gave an
    empty body and a hold at the channel's newest id, so Pushpin took the client as up to
    date and what it missed was lost; one that ended midway raised out of respond (500)."""
    broker = _Unreplayable(midway)
    grip = Grip("http://127.0.0.1:9", KEY)
    posting(grip)
    first = grip.publish(broker, "a", Event("one"))
    grip.publish(broker, "a", Event("two"))
    grip.publish(broker, "a", Event("three"))
    endpoint = EventStreamApp(broker, grip=grip, retry=500, retry_jitter=0)
    reply = endpoint.respond(signed("channel=a", Last_Event_ID=str(first.id)))
    assert reply.status == "200 OK" and "Grip-Hold" not in dict(reply.headers)
    assert b"".join(reply.body) == b": unavailable\nretry: 500\n\n"


def test_a_publish_stored_is_never_raised_for_pushpin_s_answer() -> None:
    """Regression: an HTTP-level failure of the post to Pushpin (not an OSError: a bad
    status line) escaped publish() after the event was stored; a retry stored it twice."""
    import http.client

    broker = MemoryBroker()
    grip = Grip("http://127.0.0.1:9", KEY)

    def bad_status(body: Any) -> None:
        raise http.client.BadStatusLine("garbage")

    grip._post = bad_status  # type: ignore[method-assign]
    stored = grip.publish(broker, "a", Event("x"))
    assert broker.last_id("a") == stored.id


@pytest.mark.parametrize("ttl", [float("inf"), float("nan"), 10**12])
def test_recovery_ttl_is_bounded(ttl: float) -> None:
    """Regression: an infinite recovery_ttl made every hold raise OverflowError (500), and one
    past 12 digits of expiry made grants that never matched (every recovery refused)."""
    with pytest.raises(ValueError, match="MAX_RECOVERY_TTL"):
        Grip("http://127.0.0.1:9", KEY, recovery_ttl=ttl)


def test_a_hold_that_cannot_read_its_position_sends_the_client_back() -> None:
    """A broker that cannot be reached (Redis away) gives no last id: no hold without a
    position, but the stream of just ``retry:`` after which a client comes back."""
    class Away(MemoryBroker):
        def last_id(self, channel: str) -> str | None:
            raise BrokerUnavailable("Redis is away")

    endpoint = EventStreamApp(Away(), grip=Grip("http://127.0.0.1:9", KEY), retry=500, retry_jitter=0)
    reply = endpoint.respond(signed("channel=a"))
    assert reply.status == "200 OK" and "Grip-Hold" not in dict(reply.headers)
    assert b"".join(reply.body) == b": unavailable\nretry: 500\n\n"


# --- grants, without Pushpin ------------------------------------------------------------------

def credentials_only(environ: dict[str, Any], channel: str) -> bool:
    """An authorize callback as a real app writes it: whoever shows the cookie."""
    return "session=ok" in str(environ.get("HTTP_COOKIE", ""))


def granted_endpoint(ttl: float = 60.0) -> tuple[EventStreamApp, Grip]:
    grip = Grip("http://127.0.0.1:9", KEY, recovery_ttl=ttl)
    posting(grip)
    return EventStreamApp(MemoryBroker(), grip=grip, authorize=credentials_only), grip


def test_a_recovery_within_its_grant_skips_authorize_and_keeps_the_grant() -> None:
    endpoint, grip = granted_endpoint(ttl=60)
    first = grip.publish(endpoint.broker, "a", Event("0"))
    assert endpoint.respond(signed("channel=a&channel=b")).status.startswith("403")  # no cookie
    hold = endpoint.respond(signed("channel=a&channel=b&lastEventId=1", cookie="session=ok"))
    grant = grant_of(header(hold, "Grip-Link"))
    target = f"/stream?channel=a&channel=b&lastEventId=1&grip_grant={grant}"  # the request, and the grant
    assert header(hold, "Grip-Link") == f"<{target}>; rel=next"
    assert time.time() + 59 < int(grant.split(".")[0]) <= time.time() + 61
    missed = grip.publish(endpoint.broker, "a", Event("missed"))
    recovering = f"a; last-id={first.id}, b; last-id={first.id}"
    recovery = endpoint.respond(signed(f"channel=a&channel=b&lastEventId=1&grip_grant={grant}", recovering))
    assert recovery.status == "200 OK" and header(recovery, "Grip-Hold") == "stream"
    assert f"id: {missed.id}\ndata: missed\n\n".encode() in b"".join(recovery.body)
    # The next recovery's link carries the same grant: its expiry counts from the authorization.
    assert header(recovery, "Grip-Link") == header(hold, "Grip-Link")
    # Granted for the set of channels, whatever their order in the query; its expiry is signed too.
    assert endpoint.respond(signed(f"channel=b&channel=a&grip_grant={grant}", recovering)).status == "200 OK"
    later = f"{int(time.time()) + 600}.{grant.split('.')[1]}"
    assert endpoint.respond(signed(f"channel=a&channel=b&grip_grant={later}", recovering)).status[:3] == "403"


@pytest.mark.parametrize("case", ["missing", "tampered", "other channels", "fewer channels", "expired",
                                  "twice", "garbage", "unsigned", "not a recovery"])
def test_without_a_valid_grant_a_recovery_goes_through_authorize(case: str) -> None:
    endpoint, _ = granted_endpoint(ttl=60)
    hold = endpoint.respond(signed("channel=a&channel=b", cookie="session=ok"))
    grant = grant_of(header(hold, "Grip-Link"))
    expiry, signature = grant.split(".")
    query = {
        "missing": "channel=a&channel=b",
        "tampered": f"channel=a&channel=b&grip_grant={expiry}.{signature[::-1]}",
        "other channels": f"channel=a&channel=c&grip_grant={grant}",
        "fewer channels": f"channel=a&grip_grant={grant}",
        "expired": f"channel=a&channel=b&grip_grant={int(time.time()) - 1}.{signature}",
        "twice": f"channel=a&channel=b&grip_grant={grant}&grip_grant={grant}",
        "garbage": "channel=a&channel=b&grip_grant=%00..",
    }.get(case, f"channel=a&channel=b&grip_grant={grant}")
    environ = signed(query, grip_last=None if case == "not a recovery" else "a; last-id=1")
    if case == "unsigned":
        environ["HTTP_GRIP_SIG"] = token("not the key")
    assert endpoint.respond(environ).status.startswith("403")
    environ["HTTP_COOKIE"] = "session=ok"  # authorize, as for any request
    assert endpoint.respond(environ).status == "200 OK"


def test_a_grant_expires_after_recovery_ttl() -> None:
    endpoint, _ = granted_endpoint(ttl=1)
    hold = endpoint.respond(signed("channel=a", cookie="session=ok"))
    query = f"channel=a&grip_grant={grant_of(header(hold, 'Grip-Link'))}"
    assert endpoint.respond(signed(query, grip_last="a; last-id=1")).status == "200 OK"
    time.sleep(2.1)  # expiries are whole seconds, rounded up
    assert endpoint.respond(signed(query, grip_last="a; last-id=1")).status.startswith("403")
    with_cookie = endpoint.respond(signed(query, grip_last="a; last-id=1", cookie="session=ok"))
    assert with_cookie.status == "200 OK"  # authorized again: a new grant, valid a TTL from now
    assert grant_of(header(with_cookie, "Grip-Link")) != grant_of(header(hold, "Grip-Link"))


def test_recovery_ttl_is_a_positive_number_of_seconds_and_a_flask_setting() -> None:
    assert Grip("http://127.0.0.1:9", KEY).recovery_ttl == 3600
    for bad in (0, -1, True, "60", None):
        with pytest.raises(ValueError, match="recovery_ttl"):
            Grip("http://127.0.0.1:9", KEY, recovery_ttl=bad)  # type: ignore[arg-type]
    from flask import Flask

    from sseproto.flask import SSE

    app = Flask(__name__)
    app.config.update(SSE_GRIP_URL="http://127.0.0.1:9", SSE_GRIP_KEY=KEY, SSE_GRIP_RECOVERY_TTL=90)
    sse = SSE(app)
    with app.app_context():
        assert sse.endpoint.grip is not None and sse.endpoint.grip.recovery_ttl == 90
    for config in ({"SSE_GRIP_RECOVERY_TTL": 90},  # without GRIP, or not a number
                   {"SSE_GRIP_URL": "http://x", "SSE_GRIP_KEY": KEY, "SSE_GRIP_RECOVERY_TTL": "90"}):
        other = Flask(__name__)
        other.config.update(config)
        with pytest.raises(ValueError, match="SSE_GRIP_RECOVERY_TTL"):
            SSE(other)


# --- through Pushpin ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def grip_app(grip_urls: tuple[int, int]) -> Iterator[Server]:
    """The app behind this module's Pushpin: little replay, grants that expire after TTL."""
    _, publish_port = grip_urls
    app = spawn("flask-dev", app="apps.grip_app", SSE_GRIP_URL=f"http://127.0.0.1:{publish_port}",
                SSE_GRIP_KEY=KEY, SSE_HEARTBEAT="1", SSE_REPLAY_MAX_BYTES=str(MAX_BYTES),
                SSE_GRIP_RECOVERY_TTL=str(TTL))
    try:
        yield app
    finally:
        stop(app)


def broker_only(app: Server, channel: str, data: str) -> str:
    """Publish to the app's broker alone: Pushpin misses it, as when its publish request is lost."""
    r = requests.post(app.url + "/publish", json={"data": data, "channel": channel, "broker_only": True},
                      timeout=10)
    r.raise_for_status()
    return str(r.json()["id"])


class Reader:
    """One stream through Pushpin, read on a thread: its events (gap events apart), and
    whether it ended."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.events: list[tuple[str | None, str]] = []
        self.gaps: list[dict[str, Any]] = []
        self.ended = threading.Event()
        self.opened = time.monotonic()
        self.response = requests.get(url, headers=headers, stream=True, timeout=(5, 30))
        self.response.raise_for_status()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in iter_events(self.response):
                if event.event == "sseproto.gap":
                    self.gaps.append(json.loads(event.data))
                else:
                    self.events.append((event.id, event.data))
        except (requests.RequestException, OSError, ValueError):  # ended, or closed by close()
            pass
        finally:
            self.ended.set()

    def wait_for(self, ids: list[str], seconds: float = 10) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not set(ids) <= {i for i, _ in self.events}:
            if self.ended.is_set():
                return False
            time.sleep(0.05)
        return set(ids) <= {i for i, _ in self.events}

    def close(self) -> None:
        self.response.close()


def until(check: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not check():
        time.sleep(0.05)
    return check()


# Pushpin, seen here: about a second after each hold, it asks for the hold's link once,
# unprompted (with Grip-Last: the hold's prev-ids, if any). Its sequencer holds a published
# message whose prev-id is not the last id it delivered on the channel for up to
# message_wait (5 s) before delivering it. So each test waits past that first request, then
# publishes one event to the broker alone (as if its publish request were lost) and one
# more through Pushpin, with no event delivered on the channel in between: the stream
# recovers the missed one at once.
SETTLE = 1.5


@pytest.mark.timeout(60)
def test_a_stream_held_after_the_channels_last_event_left_the_replay_recovers_what_pushpin_missed(
    stack: tuple[Server, int],
) -> None:
    """Regression: the hold named no prev-id once the channel's last event was no longer
    retained, so Pushpin delivered later messages unchecked and what it missed was lost."""
    app, port = stack
    channel = "evicted-" + uuid.uuid4().hex[:6]
    evicted = publish_one(app, channel, "x" * (MAX_BYTES + 1000))  # larger than the replay keeps
    reader = Reader(f"http://127.0.0.1:{port}/sse/stream?channel={channel}")
    try:
        time.sleep(SETTLE)
        missed = broker_only(app, channel, "missed by Pushpin")
        seen = publish_one(app, channel, "published")  # its prev-id: the missed one
        assert reader.wait_for([missed, seen], seconds=3), reader.events
        assert reader.events == [(missed, "missed by Pushpin"), (seen, "published")] and reader.gaps == []
        assert evicted not in {i for i, _ in reader.events} and not reader.ended.is_set()
    finally:
        reader.close()


@pytest.mark.timeout(60)
def test_a_stream_on_a_channel_nothing_was_published_on_recovers_what_pushpin_missed(
    stack: tuple[Server, int],
) -> None:
    """Regression: a hold on a channel with no event yet named no prev-id, so Pushpin
    delivered whatever came next unchecked, and a first event it missed was lost."""
    app, port = stack
    channel = "fresh-" + uuid.uuid4().hex[:6]
    reader = Reader(f"http://127.0.0.1:{port}/sse/stream?channel={channel}")
    try:
        time.sleep(SETTLE)
        sent = [broker_only(app, channel, "missed"), publish_one(app, channel, "after")]
        assert reader.wait_for(sent, seconds=3), reader.events
        assert [i for i, _ in reader.events] == sent  # after the gap event (see the unit test)
        assert reader.gaps == [{"lastEventId": None, "channels": [channel]}]
        nxt = publish_one(app, channel, "next")  # then checked against the last id, as any stream
        assert reader.wait_for([nxt], seconds=3) and not reader.ended.is_set()
    finally:
        reader.close()


@pytest.mark.timeout(60)
def test_pushpin_recovers_a_credentialed_stream_without_the_clients_credentials(
    stack: tuple[Server, int],
) -> None:
    """Regression: Pushpin's recovery requests carry no cookies, so ``authorize`` refused
    them (403), Pushpin gave up after its retries and ended the stream, and what it had
    missed came only with the client's reconnection, if at all: every credentialed stream
    was cut about 3.5 s after it opened (at Pushpin's first, unprompted recovery). The
    hold's grant lets the recoveries through: the held stream gets what Pushpin missed and
    is never cut."""
    app, port = stack
    channel = "private-" + uuid.uuid4().hex[:6]
    assert requests.get(f"http://127.0.0.1:{port}/sse/stream?channel={channel}", timeout=5).status_code == 403
    publish_one(app, channel, "before")
    reader = Reader(f"http://127.0.0.1:{port}/sse/stream?channel={channel}", COOKIE)
    try:
        time.sleep(SETTLE)
        sent = [broker_only(app, channel, "missed"), publish_one(app, channel, "after")]
        assert reader.wait_for(sent, seconds=3), reader.events  # well before Pushpin would give up
        time.sleep(max(0.0, SETTLE + 3.5 - (time.monotonic() - reader.opened)))  # past the old cut
        assert [i for i, _ in reader.events] == sent and reader.gaps == []  # 0 lost, 0 duplicated
        assert not reader.ended.is_set()
    finally:
        reader.close()


@pytest.mark.timeout(60)
def test_a_credentialed_stream_on_a_channel_nothing_was_published_on_is_checked_and_never_cut(
    stack: tuple[Server, int],
) -> None:
    """Regression: such a hold named no prev-id, so Pushpin checked nothing on the stream,
    and asked for the hold's link about a second later without Grip-Last, which
    ``authorize`` refused: the stream was cut after Pushpin's retries, and again after every
    reconnection until the channel's first event."""
    app, port = stack
    channel = "private-" + uuid.uuid4().hex[:6]
    reader = Reader(f"http://127.0.0.1:{port}/sse/stream?channel={channel}", COOKIE)
    try:
        time.sleep(SETTLE)
        sent = [broker_only(app, channel, "missed"), publish_one(app, channel, "after")]
        assert reader.wait_for(sent, seconds=3), reader.events
        # What the channel holds, after the gap event (the app cannot tell what the channel lost).
        assert reader.gaps == [{"lastEventId": None, "channels": [channel]}]
        time.sleep(max(0.0, SETTLE + 3.5 - (time.monotonic() - reader.opened)))  # past the old cut
        assert [i for i, _ in reader.events] == sent and not reader.ended.is_set()
    finally:
        reader.close()


@pytest.mark.timeout(60)
def test_after_the_grant_expires_pushpin_ends_the_stream_and_the_client_resumes_with_its_credentials(
    stack: tuple[Server, int],
) -> None:
    """Past recovery_ttl a recovery meets ``authorize`` without credentials and is refused:
    Pushpin retries, then ends the stream; the client reconnects with its cookie and its
    Last-Event-ID and gets the replay: nothing lost."""
    app, port = stack
    channel = "private-" + uuid.uuid4().hex[:6]
    marker = publish_one(app, channel, "before")
    opens: list[float] = []
    got: list[tuple[str | None, str]] = []
    with EventSource(f"http://127.0.0.1:{port}/sse/stream?channel={channel}", headers=COOKIE,
                     last_event_id=marker, timeout=(5, 5), on_open=lambda _: opens.append(time.monotonic())
                     ) as source:
        events = iter(source)
        threading.Thread(target=lambda: got.extend((e.id, e.data) for e in events), daemon=True).start()
        assert until(lambda: len(opens) == 1)
        time.sleep(TTL + 1.5)  # the grant has expired
        sent = [broker_only(app, channel, "missed"), publish_one(app, channel, "after")]
        assert until(lambda: len(got) >= 2, seconds=20), got
        time.sleep(0.3)  # room for a duplicate
    assert got == [(sent[0], "missed"), (sent[1], "after")]  # 0 lost, 0 duplicated, no gap event
    assert len(opens) == 2 and opens[1] - opens[0] > TTL  # resumed once, after Pushpin ended the stream


def test_the_app_admits_its_own_grants_to_recovery_and_refuses_forged_ones(grip_app: Server) -> None:
    """The Flask app's authorizer reads the cookie: a recovery signed as Pushpin signs it
    passes with the hold's grant, and is refused (403) with a forged or another hold's one."""
    channel = "private-" + uuid.uuid4().hex[:6]
    stream = f"{grip_app.url}/sse/stream"
    hold = requests.get(f"{stream}?channel={channel}", headers={"Grip-Sig": token(), **COOKIE}, timeout=5)
    grant = grant_of(hold.headers["Grip-Link"])
    other = requests.get(f"{stream}?channel=public", headers={"Grip-Sig": token()}, timeout=5)
    other_grant = grant_of(other.headers["Grip-Link"])
    recovering = {"Grip-Sig": token(), "Grip-Last": f"{channel}; last-id=x"}
    forged = grant[:-1] + ("B" if grant.endswith("A") else "A")
    for candidate, status in ((grant, 200), (forged, 403), (other_grant, 403)):
        r = requests.get(f"{stream}?channel={channel}&grip_grant={candidate}", headers=recovering, timeout=5)
        assert r.status_code == status, candidate
