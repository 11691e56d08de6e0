"""Streams we encode parse identically in a peer's client (sseclient-py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import events, splits

from sseproto import Decoder, Event

sseclient = __import__("sseclient")


def peer_decode(chunks: list[bytes]) -> list[tuple[str, str, str]]:
    return [(e.event, e.data, e.id or "") for e in sseclient.SSEClient(iter(chunks)).events()]


# sseclient-py splits lines with str.splitlines semantics on some versions and does not
# implement the id-with-NUL rule; compare on what both implement as the standard says.
_peer_safe_text = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30)
_peer_events = st.builds(
    Event,
    data=st.lists(_peer_safe_text, max_size=4).map("\n".join),
    event=st.one_of(st.just("message"), _peer_safe_text.filter(lambda s: s.strip() == s and s != "")),
    id=st.one_of(st.none(), _peer_safe_text.filter(lambda s: s.strip() == s and s != "")),
    retry=st.none(),
)


@settings(max_examples=200)
@given(st.lists(_peer_events, min_size=1, max_size=10), st.data())
def test_sseclient_reads_what_we_write(evs: list[Event], data: st.DataObject) -> None:
    wire = b"".join(e.encode() for e in evs)
    chunks = data.draw(splits(wire))
    # sseclient-py reports only the id an event carries itself; compare on that.
    assert peer_decode(chunks) == [(e.event, e.data, e.id or "") for e in evs]
    assert [(e.event, e.data) for e in Decoder().feed(wire)] == [(e.event, e.data) for e in evs]


def test_sseclient_sees_multiline_and_types() -> None:
    wire = Event("a\nb\r\nc", event="upd", id="1").encode() + Event("", id="2").encode()
    assert peer_decode([wire]) == [("upd", "a\nb\nc", "1"), ("message", "", "2")]
    ours = [(e.event, e.data, e.id) for e in Decoder().feed(wire)]
    assert ours == [("upd", "a\nb\nc", "1"), ("message", "", "2")]


def test_generated_events_also_decode_here() -> None:
    # The strategies the other tests use produce streams we decode without error.
    @settings(max_examples=50)
    @given(st.lists(events, max_size=5))
    def check(evs: list[Event]) -> None:
        Decoder().feed(b"".join(e.encode() for e in evs))

    check()
