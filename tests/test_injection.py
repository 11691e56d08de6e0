"""No user input can forge an event or a field: not in the codec, not through a real server.

Whatever text goes into ``data``, ``event`` or ``id`` (CR, LF, NUL, U+2028, U+0085, a
BOM, lone surrogates, text that looks like fields), either it is refused with
:class:`LocalProtocolError`, or it decodes back to exactly one event with exactly those
fields. The same holds end to end: hostile data published over HTTP to a server
(tests/apps/fault_app.py under gunicorn, in-memory and Redis brokers) reaches a
subscriber as one event per accepted publish, and nothing else.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import Server, running
from strategies import splits

from sseproto import Decoder, Event, LocalProtocolError, encode_comment
from sseproto.brokers import Broker, MemoryBroker

# Pieces of text that break lines, end events or look like fields, and characters UTF-8
# cannot encode (lone surrogates).
ATOMS = ["\r", "\n", "\r\n", "\n\n", "\r\r", "\0", "\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\ufeff",
         "\ud800", "\udfff", ":", " ", "data: forged", "id: 666", "event: evil", "retry: 1", "é", "𝄞"]
hostile = st.lists(st.one_of(st.sampled_from(ATOMS), st.text(max_size=4)), max_size=8).map("".join)


def refusal(data: str, event: str, id: str | None) -> str | None:
    """Why the format must refuse these fields, or None if it can carry them."""
    if event != "message" and (not event or "\r" in event or "\n" in event):
        return "event is empty or holds CR or LF"
    if id is not None and ("\r" in id or "\n" in id or "\0" in id):
        return "id holds CR, LF or NUL"
    if any("\ud800" <= ch <= "\udfff" for ch in data + event + (id or "")):
        return "lone surrogate"
    return None


def lf(text: str) -> str:
    """``text`` with CRLF and CR as LF: what a data field's line breaks come back as."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=hostile, event=st.one_of(st.just("message"), hostile), id=st.one_of(st.none(), hostile),
       chunking=st.data())
def test_no_field_value_forges_an_event_or_field(data: str, event: str, id: str | None,
                                                  chunking: st.DataObject) -> None:
    reason = refusal(data, event, id)
    try:
        wire = Event(data, event, id).encode()
    except LocalProtocolError:
        assert reason is not None
        return
    assert reason is None, reason
    # Between two plain events of a stream, fed in arbitrary pieces: exactly the three
    # events come out, and the id does not leak into the event before.
    stream = b"id: before\ndata: a\n\n" + wire + b"data: after\n\n"
    decoder = Decoder()
    got: list[Event] = []
    for piece in chunking.draw(splits(stream)):
        got += decoder.feed(piece)
    got += decoder.end()
    own_id = "before" if id is None else id
    assert got == [Event("a", "message", "before"), Event(lf(data), event, own_id),
                   Event("after", "message", own_id)]


@settings(max_examples=300)
@given(text=hostile)
def test_no_comment_forges_an_event(text: str) -> None:
    try:
        wire = encode_comment(text)
    except LocalProtocolError:
        assert any("\ud800" <= ch <= "\udfff" for ch in text)
        return
    comments: list[str] = []
    decoder = Decoder(on_comment=comments.append)
    assert decoder.feed(wire + b"data: x\n\n") == [Event("x", "message", "")]
    assert comments == lf(text).split("\n")


# -- through a real server ----------------------------------------------------------------

FIXED = ["\r", "\n", "\r\n", "\n\n", "data: forged\n\n", "\r\rid: 666\r\r", "id: 1\nevent: x\ndata: y\n\n",
         "\0", "a\0b", "\u2028", "\u2029", "\u0085", "\ufeff", "\ufeffdata: x", ":comment\n\n", "retry: 1\n",
         " leading", "trailing \n", "\ud800", "x\udfffy", "é€𝄞", "\0\n\0", "event: x\r\ndata: y\r\n\r\n", "",
         ":", "data:", "\n" * 50, "\r" * 50]


def hostile_publishes(seed: int, n: int) -> list[dict[str, str | None]]:
    """Fixed hostile values as data, event and id, then ``n`` random ones (seeded)."""
    rng = random.Random(seed)
    items: list[dict[str, str | None]] = [{"data": text} for text in FIXED]
    items += [{"data": "x", "event": text} for text in FIXED]
    items += [{"data": "x", "id": "own-" + text} for text in FIXED]
    for _ in range(n):
        def pick() -> str:
            return "".join(rng.choice(ATOMS) for _ in range(rng.randint(0, 6)))
        items.append({"data": pick(), "event": rng.choice([None, pick()]),
                      "id": rng.choice([None, "own" + pick()])})
    return items


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def hostile_server(request: pytest.FixtureRequest) -> Iterator[tuple[Server, str]]:
    url = None if request.param == "memory" else str(request.getfixturevalue("redis_url"))
    with running("gunicorn-gthread", url, threads=8) as server:
        yield server, request.param


@pytest.mark.timeout(60)
def test_hostile_publishes_arrive_as_one_event_each(hostile_server: tuple[Server, str]) -> None:
    server, broker = hostile_server
    channel = "inject-" + uuid.uuid4().hex[:8]
    response = requests.get(f"{server.url}/sse/stream?channel={channel}", stream=True, timeout=(5, 10))
    try:
        assert response.status_code == 200
        chunks = response.iter_content(chunk_size=None)
        decoder = Decoder()
        assert decoder.feed(next(chunks)) == []  # retry: first
        expected: list[Event] = []
        refused = 0
        for item in hostile_publishes(seed=3, n=150):
            data, event, id = item["data"] or "", item.get("event"), item.get("id")
            reply = server.publish(data, channel, event=event, id=id)
            reason = refusal(data, event or "message", id)
            if reply.status_code == 400:
                assert reason is not None, (item, reply.text)
                refused += 1
                continue
            assert reply.status_code == 200 and reason is None, (item, reply.text)
            expected.append(Event(lf(data), event or "message", str(reply.json()["id"])))
        end = server.publish_ids("end", channel)[0]
        expected.append(Event("end", "message", end))
        got: list[Event] = []
        for chunk in chunks:
            got += decoder.feed(chunk)
            if (got and got[-1].id == end) or len(got) > len(expected):
                break
        print(f"\nINJECTION {server.name} {broker}: "
              f"publishes={len(expected) - 1 + refused} accepted={len(expected) - 1} refused={refused} "
              f"decoded={len(got) - 1}")
        assert got == expected
    finally:
        response.close()


@pytest.mark.parametrize("broker", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
@pytest.mark.parametrize("event", [Event("\ud800"), Event("x", "\udc00"), Event("x", id="a\udfff")])
def test_unencodable_text_is_refused_at_publish_with_a_local_error(
    request: pytest.FixtureRequest, broker: str, event: Event
) -> None:
    """Refused when published, not when a stream sends it: one bad event must not break a channel."""
    target: Broker
    if broker == "memory":
        target = MemoryBroker()
    else:
        from sseproto.brokers.redis import RedisBroker

        target = RedisBroker(str(request.getfixturevalue("redis_url")), key_prefix=f"inj{uuid.uuid4().hex}:")
    try:
        with pytest.raises(LocalProtocolError):
            target.publish("c", event)
    finally:
        target.close()
