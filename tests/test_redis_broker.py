"""The Redis broker against real redis-server and valkey-server processes: ids, replay, gaps,
fan-out, faults, gevent.

The contract it shares with the in-memory broker is tested on both in tests/test_broker.py.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from conftest import ROOT, STORES, RedisServer, running_store, wait_until

from sseproto import Event
from sseproto.brokers import Broker, BrokerUnavailable, SubscriptionEnded, broker_from_url
from sseproto.brokers.redis import RedisBroker, RedisSubscription

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


@pytest.fixture(scope="module", params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    """Which server this module's tests run on: every test runs on redis-server and on valkey-server."""
    return str(request.param)


@pytest.fixture
def store_url(store: str, request: pytest.FixtureRequest) -> str:
    """The session's server of that kind."""
    return str(request.getfixturevalue(f"{store}_url"))


@pytest.fixture
def own_redis(store: str, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A private server of one test; ``persistent`` (indirect param) turns on fsync'd AOF."""
    with running_store(store, persistent=getattr(request, "param", True)) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    """Keys of one test only, on the shared private Redis."""
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def make(store_url: str, prefix: str) -> Iterator[Callable[..., RedisBroker]]:
    """Brokers on the session's Redis under the test's key prefix, closed afterwards."""
    made: list[RedisBroker] = []

    def factory(url: str = store_url, **options: object) -> RedisBroker:
        options.setdefault("key_prefix", prefix)
        broker = RedisBroker(url, **options)  # type: ignore[arg-type]
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        broker.close()


def drain(sub: RedisSubscription, n: int, timeout: float = 10.0) -> list[Event]:
    """The next ``n`` live events (each within ``timeout`` seconds)."""
    got = []
    for _ in range(n):
        event = sub.get(timeout)
        assert event is not None, f"only {len(got)} of {n} events arrived"
        got.append(event)
    return got


def stream_key(id: str | None) -> tuple[int, int]:
    assert id is not None
    ms, seq = id.split("-")
    return int(ms), int(seq)


# -- ids and replay -----------------------------------------------------------------------


def test_broker_from_url_makes_a_redis_broker_with_the_shared_options(store_url: str) -> None:
    broker = broker_from_url(store_url, queue_size=7, replay_size=8, replay_max_age=9.5)
    try:
        assert isinstance(broker, RedisBroker)
        assert (broker.queue_size, broker.replay_size, broker.replay_max_age) == (7, 8, 9.5)
        typed: Broker = broker
        assert typed.publish("from-url", Event("x")).id is not None
    finally:
        broker.close()
    with pytest.raises(ValueError, match="unknown broker URL"):
        broker_from_url("kafka://x")


def test_ids_are_stream_ids_unique_and_increasing_across_channels(make: Callable[..., RedisBroker]) -> None:
    broker = make()
    events = [broker.publish("ab"[i % 2], Event(str(i))) for i in range(200)]
    keys = [stream_key(e.id) for e in events]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_ids_from_concurrent_publishers_are_totally_ordered(make: Callable[..., RedisBroker]) -> None:
    brokers = [make(), make()]
    published: list[list[Event]] = [[], []]

    def run(i: int) -> None:
        for n in range(150):
            published[i].append(brokers[i].publish(f"c{i}", Event(f"{i}:{n}")))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for own in published:
        assert [stream_key(e.id) for e in own] == sorted(stream_key(e.id) for e in own)
    everything = sorted(published[0] + published[1], key=lambda e: stream_key(e.id))
    assert len({e.id for e in everything}) == 300
    # Any id, from either channel, resumes both channels exactly after it.
    for cut in (0, 77, 150, 298):
        with brokers[0].subscribe(["c0", "c1"], everything[cut].id) as sub:
            assert sub.gap == ()
            assert list(sub.replay) == everything[cut + 1 :]


def test_an_event_of_one_channel_resumes_the_others_within_one_millisecond(
    make: Callable[..., RedisBroker], store_url: str, prefix: str
) -> None:
    """The tie that loses events with per-stream ids: A's event and B's event in one millisecond.

    The clock is set a minute ahead (as after Redis's clock stepped back), so every event
    below gets the same millisecond: only the sequence tells them apart, across channels.
    """
    admin = redis.Redis.from_url(store_url, decode_responses=True)
    ahead = int(admin.time()[0]) * 1000 + 60_000
    admin.hset("{" + prefix + "}clock", mapping={"ms": ahead, "seq": 0, "n": 0, "floor": f"{ahead}-0"})
    admin.close()
    broker = make()
    events = [broker.publish("ab"[i % 2], Event(str(i))) for i in range(40)]
    assert [e.id for e in events] == [f"{ahead}-{i + 1}" for i in range(40)]
    for i, event in enumerate(events):
        with broker.subscribe(["a", "b"], event.id) as sub:
            assert list(sub.replay) == events[i + 1 :] and sub.gap == ()
    with broker.subscribe(["a", "b"], events[5].id) as sub:  # and live after the replay
        live = broker.publish("b", Event("live"))
        assert list(sub.replay) == events[6:] and drain(sub, 1) == [live]


@pytest.mark.parametrize("last_id", ["bogus", "1-0", "99999999999999-0", "1700000000000000", "5-x"])
def test_ids_this_redis_never_gave_are_gaps_on_every_channel(
    make: Callable[..., RedisBroker], last_id: str
) -> None:
    broker = make()
    e = broker.publish("a", Event("x"))
    with broker.subscribe(["a", "unused"], last_id) as sub:
        assert sub.gap == ("a", "unused")
        assert list(sub.replay) == [e]
    live = broker.publish("a", Event("live"))
    with broker.subscribe(["a"], last_id) as sub:
        assert list(sub.replay) == [e, live]
        after = broker.publish("a", Event("after"))
        assert drain(sub, 1) == [after]  # live delivery goes on after a gap


def test_trimmed_ids_are_gaps_exactly_past_the_newest_trimmed_event(make: Callable[..., RedisBroker]) -> None:
    broker = make(replay_size=10)
    events = [broker.publish("a", Event(str(i))) for i in range(250)]
    other = broker.publish("b", Event("b"))
    with broker.subscribe(["a", "b"], events[0].id) as sub:
        # Trimmed, so no requested channel has it: every channel may have missed something.
        assert sub.gap == ("a", "b")
        *retained, last = sub.replay
        assert last == other
    # MAXLEN ~ keeps at least replay_size, the newest ones.
    start = events.index(retained[0])
    assert 10 <= len(retained) < 250 and retained == events[start:]
    # The newest trimmed event: a client that saw it missed nothing; one before it did.
    with broker.subscribe(["a"], events[start - 1].id) as sub:
        assert sub.gap == () and list(sub.replay) == retained
    with broker.subscribe(["a"], events[start - 2].id) as sub:
        assert sub.gap == ("a",) and list(sub.replay) == retained


def test_old_events_are_trimmed_by_age(make: Callable[..., RedisBroker]) -> None:
    broker = make(replay_max_age=0.3)
    old = [broker.publish("a", Event(str(i))) for i in range(150)]
    time.sleep(0.5)
    new = broker.publish("a", Event("new"))  # MINID ~ drops whole stream nodes of old events
    with broker.subscribe(["a"], old[0].id) as sub:
        assert sub.gap == ("a",)
        replay = list(sub.replay)
        start = old.index(replay[0])
        assert 0 < start < 150 and replay == [*old[start:], new]
    with broker.subscribe(["a"], old[start - 1].id) as sub:
        assert sub.gap == ()


def test_ids_the_publisher_chose_are_kept_and_resume_every_channel(make: Callable[..., RedisBroker]) -> None:
    broker = make()
    before = broker.publish("b", Event("before"))
    mine = broker.publish("a", Event("x", id="mine"))
    assert mine.id == "mine"
    after = broker.publish("a", Event("after"))
    other = broker.publish("b", Event("other"))
    with broker.subscribe(["a", "b"], "mine") as sub:
        assert sub.gap == () and list(sub.replay) == [after, other]
        assert before not in list(sub.replay)
    with broker.subscribe(["b"], "mine") as sub:  # not on the stream's channels: unknown
        assert sub.gap == ("b",)
    with broker.subscribe(["a"], before.id) as sub:
        assert list(sub.replay) == [mine, after]  # delivered with the publisher's id
    with pytest.raises(ValueError, match="gives ids of the form"):
        broker.publish("a", Event("x", id="123-4"))


# -- key spaces, bounded replay, ids judged per channel, sizes (Hardening II) ------------


def test_brokers_with_nesting_key_prefixes_share_nothing(
    make: Callable[..., RedisBroker], prefix: str
) -> None:
    """Regression: with prefixes ``P`` and ``P + "channel:t:"``, channel ``t:channel:news`` of
    the first was the key of the second's ``news`` (its history read by anyone), and a
    publish on ``t:feed`` wrote into the second's feed and ended all its streams."""
    outer = make(key_prefix=prefix)
    inner = make(key_prefix=prefix + "channel:t:")
    private = inner.publish("news", Event("inner's own"))
    with outer.subscribe(["t:channel:news"], "bogus") as sub:
        assert list(sub.replay) == [] and sub.gap == ("t:channel:news",)
    with inner.subscribe(["news"]) as live:
        outer.publish("t:feed", Event("outer's"))
        outer.publish("t:clock", Event("outer's"))  # was the other's clock: WRONGTYPE
        after = inner.publish("news", Event("after"))
        assert live.get(10) == after
        assert live.get(0.3) is None  # still open, nothing foreign delivered
    with inner.subscribe(["news"], private.id) as sub:
        assert list(sub.replay) == [after] and sub.gap == ()
    for bad in ("", "a{b", "a}b", "{sse}"):
        with pytest.raises(ValueError, match="key_prefix"):
            make(key_prefix=bad)


@pytest.mark.parametrize("own_redis", [False], indirect=True)
def test_a_replay_is_read_from_redis_page_by_page_as_it_is_sent(own_redis: RedisServer, prefix: str) -> None:
    """Regression: a bogus Last-Event-ID on 16 channels x 1000 x 1 KiB fetched all 17 MB at
    subscribe (plus a Lua scan of the history), ~300 ms and ~40 MB per request."""
    broker = RedisBroker(own_redis.url, key_prefix=prefix, replay_size=1000)
    admin = redis.Redis.from_url(own_redis.url)
    try:
        channels = [f"c{i}" for i in range(8)]
        events = [broker.publish(channels[i % 8], Event(f"{i}:" + "x" * 1000)) for i in range(2000)]

        def sent() -> int:
            return int(admin.info("stats")["total_net_output_bytes"])

        start = sent()
        sub = broker.subscribe(channels, "bogus")
        assert sent() - start < 10_000  # planned: no event read yet (was 2 MB)
        assert sub.gap == tuple(channels) and len(sub.replay) == 2000  # type: ignore[arg-type]
        replay = iter(sub.replay)
        assert [next(replay) for _ in range(20)] == events[:20]
        assert sent() - start < 8 * 16 * 1100 + 20_000  # a first page of each channel, not the history
        assert [*events[:20], *replay] == events
        assert sent() - start < 2 * 2000 * 1100  # each event once (and a page header)
        sub.close()
        with broker.subscribe(channels, "bogus", max_replay=100) as sub:
            start = sent()
            assert list(sub.replay) == events[-100:]
            assert sent() - start < 100 * 1100 + 8 * 16 * 1100 + 10_000  # what is replayed, not the history
    finally:
        admin.close()
        broker.close()


def test_a_replay_that_redis_trims_while_it_is_read_ends_the_stream(make: Callable[..., RedisBroker]) -> None:
    broker = make(replay_size=20)
    events = [broker.publish("a", Event(str(i))) for i in range(50)]  # one stream node: nothing trimmed
    sub = broker.subscribe(["a"], "bogus")
    replay = iter(sub.replay)
    got = [next(replay)]
    for i in range(300):  # drops the node of the 34 events the replay has not fetched yet
        broker.publish("a", Event(f"later {i}"))
    with pytest.raises(SubscriptionEnded) as ended:
        got += replay
    assert ended.value.reason == "unavailable"
    assert got == events[: len(got)] and len(got) < 50  # exact as far as it went
    with pytest.raises(SubscriptionEnded):  # no live event after the hole either
        sub.get(0)
    # The client comes back with the last id it got: a gap, then what Redis still holds.
    with broker.subscribe(["a"], got[-1].id) as again:
        assert again.gap == ("a",) and list(again.replay)[-1].data == "later 299"


def _expected(
    published: list[tuple[str, Event]], last: str, wanted: tuple[str, ...], limit: int | None
) -> tuple[list[Event], tuple[str, ...]]:
    """What a resume from ``last`` should replay, and its gaps (nothing trimmed)."""
    cut = next((i for i, (ch, e) in enumerate(published) if e.id == last and ch in wanted), None)
    missed = [(ch, e) for ch, e in published[0 if cut is None else cut + 1 :] if ch in wanted]
    gap = set(wanted) if cut is None else set()
    if limit is not None and len(missed) > limit:
        gap |= {ch for ch, _ in missed[: len(missed) - limit]}
        missed = missed[len(missed) - limit :]
    return [e for _, e in missed], tuple(ch for ch in wanted if ch in gap)


@pytest.mark.parametrize("one_millisecond", [False, True])
def test_max_replay_replays_exactly_the_newest_events_and_names_the_channels_cut(
    make: Callable[..., RedisBroker], store_url: str, prefix: str, one_millisecond: bool
) -> None:
    """The cut is found by bisecting ids (milliseconds, then sequence numbers): checked
    against a model, with events spread over milliseconds and all in one."""
    if one_millisecond:
        admin = redis.Redis.from_url(store_url, decode_responses=True)
        ahead = int(admin.time()[0]) * 1000 + 60_000
        admin.hset("{" + prefix + "}clock", mapping={"ms": ahead, "seq": 0, "n": 0, "floor": f"{ahead}-0"})
        admin.close()
    broker = make()
    rng = random.Random(13)
    published = [("q", broker.publish("q", Event("quiet, and first")))]
    for i in range(150):
        channel = rng.choice("aaabbbbcd")
        published.append((channel, broker.publish(channel, Event(str(i)))))
        if not one_millisecond and i % 40 == 0:
            time.sleep(0.01)
    milliseconds = {stream_key(e.id)[0] for _, e in published}
    assert len(milliseconds) == 1 if one_millisecond else len(milliseconds) >= 4
    for last in ("bogus", published[0][1].id, published[3][1].id, published[75][1].id, published[-2][1].id):
        assert last is not None
        for wanted in (("a", "b"), ("q", "a", "b", "c", "d"), ("d",), ("q", "c")):
            for limit in (None, 0, 1, 7, 60, 149, 151, 500):
                with broker.subscribe(list(wanted), last, max_replay=limit) as sub:
                    replay, gap = _expected(published, last, wanted, limit)
                    assert (list(sub.replay), sub.gap) == (replay, gap), (last, wanted, limit)


def test_an_id_the_publisher_chose_is_found_however_far_back(make: Callable[..., RedisBroker]) -> None:
    """Regression: ids the publisher chose were searched for in the newest replay_size + 1000
    entries, by a Lua scan of the subscribing broker's setting: a process with a smaller
    replay_size than the publisher's did not find them (a gap), and every search read
    that much history."""
    publisher = make(replay_size=3000)
    mine = publisher.publish("a", Event("x", id="mine"))
    after = [publisher.publish("a", Event(str(i))) for i in range(2500)]
    reader = make(replay_size=10)
    with reader.subscribe(["a"], "mine") as sub:
        assert sub.gap == () and list(sub.replay) == after
    assert mine.id == "mine"


def test_the_index_of_chosen_ids_is_trimmed_with_the_stream(
    make: Callable[..., RedisBroker], store_url: str, prefix: str
) -> None:
    broker = make(replay_size=10)
    events = [broker.publish("a", Event(str(i), id=f"u{i}")) for i in range(450)]
    admin = redis.Redis.from_url(store_url, decode_responses=True)
    try:
        retained = admin.xlen("{" + prefix + "}channel:a")
        assert 10 <= retained < 450
        # The retained events' ids and the newest trimmed one: bounded like the stream.
        assert admin.hlen("{" + prefix + "}ids:a") == admin.zcard("{" + prefix + "}idk:a") == retained + 1
    finally:
        admin.close()
    with broker.subscribe(["a"], events[-retained - 1].id) as sub:  # the newest trimmed: nothing missed
        assert sub.gap == () and list(sub.replay) == events[-retained:]
    with broker.subscribe(["a"], events[-retained - 2].id) as sub:
        assert sub.gap == ("a",) and list(sub.replay) == events[-retained:]


def test_a_channel_whose_counts_were_lost_starts_again_and_knows_its_newest_id(
    make: Callable[..., RedisBroker], store_url: str, prefix: str
) -> None:
    """The count stream deleted by hand (or evicted): the channel's events cannot be
    counted any more, so the next publish starts it again, its newest event known as trimmed."""
    broker = make()
    events = [broker.publish("a", Event(str(i))) for i in range(5)]
    admin = redis.Redis.from_url(store_url)
    admin.delete("{" + prefix + "}count:a")
    admin.close()
    with broker.subscribe(["a"], events[-1].id) as sub:  # nothing countable: a gap, no error
        assert sub.gap == ("a",) and list(sub.replay) == []
    new = broker.publish("a", Event("new"))
    with broker.subscribe(["a"], events[-1].id) as sub:
        assert sub.gap == () and list(sub.replay) == [new]
    with broker.subscribe(["a"], events[-2].id) as sub:
        assert sub.gap == ("a",) and list(sub.replay) == [new]


@pytest.mark.parametrize("own_id", [False, True], ids=["broker-id", "chosen-id"])
def test_last_id_names_the_newest_event_once_it_is_trimmed_or_its_counts_lost(
    make: Callable[..., RedisBroker], store_url: str, prefix: str, own_id: bool
) -> None:
    """GRIP's prev-id: the newest event's id, whether the channel stream still holds it or
    not. The broker itself never trims a channel's newest entry (it trims as it adds one),
    so it goes here by hand, as an operator's XTRIM or a lost count stream would."""
    broker = make(replay_size=10)
    events = [broker.publish("a", Event(str(i), id=f"u{i}" if own_id else None)) for i in range(150)]
    admin = redis.Redis.from_url(store_url, decode_responses=True)
    try:
        admin.xtrim("{" + prefix + "}channel:a", maxlen=0)
        assert broker.last_id("a") == events[-1].id  # kept in the count stream (and its chosen id)
        trimmed, prev = broker._publish_with_prev("a", Event("after the trim"))
        assert prev == events[-1].id and broker.last_id("a") == trimmed.id
        mine = broker.publish("a", Event("x", id="mine") if own_id else Event("x"))
        admin.delete("{" + prefix + "}count:a")  # the counts lost: the stream's last entry tells
        assert broker.last_id("a") == mine.id
        admin.xtrim("{" + prefix + "}channel:a", maxlen=0)
        # Then only its stream id is left: Pushpin, given it as prev-id, recovers once (safe).
        stream_id = admin.xinfo_stream("{" + prefix + "}channel:a")["last-generated-id"]
        assert broker.last_id("a") == stream_id
        assert own_id or stream_id == mine.id
        restarted, prev = broker._publish_with_prev("a", Event("again"))
        assert prev == stream_id and broker.last_id("a") == restarted.id
    finally:
        admin.close()
    assert broker.last_id("never") is None


def test_publishers_on_one_channel_get_prev_ids_that_chain(make: Callable[..., RedisBroker]) -> None:
    """Two brokers (as two processes) publishing on one channel at once: each event's
    previous id, read in the publish script, is exactly the event before it, so GRIP's
    prev-ids never skip one (two publishes answered with the same prev-id would let
    Pushpin deliver the later one on top of a missed earlier one)."""
    brokers = [make(), make()]
    published: list[tuple[Event, str | None]] = []
    lock = threading.Lock()

    def run(broker: RedisBroker, n: int) -> None:
        for i in range(150):
            pair = broker._publish_with_prev("a", Event(str(i), id=f"p{n}-{i}" if i % 3 == 0 else None))
            with lock:
                published.append(pair)

    threads = [threading.Thread(target=run, args=(broker, n)) for n, broker in enumerate(brokers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with brokers[0].subscribe(["a"], "unknown", max_replay=None) as sub:
        order = [event.id for event in sub.replay]  # the channel's order, as stored
    assert sorted(order) == sorted(event.id for event, _ in published) and len(order) == 300
    prev_of = {event.id: prev for event, prev in published}
    assert [prev_of[id] for id in order] == [None, *order[:-1]]


def test_only_ids_of_the_requested_channels_are_known(make: Callable[..., RedisBroker]) -> None:
    """Regression: any stream id between the clock's first and last counted as known, so a
    client allowed only ``public`` bisected for the newest ``secret`` id in ~20
    gap/no-gap probes."""
    broker = make()
    p1 = broker.publish("public", Event("p1"))
    s1 = broker.publish("secret", Event("s1"))
    p2 = broker.publish("public", Event("p2"))
    s2 = broker.publish("secret", Event("s2"))  # the newest id of all
    between = "{}-{}".format(*(stream_key(p1.id)[0], stream_key(p1.id)[1] + 1))
    for probe in (s1.id, s2.id, between):
        assert probe is not None
        with broker.subscribe(["public"], probe) as sub:
            assert sub.gap == ("public",) and list(sub.replay) == [p1, p2]
    # The prober's bisection: every guess gets the same answer, so it learns nothing.
    low, high = stream_key(p1.id)[0], stream_key(s2.id)[0] + 10**6
    answers = set()
    for _ in range(25):
        middle = (low + high) // 2
        with broker.subscribe(["public"], f"{middle}-0") as sub:
            answers.add(sub.gap)
        low, high = (middle, high) if middle % 2 else (low, middle)
    assert answers == {("public",)}
    with broker.subscribe(["public"], p1.id) as sub:  # its own ids are known, of course
        assert sub.gap == () and list(sub.replay) == [p2]


def test_ids_of_both_kinds_resume_on_one_channel_and_across_two(make: Callable[..., RedisBroker]) -> None:
    """Ids the publisher chose, in any order relative to the broker's (and to each other),
    are found on the channel that stored them and place the other channel by stream id."""
    broker = make()
    plan = [("a", None), ("a", "zz"), ("b", "5"), ("a", None), ("b", None), ("a", "10"), ("b", "aa"),
            ("a", None), ("b", "0"), ("b", None), ("a", "9"), ("a", "100")]
    published = [(ch, broker.publish(ch, Event(str(i), id=own))) for i, (ch, own) in enumerate(plan)]
    for last_channel, last in published:
        assert last.id is not None
        for wanted in (("a",), ("b",), ("a", "b"), ("b", "a", "unused")):
            with broker.subscribe(list(wanted), last.id) as sub:
                replay, gap = _expected(published, last.id, wanted, None)
                assert (list(sub.replay), sub.gap) == (replay, gap), (last.id, wanted)
                assert (gap == ()) == (last_channel in wanted)
    # An id used twice: the newest event with it on the requested channels counts.
    again = broker.publish("b", Event("again", id="zz"))
    with broker.subscribe(["a"], "zz") as sub:
        assert sub.gap == () and list(sub.replay) == [e for ch, e in published[2:] if ch == "a"]
    with broker.subscribe(["a", "b"], "zz") as sub:
        assert sub.gap == () and list(sub.replay) == []
    assert again.id == "zz"


def test_events_larger_than_max_event_size_are_refused_and_so_is_replay_max_bytes(
    make: Callable[..., RedisBroker], store_url: str
) -> None:
    broker = make(max_event_size=1000)
    broker.publish("a", Event("x" * 900))
    with pytest.raises(ValueError, match=r"max_event_size=1000 \(SSE_MAX_EVENT_SIZE"):
        broker.publish("a", Event("x" * 1000))
    with broker.subscribe(["a"], "unknown") as sub:
        assert len(list(sub.replay)) == 1  # nothing refused was stored
    default = make()
    assert default.max_event_size == 1024 * 1024
    with pytest.raises(ValueError, match="max_event_size"):
        default.publish("a", Event("x" * 1024 * 1024))  # 1 MiB of data, 8 bytes more encoded
    assert make(max_event_size=None).publish("a", Event("x" * 2_000_000)).id is not None
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="max_event_size"):
            make(max_event_size=bad)
    with pytest.raises(ValueError, match="replay_max_bytes"):
        make(replay_max_bytes=10_000)
    with pytest.raises(ValueError, match="replay_max_bytes"):
        broker_from_url(store_url, replay_max_bytes=10_000)
    with pytest.raises(ValueError, match="max_replay"):
        broker.subscribe(["a"], "x", max_replay=-1)


# -- live fan-out -------------------------------------------------------------------------


def test_events_published_through_another_connection_reach_every_subscriber(
    make: Callable[..., RedisBroker],
) -> None:
    broker, elsewhere = make(), make()
    elsewhere.publish("a", Event("before"))  # published before the subscriptions: not theirs
    with broker.subscribe(["a"]) as s1, broker.subscribe(["a", "b"]) as s2, broker.subscribe(["b"]) as s3:
        e = elsewhere.publish("a", Event("x"))  # another connection, as another process would
        assert s1.get(10) == e and s2.get(10) == e
        assert s3.get(0.05) is None
        assert list(s1.replay) == [] and s1.gap == ()
        assert broker.subscriber_count() == 3 and broker.subscriber_count("a") == 2


def test_bad_settings_are_refused(store_url: str) -> None:
    for options in ({"queue_size": 0}, {"replay_size": 0}, {"feed_size": 0}, {"pool_size": 0},
                    {"replay_max_age": 0}, {"block": 0}):
        with pytest.raises(ValueError):
            RedisBroker(store_url, **options)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RedisBroker("http://127.0.0.1/")
    broker = RedisBroker(store_url)
    with pytest.raises(ValueError):
        broker.subscribe([])
    with pytest.raises(ValueError):
        broker.publish("", Event("x"))
    broker.close()


def test_subscribing_while_publishing_loses_and_repeats_nothing(make: Callable[..., RedisBroker]) -> None:
    """Replay and live delivery meet exactly, however the listener and the publisher interleave."""
    broker = make(queue_size=5000, replay_size=5000)
    publisher = make()  # another connection, as another process
    total = 600
    start = publisher.publish("a", Event("start"))
    published: list[Event] = []
    done = threading.Event()

    def publish() -> None:
        for i in range(total):
            published.append(publisher.publish("ab"[i % 2], Event(str(i))))
            if i % 20 == 0:
                time.sleep(0.001)  # let subscriptions interleave all along
        done.set()

    kept: list[tuple[RedisSubscription, list[Event]]] = []
    t = threading.Thread(target=publish)
    t.start()
    checks = 0
    while not done.is_set() and checks < 60:
        checks += 1
        sub = broker.subscribe(["a", "b"], start.id)
        seen = list(sub.replay)
        while (event := sub.get(0)) is not None:
            seen.append(event)
        assert [e.data for e in seen] == [str(i) for i in range(len(seen))]
        if checks % 3 == 1:
            kept.append((sub, seen))  # read on to the end below
        else:
            sub.close()
    t.join(60)
    assert len(published) == total and kept
    for sub, seen in kept:
        seen += drain(sub, total - len(seen))
        assert seen == published
        assert sub.get(0.05) is None
        sub.close()
    with broker.subscribe(["a", "b"], start.id) as sub:
        assert list(sub.replay) == published


def test_200_subscribers_share_a_constant_number_of_connections(
    make: Callable[..., RedisBroker], store_url: str
) -> None:
    name = f"sseproto-{uuid.uuid4().hex[:8]}"
    broker = make(client_name=name, pool_size=4)
    first = broker.publish("a", Event("first"))
    missed = broker.publish("b", Event("missed"))
    barrier = threading.Barrier(200)
    subs: list[RedisSubscription] = []
    lock = threading.Lock()

    def subscribe() -> None:
        barrier.wait(30)
        sub = broker.subscribe(["a", "b"], first.id)  # each one also runs a replay query
        with lock:
            subs.append(sub)

    threads = [threading.Thread(target=subscribe) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(subs) == 200 and all(list(s.replay) == [missed] for s in subs)
    live = broker.publish("a", Event("live"))
    assert all(s.get(10) == live for s in subs)
    admin = redis.Redis.from_url(store_url, decode_responses=True)
    try:
        ours = [c for c in admin.client_list() if c.get("name") == name]
    finally:
        admin.close()
    assert 1 <= len(ours) <= 5, ours  # one listener + a pool of 4, for 200 streams
    for s in subs:
        s.close()


# -- faults -------------------------------------------------------------------------------


def test_redis_restart_keeps_streams_open_and_loses_nothing(own_redis: RedisServer, prefix: str) -> None:
    options = {"key_prefix": prefix, "socket_timeout": 1.0, "block": 0.5, "reconnect_max": 0.3}
    broker = RedisBroker(own_redis.url, **options)  # type: ignore[arg-type]
    publisher = RedisBroker(own_redis.url, **options)  # type: ignore[arg-type]
    try:
        sub = broker.subscribe(["a"])
        e0 = publisher.publish("a", Event("e0"))
        assert sub.get(10) == e0
        own_redis.stop()
        with pytest.raises(BrokerUnavailable, match="unreachable") as raised:
            publisher.publish("a", Event("lost"))
        assert isinstance(raised.value, ConnectionError)
        assert wait_until(lambda: not broker.connected)
        assert sub.get(0.3) is None  # the stream waits (heartbeats go on), it does not end
        with broker.subscribe(["a"], e0.id) as refused:
            with pytest.raises(SubscriptionEnded) as ended:
                refused.get(1)
            assert ended.value.reason == "unavailable" and list(refused.replay) == []
        waiting = broker.subscribe(["a"])  # no replay needed: it waits for Redis
        assert waiting.get(0.2) is None
        own_redis.start()
        # The same publisher, whose pooled connections died with the server: no error.
        e1 = publisher.publish("a", Event("e1"))
        e2 = publisher.publish("a", Event("e2"))
        assert drain(sub, 2) == [e1, e2]
        assert drain(waiting, 2) == [e1, e2]
        assert sub.get(0.2) is None and waiting.get(0) is None
        assert broker.connected
        # Persisted: a client of before the restart resumes exactly.
        with broker.subscribe(["a"], e0.id) as resumed:
            assert list(resumed.replay) == [e1, e2] and resumed.gap == ()
        sub.close()
    finally:
        broker.close()
        publisher.close()


@pytest.mark.parametrize("own_redis", [False], indirect=True)
def test_redis_restarted_empty_ends_streams_and_replay_reports_the_gap(
    own_redis: RedisServer, prefix: str
) -> None:
    options = {"key_prefix": prefix, "socket_timeout": 1.0, "block": 0.5, "reconnect_max": 0.3}
    broker = RedisBroker(own_redis.url, **options)  # type: ignore[arg-type]
    try:
        sub = broker.subscribe(["a", "b"])
        e0 = broker.publish("a", Event("e0"))
        assert sub.get(10) == e0
        own_redis.stop()
        own_redis.start()  # no persistence: every event is gone
        e1 = broker.publish("b", Event("e1"))
        ended = None
        for _ in range(100):  # bounded: the listener reconnects within reconnect_max
            try:
                assert sub.get(0.2) is None
            except SubscriptionEnded as exc:
                ended = exc
                break
        assert ended is not None and ended.reason == "closed"
        with broker.subscribe(["a", "b"], e0.id) as resumed:
            assert resumed.gap == ("a", "b") and list(resumed.replay) == [e1]
            e2 = broker.publish("a", Event("e2"))
            assert drain(resumed, 1) == [e2]
    finally:
        broker.close()


def test_unresponsive_redis_times_out_then_recovers(own_redis: RedisServer, prefix: str) -> None:
    options = {"key_prefix": prefix, "socket_timeout": 0.5, "block": 0.3, "reconnect_max": 0.3}
    broker = RedisBroker(own_redis.url, **options)  # type: ignore[arg-type]
    try:
        sub = broker.subscribe(["a"])
        e0 = broker.publish("a", Event("e0"))
        assert sub.get(10) == e0
        own_redis.pause()  # accepts connections, answers nothing
        try:
            with pytest.raises(BrokerUnavailable):
                broker.publish("a", Event("maybe"))  # a timeout: it may still be stored
            assert sub.get(0.5) is None
        finally:
            own_redis.resume()
        e1 = broker.publish("a", Event("e1"))
        got = []
        for _ in range(3):
            event = sub.get(10)
            assert event is not None
            got.append(event)
            if event == e1:
                break
        assert got[-1] == e1 and [e.data for e in got[:-1]] in ([], ["maybe"])
    finally:
        broker.close()


def test_unix_socket_url(own_redis: RedisServer, prefix: str) -> None:
    broker = broker_from_url(f"unix://{own_redis.socket}?db=0")
    assert isinstance(broker, RedisBroker)
    try:
        with broker.subscribe([prefix]) as sub:
            e = broker.publish(prefix, Event("over a unix socket"))
            assert sub.get(10) == e
    finally:
        broker.close()


def test_listener_does_not_block_gevent(store_url: str, prefix: str) -> None:
    """Under gevent's monkey-patching the listener is a greenlet: waits yield, events arrive."""
    pytest.importorskip("gevent")
    script = textwrap.dedent(
        """
        import sys
        from gevent import monkey; monkey.patch_all()
        import gevent
        from sseproto import Event
        from sseproto.brokers import SubscriptionEnded
        from sseproto.brokers.redis import RedisBroker
        broker = RedisBroker(sys.argv[1], key_prefix=sys.argv[2], block=0.2)
        sub = broker.subscribe(["a"])
        other = broker.subscribe(["b"])
        got = {"ticks": 0}
        def reader():
            got["events"] = [sub.get(10), sub.get(10)]
            try:
                sub.get(10)
            except SubscriptionEnded as exc:
                got["end"] = exc.reason
        def idle():
            got["idle"] = other.get(0.3)
        def ticker():
            for _ in range(20):
                gevent.sleep(0.01)
                got["ticks"] += 1
        g = gevent.spawn(reader); h = gevent.spawn(idle); t = gevent.spawn(ticker)
        gevent.sleep(0.05)
        published = [broker.publish("a", Event("x")), broker.publish("a", Event("y"))]
        gevent.joinall([h, t], timeout=10)
        sub.close()
        gevent.joinall([g], timeout=10)
        assert got["idle"] is None and got["ticks"] == 20, got
        assert got["events"] == published and got["end"] == "closed", got
        broker.close()
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script, store_url, prefix], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.stdout.strip() == "ok", out.stderr
