"""Hypothesis strategies shared by the protocol tests."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import strategies as st

from sseproto import Event
from sseproto._event import MAX_RETRY

# Text that UTF-8 can carry (no lone surrogates); CR/LF/CRLF and look-alikes are common.
_tricky = st.sampled_from(["\n", "\r", "\r\n", "\u2028", "\x0b", "\x0c", "\ufeff", ":", " ", "\0", "data: x"])
text = st.lists(
    st.one_of(st.text(st.characters(exclude_categories=("Cs",)), max_size=8), _tricky), max_size=6
).map("".join)
single_line = text.map(lambda s: s.replace("\r", "").replace("\n", ""))

events = st.builds(
    Event,
    data=text,
    event=st.one_of(st.just("message"), single_line.filter(bool)),
    id=st.one_of(st.none(), single_line.map(lambda s: s.replace("\0", ""))),
    retry=st.one_of(st.none(), st.integers(0, MAX_RETRY)),
)


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary points (1-byte pieces included)."""
    if not data:
        return [data]
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=min(len(data), 40))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(bounds) if b > a]
