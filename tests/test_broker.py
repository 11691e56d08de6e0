"""The broker interface, and the in-memory broker: ids, replay, gaps, lagging subscribers, waits.

The tests taking ``make`` are the contract every broker keeps: they run on the in-memory
broker and on the Redis broker (real redis-server and valkey-server processes). tests/test_redis_broker.py has
what only the Redis broker does.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import STORES, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st

from sseproto import Event
from sseproto.brokers import Broker, MemoryBroker, SubscriptionEnded, broker_from_url


@pytest.fixture(params=["memory", *(pytest.param(kind, marks=pytest.mark.redis) for kind in STORES)])
def make(request: pytest.FixtureRequest) -> Iterator[Callable[..., Broker]]:
    """A factory of brokers of one kind (Redis broker: on the session's redis-server or
    valkey-server, with keys of this test only)."""
    made: list[Broker] = []
    if request.param == "memory":
        cls: Callable[..., Broker] = MemoryBroker
    else:
        from sseproto.brokers.redis import RedisBroker

        url, prefix = request.getfixturevalue(f"{request.param}_url"), f"t{uuid.uuid4().hex[:12]}:"
        cls = functools.partial(RedisBroker, url, key_prefix=prefix)

    def factory(**options: Any) -> Broker:
        made.append(cls(**options))
        return made[-1]

    yield factory
    for broker in made:
        broker.close()


def drain(sub: object, n: int) -> list[Event]:
    """The next ``n`` live events (each within 5 s)."""
    got = []
    for _ in range(n):
        event = sub.get(5)  # type: ignore[attr-defined]
        assert event is not None
        got.append(event)
    return got


def test_memory_broker_fits_the_interface() -> None:
    broker: Broker = MemoryBroker()
    assert isinstance(broker.publish("a", Event("x")), Event)


def test_ids_increase_across_channels() -> None:
    broker = MemoryBroker()
    ids = [int(broker.publish(ch, Event(str(i))).id or 0) for i, ch in enumerate("abab")]
    assert ids == sorted(ids) and len(set(ids)) == 4


def test_publish_keeps_an_id_it_is_given() -> None:
    broker = MemoryBroker()
    assert broker.publish("a", Event("x", id="mine")).id == "mine"
    with broker.subscribe(["a"], "mine") as sub:
        assert list(sub.replay) == [] and sub.gap == ()
    after = broker.publish("a", Event("after"))
    other = broker.publish("b", Event("other"))
    # Known on its own channel, and placing the others: nothing missed on them either.
    with broker.subscribe(["a", "b", "unused"], "mine") as sub:
        assert sub.gap == ()
        assert list(sub.replay) == [after, other]


def test_replay_is_exactly_what_came_after_the_id(make: Callable[..., Broker]) -> None:
    broker = make()
    events = [broker.publish(ch, Event(str(i), event="tick", retry=100 + i)) for i, ch in enumerate("abcab")]
    with broker.subscribe(["a", "b"], events[0].id) as sub:  # merged in id order
        assert list(sub.replay) == [events[1], events[3], events[4]] and sub.gap == ()
    with broker.subscribe(["a"], events[2].id) as sub:  # an id of a channel the stream does not read
        assert sub.gap == ("a",) and list(sub.replay) == [events[0], events[3]]
    with broker.subscribe(["a", "b"], events[-1].id) as sub:
        assert list(sub.replay) == [] and sub.gap == ()


def test_a_channel_first_used_after_the_id_missed_nothing(make: Callable[..., Broker]) -> None:
    broker = make()
    first = broker.publish("a", Event("1"))
    later = broker.publish("new", Event("2"))
    with broker.subscribe(["a", "new", "never"], first.id) as sub:
        assert list(sub.replay) == [later] and sub.gap == ()


def test_live_events_reach_every_subscriber_of_the_channel(make: Callable[..., Broker]) -> None:
    broker = make()
    broker.publish("a", Event("before"))  # published before the subscriptions: not theirs
    with broker.subscribe(["a"]) as s1, broker.subscribe(["a", "b"]) as s2, broker.subscribe(["b"]) as s3:
        e = broker.publish("a", Event("x"))
        assert s1.get(10) == e and s2.get(10) == e
        assert s3.get(0.05) is None
        assert list(s1.replay) == [] and s1.gap == ()
        assert broker.subscriber_count() == 3 and broker.subscriber_count("a") == 2


def test_a_lagging_subscriber_is_cut_off_and_others_are_not(make: Callable[..., Broker]) -> None:
    broker = make(queue_size=3)
    slow = broker.subscribe(["a"])
    fast = broker.subscribe(["a"])
    for i in range(3):
        broker.publish("a", Event(str(i)))
        assert fast.get(10) is not None
    last = broker.publish("a", Event("3"))  # the fourth unread event overflows only ``slow``
    assert fast.get(10) == last
    assert broker.subscriber_count("a") == 1
    with pytest.raises(SubscriptionEnded) as ended:
        slow.get(5)
    assert ended.value.reason == "overflow"
    fast.close()
    slow.close()
    assert broker.subscriber_count() == 0


def test_publish_never_waits_for_a_subscriber(make: Callable[..., Broker]) -> None:
    broker = make(queue_size=10)
    with broker.subscribe(["a"]) as sub:
        for i in range(300):  # nobody reads: the broker must not block
            broker.publish("a", Event(str(i)))
        assert wait_until(lambda: broker.subscriber_count("a") == 0)
        with pytest.raises(SubscriptionEnded):
            sub.get(0)


def test_close_wakes_a_waiting_get_and_disconnect_all_ends_all(make: Callable[..., Broker]) -> None:
    broker = make()
    sub = broker.subscribe(["a"])
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            sub.get(30)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.05)
    sub.close()
    t.join(10)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], SubscriptionEnded) and errors[0].reason == "closed"
    sub.close()  # idempotent
    subs = [broker.subscribe(["a", "b"]) for _ in range(3)]
    assert broker.subscriber_count() == 3
    assert broker.disconnect_all() == 3 and broker.subscriber_count() == 0
    for s in subs:
        with pytest.raises(SubscriptionEnded):
            s.get(1)
    broker.close()
    with pytest.raises(RuntimeError):
        broker.publish("a", Event("x"))
    with pytest.raises(RuntimeError):
        broker.subscribe(["a"])


def test_get_times_out_with_none() -> None:
    broker = MemoryBroker()
    with broker.subscribe(["a"]) as sub:
        assert sub.get(0.01) is None


def test_timed_gets_end_in_deadline_order_whatever_order_they_start_in() -> None:
    """One clock ends every timed wait: a short wait that starts while it sleeps towards a
    long deadline still ends first, and none ends before its time."""
    broker = MemoryBroker()
    ended: list[float] = []
    results: dict[float, tuple[object, float]] = {}

    def wait(timeout: float) -> None:
        with broker.subscribe(["quiet"]) as sub:
            start = time.monotonic()
            got = sub.get(timeout)
            results[timeout] = (got, time.monotonic() - start)
            ended.append(timeout)

    threads = []
    for timeout in (1.2, 0.6, 0.05, 0.3):
        threads.append(threading.Thread(target=wait, args=(timeout,)))
        threads[-1].start()
        time.sleep(0.01)
    for t in threads:
        t.join(10)
    assert ended == [0.05, 0.3, 0.6, 1.2]
    for timeout, (got, elapsed) in results.items():
        assert got is None and elapsed >= timeout, (timeout, got, elapsed)


def test_the_clock_thread_exits_when_no_wait_is_timed_and_comes_back() -> None:
    def clocks() -> int:
        return sum(t.name == "sseproto-clock" and t.is_alive() for t in threading.enumerate())

    broker = MemoryBroker()
    with broker.subscribe(["a"]) as sub:
        for _ in range(2):
            assert sub.get(0.05) is None
            assert wait_until(lambda: clocks() == 0, 5)
        box: list[object] = []
        waiter = threading.Thread(target=lambda: box.append(sub.get(10)))
        waiter.start()
        assert wait_until(lambda: clocks() == 1, 5)  # running while a wait is timed
        event = broker.publish("a", Event("x"))
        waiter.join(5)
        assert box == [event]
        assert wait_until(lambda: clocks() == 0, 5)


def test_timed_gets_work_in_a_forked_child() -> None:
    """A child forked while the parent waits gets its own clock (the parent's timer thread
    does not survive the fork)."""
    broker = MemoryBroker()
    waiting = broker.subscribe(["a"])

    def wait_in_parent() -> None:
        with contextlib.suppress(SubscriptionEnded):
            waiting.get(5)

    parent = threading.Thread(target=wait_in_parent)
    parent.start()
    time.sleep(0.05)

    def child(conn: Any) -> None:
        box: list[object] = []
        with MemoryBroker().subscribe(["b"]) as sub:
            t = threading.Thread(target=lambda: box.append(sub.get(0.05)), daemon=True)
            t.start()
            t.join(5)
        conn.send(box)

    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=child, args=(there,))
    proc.start()
    try:
        assert here.poll(20)
        assert here.recv() == [None]  # the child's timed get ended
    finally:
        proc.join(10)
        waiting.close()
        parent.join(10)


def test_evicted_id_is_a_gap_with_the_retained_events() -> None:
    broker = MemoryBroker(replay_size=2)
    events = [broker.publish("a", Event(str(i))) for i in range(4)]
    b = broker.publish("b", Event("b"))
    with broker.subscribe(["a", "b"], events[0].id) as sub:
        # Evicted, so known on no channel: every channel may have missed something.
        assert sub.gap == ("a", "b")
        assert list(sub.replay) == [events[2], events[3], b]
    with broker.subscribe(["a", "b"], events[1].id) as sub:  # the newest evicted: nothing missed
        assert sub.gap == ()
        assert list(sub.replay) == [events[2], events[3], b]


@pytest.mark.parametrize("last_id", ["bogus", "1", "99999999999999999999"])
def test_unknown_ids_are_gaps_on_every_channel(last_id: str) -> None:
    broker = MemoryBroker()
    e = broker.publish("a", Event("x"))
    with broker.subscribe(["a", "unused"], last_id) as sub:
        assert sub.gap == ("a", "unused")
        assert list(sub.replay) == [e]


def test_queued_events_are_still_read_after_a_close_by_the_broker() -> None:
    broker = MemoryBroker()
    sub = broker.subscribe(["a"])
    e = broker.publish("a", Event("x"))
    broker.disconnect_all()
    assert sub.get(0) == e
    with pytest.raises(SubscriptionEnded):
        sub.get(0)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        MemoryBroker(queue_size=0)
    with pytest.raises(ValueError):
        MemoryBroker(replay_size=0)
    with pytest.raises(ValueError):
        MemoryBroker().subscribe([])


def test_broker_from_url() -> None:
    assert isinstance(broker_from_url(None), MemoryBroker)
    assert broker_from_url("memory://", queue_size=5).queue_size == 5  # type: ignore[attr-defined]
    redis_broker = broker_from_url("redis://127.0.0.1:6379/0", queue_size=5)  # does not connect yet
    assert type(redis_broker).__name__ == "RedisBroker"
    assert redis_broker.queue_size == 5  # type: ignore[attr-defined]
    redis_broker.close()
    with pytest.raises(ValueError, match="unknown broker URL"):
        broker_from_url("kafka://x")


def test_subscribing_while_publishing_loses_and_repeats_nothing() -> None:
    """Replay snapshot and live queue meet exactly, however the threads interleave."""
    broker = MemoryBroker(queue_size=10_000, replay_size=10_000)
    total = 3000
    published: list[Event] = []
    start = broker.publish("a", Event("start"))
    done = threading.Event()

    def publisher() -> None:
        for i in range(total):
            published.append(broker.publish("ab"[i % 2], Event(str(i))))
        done.set()

    t = threading.Thread(target=publisher)
    t.start()
    checks = 0
    while not done.is_set() and checks < 200:
        checks += 1
        sub = broker.subscribe(["a", "b"], start.id)
        seen = list(sub.replay)
        # Everything published so far is in the replay or already queued live.
        while (event := sub.get(0)) is not None:
            seen.append(event)
        sub.close()
        assert [e.data for e in seen] == [str(i) for i in range(len(seen))]
    t.join(30)
    with broker.subscribe(["a", "b"], start.id) as sub:
        assert list(sub.replay) == published


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from("abc"), min_size=1, max_size=30),
    st.data(),
)
def test_replay_of_any_subset_after_any_id(channels: list[str], data: st.DataObject) -> None:
    broker = MemoryBroker()
    published = [(ch, broker.publish(ch, Event(str(i)))) for i, ch in enumerate(channels)]
    cut = data.draw(st.integers(0, len(published) - 1))
    wanted = data.draw(st.sets(st.sampled_from("abcd"), min_size=1))
    last_channel, last = published[cut]
    with broker.subscribe(sorted(wanted), last.id) as sub:
        if last_channel in wanted:
            assert sub.gap == ()
            assert list(sub.replay) == [e for ch, e in published[cut + 1 :] if ch in wanted]
        else:  # an id of another channel is known to none of these: all retained, with a gap
            assert sub.gap == tuple(sorted(wanted))
            assert list(sub.replay) == [e for ch, e in published if ch in wanted]


def test_waits_work_under_gevent() -> None:
    """With gevent's monkey-patching, a waiting get yields to other greenlets and wakes."""
    pytest.importorskip("gevent")
    script = textwrap.dedent(
        """
        from gevent import monkey; monkey.patch_all()
        import gevent
        from sseproto import Event
        from sseproto.brokers import MemoryBroker, SubscriptionEnded
        broker = MemoryBroker()
        sub = broker.subscribe(["a"])
        other = broker.subscribe(["b"])
        got = {}
        def reader():
            got["event"] = sub.get(10)
            try:
                sub.get(10)
            except SubscriptionEnded as exc:
                got["end"] = exc.reason
        def idle():
            got["idle"] = other.get(0.05)
        g = gevent.spawn(reader); h = gevent.spawn(idle)
        gevent.sleep(0.01)
        broker.publish("a", Event("x"))
        gevent.sleep(0.01)
        sub.close()
        gevent.joinall([g, h], timeout=10)
        assert got["idle"] is None, got  # timed out while the reader waited
        assert got["event"].data == "x" and got["end"] == "closed", got
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_timed_waits_under_gevent_patched_after_import() -> None:
    """sseproto imported before gevent patches threading (gunicorn --preload): the clock
    is built with the patched module when first used, so it never blocks the event loop."""
    pytest.importorskip("gevent")
    script = textwrap.dedent(
        """
        import sseproto.brokers  # before patching, as an app preloaded by gunicorn's master
        from gevent import monkey; monkey.patch_all()
        import gevent
        from sseproto.brokers import MemoryBroker
        broker = MemoryBroker()
        ticks = []
        def ticker():
            for _ in range(30):
                gevent.sleep(0.01)
                ticks.append(1)
        def idle():
            with broker.subscribe(["a"]) as sub:
                return [sub.get(0.05), sub.get(0.05)]
        t = gevent.spawn(ticker); g = gevent.spawn(idle)
        gevent.joinall([t, g], timeout=10)
        assert g.value == [None, None] and len(ticks) == 30, (g.value, len(ticks))
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


# Resume with ids of any form, judged on the requested channels only (Hardening II).


def test_ids_the_publisher_chose_resume_exactly_whatever_their_form(make: Callable[..., Broker]) -> None:
    """Regression: numeric ids of the application's own ("1", "2": row ids) counted as
    unknown on the in-memory broker, and every resume replayed the whole history."""
    broker = make()
    rows = [broker.publish("a", Event(f"row {i}", id=str(i))) for i in range(1, 6)]
    with broker.subscribe(["a"], "3") as sub:
        assert sub.gap == () and list(sub.replay) == rows[3:]
    with broker.subscribe(["a"], "5") as sub:
        assert sub.gap == () and list(sub.replay) == []
    named = [broker.publish("a", Event(f"n{i}", id=f"row-{i:06d}")) for i in range(3)]
    with broker.subscribe(["a"], "row-000000") as sub:
        assert sub.gap == () and list(sub.replay) == named[1:]


def test_mixed_ids_place_every_requested_channel(make: Callable[..., Broker]) -> None:
    broker = make()
    published = []
    for i in range(12):
        channel = "ab"[i % 2]
        own = None if i % 3 else str(100 - i)  # the application's ids, not in order, between the broker's
        published.append((channel, broker.publish(channel, Event(str(i), id=own))))
    for cut in range(len(published)):
        last_channel, last = published[cut]
        assert last.id is not None
        for wanted in (("a",), ("b",), ("a", "b")):
            with broker.subscribe(list(wanted), last.id) as sub:
                if last_channel in wanted:
                    assert sub.gap == ()
                    assert list(sub.replay) == [e for ch, e in published[cut + 1 :] if ch in wanted]
                else:
                    assert sub.gap == wanted


def test_ids_of_other_channels_reveal_nothing(make: Callable[..., Broker]) -> None:
    """Regression: a client allowed only ``public`` located the newest ``secret`` id with
    gap/no-gap probes, because any number up to the newest id of any channel was "known"."""
    broker = make()
    first = broker.publish("public", Event("p1"))
    secrets = [broker.publish("secret", Event(f"s{i}")) for i in range(5)]
    last = broker.publish("public", Event("p2"))
    for probe in [secrets[-1].id, secrets[0].id]:
        assert probe is not None
        with broker.subscribe(["public"], probe) as sub:
            assert sub.gap == ("public",)
            assert list(sub.replay) == [first, last]
    # A probe between two public ids, or past the newest public one, is a gap alike.
    for guess in _between(first.id, last.id):
        with broker.subscribe(["public"], guess) as sub:
            assert sub.gap == ("public",)


def _between(a: str | None, b: str | None) -> list[str]:
    """Ids of the broker's form just after ``a`` and just after ``b`` (guesses a prober makes)."""
    assert a is not None and b is not None
    if "-" in a:  # Redis stream ids
        ms_a, seq_a = a.split("-")
        ms_b, seq_b = b.split("-")
        return [f"{ms_a}-{int(seq_a) + 1}", f"{ms_b}-{int(seq_b) + 1}", f"{int(ms_b) + 1}-0"]
    return [str(int(a) + 1), str(int(b) + 1), str(int(b) + 10**6)]


def test_max_replay_sends_the_newest_events_after_a_gap(make: Callable[..., Broker]) -> None:
    broker = make()
    start = broker.publish("a", Event("start"))
    published = [(ch, broker.publish(ch, Event(str(i)))) for i, ch in enumerate("abab" * 3)]
    with broker.subscribe(["a", "b"], start.id, max_replay=20) as sub:  # under the cap: exact
        assert sub.gap == () and list(sub.replay) == [e for _, e in published]
    with broker.subscribe(["a", "b"], start.id, max_replay=3) as sub:
        assert list(sub.replay) == [e for _, e in published[-3:]]
        assert sub.gap == ("a", "b")  # both lost events to the cap
    with broker.subscribe(["a", "b"], published[-4][1].id, max_replay=2) as sub:
        assert list(sub.replay) == [e for _, e in published[-2:]]
        assert sub.gap == ("b",)  # of b9, a10, b11 only b9 was cut
    with broker.subscribe(["a", "b"], "unknown", max_replay=2) as sub:
        assert sub.gap == ("a", "b") and list(sub.replay) == [e for _, e in published[-2:]]
    with broker.subscribe(["a", "b"], start.id, max_replay=0) as sub:
        assert sub.gap == ("a", "b") and list(sub.replay) == []


def test_channels_past_the_bound_are_forgotten_and_their_clients_told() -> None:
    """Regression: channels were never freed (100k channels of one event: +314 MB)."""
    broker = MemoryBroker(retained_channels=3)
    first = broker.publish("c0", Event("0"))
    for i in range(1, 6):
        broker.publish(f"c{i}", Event(str(i)))
    assert broker.channel_count == 3
    with broker.subscribe(["c0"], first.id) as sub:  # its newest event is still known: nothing missed
        assert sub.gap == () and list(sub.replay) == []
    with broker.subscribe(["c0", "c5"], "unknown") as sub:
        assert sub.gap == ("c0", "c5")
    again = broker.publish("c0", Event("back"))  # used again: older clients learn what they lost
    with broker.subscribe(["c0"], first.id) as sub:
        assert sub.gap == () and list(sub.replay) == [again]


def test_forgetting_past_the_memory_of_forgotten_channels_still_reports_gaps() -> None:
    broker = MemoryBroker(retained_channels=2)
    early = broker.publish("early", Event("x"))
    for i in range(10):  # "early" is forgotten, then so is what was remembered of it
        broker.publish(f"c{i}", Event(str(i)))
    with broker.subscribe(["early"], early.id) as sub:
        assert sub.gap == ("early",)  # cannot tell any more: say so
    late = broker.publish("c9", Event("late"))
    with broker.subscribe(["c9", "never"], late.id) as sub:  # an id newer than all that was forgotten
        assert sub.gap == () and list(sub.replay) == []


def test_channels_emptied_by_age_are_freed_when_nobody_reads_them() -> None:
    broker = MemoryBroker(replay_max_age=0.05)
    for i in range(50):
        broker.publish(f"old{i}", Event(str(i)))
    with broker.subscribe(["old49"]):
        time.sleep(0.1)
        for i in range(60):
            broker.publish("fresh", Event(str(i)))
        # Swept a few per publish: all the expired channels nobody reads are gone.
        assert broker.channel_count == 2  # "fresh" and "old49", which has a subscriber


def test_30k_channels_stay_bounded_in_memory() -> None:
    import tracemalloc

    broker = MemoryBroker(retained_channels=1000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(30_000):
            broker.publish(f"channel-{i}", Event("x"))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert broker.channel_count == 1000
    assert grown < 10 * 1024 * 1024, grown  # 1000 buffers and 1000 remembered ends, not 30k (~90 MB before)


def test_events_larger_than_max_event_size_are_refused_with_the_setting_named() -> None:
    broker = MemoryBroker(max_event_size=1000)
    broker.publish("a", Event("x" * 900))
    with pytest.raises(ValueError, match=r"max_event_size=1000 \(SSE_MAX_EVENT_SIZE"):
        broker.publish("a", Event("x" * 1000))
    with pytest.raises(ValueError, match="max_event_size"):
        broker.publish("a", Event("é" * 400 + "\n" * 50))  # 800 bytes of text, 300 of data: prefixes
    assert len(list(broker.subscribe(["a"], "unknown").replay)) == 1  # nothing refused was stored
    assert MemoryBroker().max_event_size == 1024 * 1024  # by default, below the client's limits
    MemoryBroker(max_event_size=None).publish("a", Event("x" * 2_000_000))
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError):
            MemoryBroker(max_event_size=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MemoryBroker(retained_channels=0)
    with pytest.raises(ValueError):
        MemoryBroker().subscribe(["a"], "x", max_replay=-1)


# The id published just before (GRIP's prev-id), retained or not.


def test_last_id_is_the_newest_published_id_of_either_kind(make: Callable[..., Broker]) -> None:
    """What a GRIP proxy compares ``prev-id`` with: the id published last on the channel,
    the broker's or the publisher's, and with each publish the one just before it."""
    broker: Any = make()  # last_id is optional in the Broker protocol
    assert broker.last_id("a") is None  # never published
    first, before_first = broker._publish_with_prev("a", Event("1"))
    assert before_first is None and broker.last_id("a") == first.id
    mine, before_mine = broker._publish_with_prev("a", Event("2", id="mine"))
    assert (before_mine, mine.id, broker.last_id("a")) == (first.id, "mine", "mine")
    broker.publish("b", Event("other channel"))
    after, before_after = broker._publish_with_prev("a", Event("3"))
    assert (before_after, broker.last_id("a")) == ("mine", after.id)
    again, before_again = broker._publish_with_prev("a", Event("4", id="mine"))  # a repeated id
    assert (before_again, again.id, broker.last_id("a")) == (after.id, "mine", "mine")
    assert broker.last_id("never") is None


@pytest.mark.parametrize("how", ["age", "bytes", "forgotten"])
@pytest.mark.parametrize("own_id", [False, True], ids=["broker-id", "chosen-id"])
def test_last_id_outlives_the_event_in_the_replay_buffer(how: str, own_id: bool) -> None:
    """Regression: GRIP's prev-id was the newest event still *retained*: once it aged out
    (or was evicted by size, or its channel forgotten) a publish went without prev-id and
    a hold without a position, so Pushpin never recovered what such a stream missed."""
    options = {"age": {"replay_max_age": 0.05}, "bytes": {"replay_max_bytes": 100},
               "forgotten": {"retained_channels": 1}}[how]
    broker = MemoryBroker(**options)  # type: ignore[arg-type]
    gone = broker.publish("a", Event("x" * (200 if how == "bytes" else 1), id="row-1" if own_id else None))
    if how == "age":
        time.sleep(0.1)
    elif how == "forgotten":
        broker.publish("b", Event("pushes a out"))
    with broker.subscribe(["a"], "unknown") as sub:
        assert list(sub.replay) == []  # no longer retained...
    assert broker.last_id("a") == gone.id  # ...yet still the last published there
    nxt, prev = broker._publish_with_prev("a", Event("next"))
    assert prev == gone.id and broker.last_id("a") == nxt.id
