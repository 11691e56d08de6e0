"""Codec benchmark: sseproto's Decoder and Event.encode against the usual Python SSE libraries.

Decoders, fed the same pre-split chunks of bytes in one run:

- ``sseproto``: ``Decoder.feed`` per chunk.
- ``httpx-sse``: its real path without the network -- httpx's incremental UTF-8
  ``TextDecoder`` (errors="replace"), then ``SSELineDecoder``, then ``SSEDecoder`` per
  line with the trailing LF stripped, as ``EventSource.iter_sse`` does.
- ``sseclient-py``: ``SSEClient(iterator of chunks).events()``.

Encoders, building each event from its fields and producing wire bytes:
``Event(...).encode()``, flask-sse's ``str(Message(...)).encode()`` and sse-starlette's
``ServerSentEvent(...).encode()`` (its default CRLF separator).

Corpora (deterministic): (1) 100k tiny ``data: N`` events; (2) 20k ~1 KB JSON events with
``id:`` and ``event:``; (3) 5k 10-line data events with CRLF line endings; (4) corpus 2 in
1-byte and 7-byte chunks (1-byte: its first 2,000 events, else a run takes minutes);
(5) 200 events of 64 KB. Chunks are 4096 bytes unless said otherwise.

    python bench/codec.py            # full corpora, best of 5
    python bench/codec.py --quick    # corpora / 5, best of 2 (< 30 s)

Every implementation must yield the same number of events (a mismatch exits with 1). Timing
is the best of N runs (time.perf_counter, garbage collector paused), the implementations
interleaved within each run so that machine noise hits them alike.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Every library is imported here, before any timing.
import flask_sse  # noqa: E402
import sseclient  # noqa: E402
from httpx._decoders import TextDecoder  # noqa: E402
from httpx_sse._decoders import SSEDecoder, SSELineDecoder  # noqa: E402
from sse_starlette import ServerSentEvent  # noqa: E402  (the class sse_starlette.sse exposes)

from sseproto import Decoder, Event  # noqa: E402

Fields = tuple[str, str | None, str | None]  # data, event type (None: default), id


@dataclass
class Corpus:
    """One decode input: the wire bytes split into chunks, and the fields they encode."""

    key: str
    label: str
    chunks: list[bytes]
    fields: list[Fields]


# -- corpora -----------------------------------------------------------------------------

WORDS = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega café naïve 東京".split()
TYPES = ["update", "tick", "price", "status", "delta"]


def split(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def tiny_fields(n: int) -> list[Fields]:
    return [(str(i), None, None) for i in range(n)]


def json_fields(n: int, rng: random.Random) -> list[Fields]:
    out: list[Fields] = []
    for i in range(n):
        doc: dict[str, Any] = {
            "seq": i,
            "type": rng.choice(TYPES),
            "ts": 1_700_000_000 + i * 0.25,
            "user": {"id": rng.randrange(10**6), "name": " ".join(rng.choices(WORDS, k=2))},
            "values": [round(rng.random() * 1000, 3) for _ in range(12)],
            "tags": rng.choices(WORDS, k=6),
        }
        text = json.dumps(doc, ensure_ascii=False)
        doc["note"] = " ".join(rng.choices(WORDS, k=200))[: max(0, 1000 - len(text) - 12)]
        out.append((json.dumps(doc, ensure_ascii=False), rng.choice(TYPES), str(i)))
    return out


def multiline_fields(n: int, rng: random.Random) -> list[Fields]:
    return [("\n".join(" ".join(rng.choices(WORDS, k=6)) for _ in range(10)), None, None) for _ in range(n)]


def big_fields(n: int, rng: random.Random) -> list[Fields]:
    out: list[Fields] = []
    for i in range(n):
        body = json.dumps(
            {"seq": i, "blob": "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=65_500))}
        )
        out.append((body, None, None))
    return out


def wire(fields: Iterable[Fields], eol: str = "\n") -> bytes:
    """Plain wire bytes for the fields (id, then event, then data lines), independent of any encoder."""
    parts = []
    for data, event, id in fields:
        head = (f"id: {id}{eol}" if id is not None else "") + (f"event: {event}{eol}" if event else "")
        parts.append(head + "".join(f"data: {line}{eol}" for line in data.split("\n")) + eol)
    return "".join(parts).encode()


def build(scale: int) -> list[Corpus]:
    rng = random.Random(20261124)
    tiny = tiny_fields(100_000 // scale)
    js = json_fields(20_000 // scale, rng)
    multi = multiline_fields(5_000 // scale, rng)
    big = big_fields(max(200 // scale, 20), rng)
    js_wire = wire(js)
    one_byte = js[: 2_000 // scale]
    return [
        Corpus("1", f"1 tiny data: N ({len(tiny):,}), 4096 B", split(wire(tiny), 4096), tiny),
        Corpus("2", f"2 1 KB JSON+id+event ({len(js):,}), 4096 B", split(js_wire, 4096), js),
        Corpus("3", f"3 10-line CRLF ({len(multi):,}), 4096 B", split(wire(multi, "\r\n"), 4096), multi),
        Corpus("4/7", f"4 corpus 2 ({len(js):,}), 7 B chunks", split(js_wire, 7), js),
        Corpus("4/1", f"4 corpus 2 ({len(one_byte):,}), 1 B chunks", split(wire(one_byte), 1), one_byte),
        Corpus("5", f"5 64 KB events ({len(big):,}), 4096 B", split(wire(big), 4096), big),
    ]


# -- decoders: each returns the event objects it decoded (each has a ``data`` attribute) --------


def decode_ours(chunks: list[bytes]) -> list[Any]:
    decoder = Decoder()
    events: list[Event] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    decoder.end()
    return events


def decode_httpx_sse(chunks: list[bytes]) -> list[Any]:
    # EventSource.iter_sse over _iter_sse_lines over Response.iter_text, minus the generators.
    text_decoder = TextDecoder()
    line_decoder = SSELineDecoder()
    sse = SSEDecoder()
    out = []
    for chunk in chunks:
        text = text_decoder.decode(chunk)
        if text:
            for line in line_decoder.decode(text):
                event = sse.decode(line.rstrip("\n"))
                if event is not None:
                    out.append(event)
    tail = text_decoder.flush()
    for line in (line_decoder.decode(tail) if tail else []) + line_decoder.flush():
        event = sse.decode(line.rstrip("\n"))
        if event is not None:
            out.append(event)
    return out


def decode_sseclient(chunks: list[bytes]) -> list[Any]:
    return list(sseclient.SSEClient(iter(chunks)).events())


DECODERS: dict[str, Callable[[list[bytes]], list[Any]]] = {
    "sseproto": decode_ours,
    "httpx-sse": decode_httpx_sse,
    "sseclient-py": decode_sseclient,
}


# -- encoders: each returns the wire bytes of every event -----------------------------------


def encode_ours(fields: list[Fields]) -> list[bytes]:
    return [Event(data, event or "message", id).encode() for data, event, id in fields]


def encode_flask_sse(fields: list[Fields]) -> list[bytes]:
    return [str(flask_sse.Message(data, type=event, id=id)).encode() for data, event, id in fields]


def encode_sse_starlette(fields: list[Fields]) -> list[bytes]:
    return [ServerSentEvent(data, event=event, id=id).encode() for data, event, id in fields]


ENCODERS: dict[str, Callable[[list[Fields]], list[bytes]]] = {
    "sseproto": encode_ours,
    "flask-sse": encode_flask_sse,
    "sse-starlette": encode_sse_starlette,
}


# -- timing ---------------------------------------------------------------------------------


def best_of(funcs: dict[str, Callable[[Any], Any]], arg: Any, repeat: int) -> dict[str, float]:
    """Best wall time of each function over ``repeat`` rounds, interleaved."""
    best = dict.fromkeys(funcs, float("inf"))
    for _ in range(repeat):
        for name, func in funcs.items():
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter()
                func(arg)
                elapsed = time.perf_counter() - start
            finally:
                gc.enable()
            best[name] = min(best[name], elapsed)
    return best


def table(title: str, peers: list[str], rows: list[tuple[str, int, dict[str, float]]]) -> None:
    print(f"\n{title} (events/s, best of runs; ratio = sseproto / peer)")
    head = f"{'corpus':<34}" + "".join(f"{name:>15}" for name in ["sseproto", *peers])
    head += "".join(f"{'/' + name:>15}" for name in peers)
    print(head)
    print("-" * len(head))
    for label, count, times in rows:
        line = f"{label:<34}" + "".join(f"{count / times[name]:>15,.0f}" for name in ["sseproto", *peers])
        line += "".join(f"{times[name] / times['sseproto']:>14.2f}x" for name in peers)
        print(line)


def mismatch(key: str, name: str, verb: str, got: list[str], expected: list[str]) -> str:
    same = " (same count, different data)" if len(got) == len(expected) else ""
    return f"MISMATCH corpus {key}: {name} {verb} {len(got)} events, expected {len(expected)}{same}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="corpora / 5, best of 2 (< 30 s)")
    parser.add_argument("--repeat", type=int, help="runs per measurement (default 5, 2 with --quick)")
    parser.add_argument(
        "--corpus", action="append", help="only this corpus (1, 2, 3, 4/7, 4/1, 5); repeatable"
    )
    args = parser.parse_args()
    repeat = args.repeat or (2 if args.quick else 5)
    corpora = [c for c in build(5 if args.quick else 1) if not args.corpus or c.key in args.corpus]
    print(f"Python {sys.version.split()[0]}, best of {repeat}{' (quick)' if args.quick else ''}")

    # Sanity: every decoder yields the events the corpus encodes; every encoder round-trips.
    failed = False
    for corpus in corpora:
        expected = [data for data, _, _ in corpus.fields]
        for name, func in DECODERS.items():
            got = [event.data for event in func(corpus.chunks)]
            if got != expected:
                print(mismatch(corpus.key, name, "decoded", got, expected))
                failed = True
    encodable = [c for c in corpora if c.key in ("1", "2", "3", "5")]
    for corpus in encodable:
        expected = [data for data, _, _ in corpus.fields]
        for name, enc in ENCODERS.items():
            got = [event.data for event in decode_ours([b"".join(enc(corpus.fields))])]
            if got != expected:
                print(mismatch(corpus.key, name, "encoded", got, expected))
                failed = True
    print("sanity: every implementation decodes/encodes the same events" if not failed else "sanity: FAILED")
    if failed:
        return 1

    decode_rows = []
    decode_times: dict[str, dict[str, float]] = {}
    for corpus in corpora:
        times = best_of(DECODERS, corpus.chunks, repeat)
        decode_times[corpus.key] = times
        decode_rows.append((corpus.label, len(corpus.fields), times))
        print(f"  decoded corpus {corpus.key}", file=sys.stderr)
    table("Decode", ["httpx-sse", "sseclient-py"], decode_rows)

    encode_rows = []
    encode_times: dict[str, dict[str, float]] = {}
    for corpus in encodable:
        times = best_of(ENCODERS, corpus.fields, repeat)
        encode_times[corpus.key] = times
        encode_rows.append((corpus.label.rsplit(",", 1)[0], len(corpus.fields), times))
    table("Encode (build the event + wire bytes)", ["flask-sse", "sse-starlette"], encode_rows)

    def ratio(times: dict[str, float], peer: str) -> float:
        return times[peer] / times["sseproto"]

    targets = []
    if "1" in decode_times:
        targets.append(("decode tiny >= 3x httpx-sse", ratio(decode_times["1"], "httpx-sse"), 3.0))
    if "4/7" in decode_times:
        targets.append(("decode 7-byte chunks >= 3x httpx-sse", ratio(decode_times["4/7"], "httpx-sse"), 3.0))
    if "2" in decode_times:
        targets.append(("decode 1 KB JSON >= 1.5x httpx-sse", ratio(decode_times["2"], "httpx-sse"), 1.5))
    if "5" in decode_times:
        big = decode_times["5"]
        worst = min(ratio(big, p) for p in big if p != "sseproto")
        targets.append(("decode 64 KB never slower than a peer", worst, 1.0))
    if "1" in encode_times:
        targets.append(("encode tiny >= 3x sse-starlette", ratio(encode_times["1"], "sse-starlette"), 3.0))
    print("\nTargets")
    for name, value, goal in targets:
        print(f"  {name:<40} {value:6.2f}x  {'met' if value >= goal else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
