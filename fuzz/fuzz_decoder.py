"""Coverage-guided fuzzing of the Decoder with atheris (libFuzzer for Python).

    pip install atheris && python fuzz/fuzz_decoder.py -max_total_time=60

Each input is read as: two small limits (``max_line_size``, ``max_event_size``, 1..64),
then a sequence of operations chosen by the fuzzer: feed the next 0..40 bytes, or end
the connection (``end()``). Three decoders run the same operations:

- one with the small limits: only ``ProtocolError`` may escape, and its buffers stay
  within the limits (plus the chunk being fed);
- one with default limits fed the fuzzer's chunks, and one fed each connection's bytes
  whole: they must agree on every event, comment and ``last_event_id``, and on
  ``retry`` once a connection ends (chunking never changes the result).

Every decoded event must be valid as an :class:`Event` (no CR/LF in its type or id,
no NUL in its id, no CR in its data). Any other exception, or a failed check, is a
crash: libFuzzer stops and writes the input to ``crash-<sha1>``. Pass a directory to
keep the corpus between runs (an empty one is seeded with typical streams; without one a
temporary directory is); an SSE token dictionary is used unless ``-dict=`` is given.
The hypothesis tests of tests/test_decoder.py cover structured streams against a
reference model; this target explores the bytes coverage leads to.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["sseproto"]):
    from sseproto import Decoder, Event, ProtocolError
    from sseproto._event import MAX_RETRY

MAX_CHUNK = 40
# Tokens worth splicing into inputs: field names, separators, line breaks, a BOM, UTF-8.
TOKENS = [b"data:", b"data: ", b"event:", b"id:", b"id: ", b"retry:", b"retry: ", b":", b": ", b"\n",
          b"\r", b"\r\n", b"\n\n", b"\r\r", b"\xef\xbb\xbf", b"\x00", b"\xe2\x80\xa8", b"\xc3\xa9",
          b"\xf0\x9f", b" ", b"18446744073709551615", b"18446744073709551616", b"0"]


def check_event(event: Event, max_event: int | None) -> None:
    assert type(event) is Event
    assert event.event and "\r" not in event.event and "\n" not in event.event, event
    assert event.id is not None and not any(c in event.id for c in "\r\n\0"), event
    assert "\r" not in event.data, event
    assert event.retry is None or 0 <= event.retry <= MAX_RETRY, event
    if max_event is not None:
        assert len(event.data) < max_event, (event, max_event)  # the data's final LF counts too


def check_bounds(decoder: Decoder, max_line: int, max_event: int) -> None:
    """Memory stays bounded: the unfinished line(s) and the event being built."""
    assert len(decoder._buf) <= max_line + 2 * MAX_CHUNK + 2, (len(decoder._buf), max_line)
    assert sum(len(line) + 1 for line in decoder._data) <= max_event, (decoder._data, max_event)
    assert len(decoder._type) <= max_line and len(decoder._id_buffer) <= max_line
    assert "\0" not in decoder.last_event_id


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    max_line = fdp.ConsumeIntInRange(1, 64)
    max_event = fdp.ConsumeIntInRange(1, 64)
    small = Decoder(max_line_size=max_line, max_event_size=max_event)
    chunked_comments: list[str] = []
    whole_comments: list[str] = []
    chunked = Decoder(on_comment=chunked_comments.append)
    whole = Decoder(on_comment=whole_comments.append)
    chunked_events: list[Event] = []
    whole_events: list[Event] = []
    connection = b""
    while fdp.remaining_bytes():
        size = fdp.ConsumeIntInRange(0, MAX_CHUNK + 1)
        if size > MAX_CHUNK:  # the connection ends
            for decoder in (small, chunked):
                try:
                    decoder.end()
                except ProtocolError:
                    assert decoder is small  # only the small limits can be exceeded
            whole_events += whole.feed(connection)
            whole.end()
            connection = b""
            assert chunked.retry == whole.retry
            check_bounds(small, max_line, max_event)
            continue
        chunk = fdp.ConsumeBytes(size)
        connection += chunk
        try:
            for event in small.feed(chunk):
                check_event(event, max_event)
        except ProtocolError:
            pass
        check_bounds(small, max_line, max_event)
        for event in chunked.feed(chunk):
            check_event(event, None)
            chunked_events.append(event)
    whole_events += whole.feed(connection)
    assert chunked_events == whole_events
    assert chunked_comments == whole_comments
    assert chunked.last_event_id == whole.last_event_id
    for decoder in (small, chunked, whole):
        try:
            decoder.end()
        except ProtocolError:
            assert decoder is small
    # Compared after end(): complete lines after a chunk's last blank line wait for the
    # next chunk (they cannot dispatch), so a retry field there shows up one chunk late.
    assert chunked.retry == whole.retry


# Streams a server would send, as seeds: a regular expression (the decoder's fast paths)
# gives coverage no gradient, so the shapes that take those paths are given.
SEEDS = [
    b"id: 1\ndata: x\n\n",
    b"id: 2\nevent: update\ndata: " + b"v" * 300 + b"\n\n",
    b"data: " + b"w" * 300 + b"\n\ndata: z\n\n",
    b"data: a\n\ndata: b\n\ndata: c\n\n: ping\n",
    b"event: t\ndata: a\ndata: b\n\nid\ndata\n\n",
    b"\xef\xbb\xbfdata: bom\r\n\r\n",
    b"retry: 1500\n: comment\ndata: x\r\rdata: y\r\n\r\nretry\n",
    b"id: a\x00b\ndata: nul\n\nid: \ndata:no space\n\n",
    b"data: \xe2\x82\xac \xf0\x9f\x8e\x89 \xff\xfe\n\n",
]


def encode_input(max_line: int, max_event: int, pieces: list[bytes | None]) -> bytes:
    """The fuzzer input that replays ``pieces`` (None: the connection ends) under those limits.

    FuzzedDataProvider takes bytes from the front and integers from the back.
    """
    ints = [max_line - 1, max_event - 1] + [MAX_CHUNK + 1 if p is None else len(p) for p in pieces]
    return b"".join(p for p in pieces if p) + bytes(reversed(ints))


def seed(directory: Path) -> None:
    """Write the seeds, whole and in small pieces, into an empty corpus directory."""
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        return
    for n, stream in enumerate(SEEDS):
        whole = [stream[i : i + MAX_CHUNK] for i in range(0, len(stream), MAX_CHUNK)]
        small = [stream[i : i + 3] for i in range(0, len(stream), 3)]
        for kind, pieces in (("whole", whole), ("small", small)):
            data = encode_input(64, 64, [*pieces, None, *pieces[:2]])
            (directory / f"seed-{n}-{kind}").write_bytes(data)


def main() -> None:
    args = sys.argv
    if not any(arg.startswith("-dict=") for arg in args):
        dictionary = tempfile.NamedTemporaryFile("w", suffix=".dict", delete=False)
        with dictionary:
            for token in TOKENS:
                dictionary.write('"' + "".join(f"\\x{b:02x}" for b in token) + '"\n')
        args = [*args, f"-dict={dictionary.name}"]
    corpora = [arg for arg in args[1:] if not arg.startswith("-")]
    if not corpora:
        corpora = [tempfile.mkdtemp(prefix="sseproto-fuzz-")]
        args = [*args, corpora[0]]
    seed(Path(corpora[0]))
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
