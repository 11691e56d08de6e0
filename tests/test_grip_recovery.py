"""GRIP recovery: the prev-id chain between holds and publishes.

The first tests drive :class:`sseproto.grip.Grip` behind an EventStreamApp with requests
signed as Pushpin signs them (publishing to a stand-in for Pushpin's publish endpoint);
the rest run test_grip's private Pushpin in front of this module's app, whose replay keeps
little (``SSE_REPLAY_MAX_BYTES``).

What Pushpin (1.36) was seen doing: a message whose ``prev-id`` differs from the last id
it delivered on that connection is dropped and recovered instead, through the hold's
``Grip-Link`` with ``Grip-Last``; on a channel of the hold without a prev-id it checks
nothing.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import test_grip
from servers import Server, spawn, stop
from test_grip import KEY, publish_one, token

from sseproto import Event
from sseproto.brokers import Broker, BrokerUnavailable, MemoryBroker, Subscription
from sseproto.client import iter_events
from sseproto.grip import Grip
from sseproto.wsgi import EventStreamApp, Reply

# test_grip's Pushpin fixtures, here in front of this module's own app (grip_app below:
# pytest resolves their dependency by name, from this module).
grip_urls = test_grip.grip_urls
stack = test_grip.stack

MAX_BYTES = 20_000  # the app's SSE_REPLAY_MAX_BYTES: a larger event is evicted as soon as stored
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


# --- through Pushpin ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def grip_app(grip_urls: tuple[int, int]) -> Iterator[Server]:
    """The app behind this module's Pushpin: little replay."""
    _, publish_port = grip_urls
    app = spawn("flask-dev", app="apps.grip_app", SSE_GRIP_URL=f"http://127.0.0.1:{publish_port}",
                SSE_GRIP_KEY=KEY, SSE_HEARTBEAT="1", SSE_REPLAY_MAX_BYTES=str(MAX_BYTES))
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
