"""The JavaScript polyfill, checked without a browser: syntax, size, build, parser vectors.

Runs Node (the npm devDependencies come from ``npm ci --prefix js``); a missing Node or
node_modules fails in CI and skips elsewhere, like every real part.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, missing

from sseproto import Decoder

JS = ROOT / "js"
STATIC = ROOT / "sseproto" / "static"
SIZE_BUDGET = 3072  # bytes of the minified build, gzipped


def node(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a Node script of js/ and return its completed process (output captured)."""
    exe = shutil.which("node")
    if exe is None:
        missing("node")
        raise AssertionError  # unreachable: missing() fails or skips
    if not (JS / "node_modules" / "acorn").is_dir() or not (JS / "node_modules" / "terser").is_dir():
        missing("the polyfill's npm devDependencies (npm ci --prefix js)")
    return subprocess.run(
        [exe, *map(str, args)], cwd=JS, capture_output=True, text=True, timeout=60, check=False
    )


def test_source_and_minified_build_parse_as_es3_and_es5() -> None:
    result = node("test/syntax.mjs", JS / "eventsource.js", STATIC / "eventsource.min.js")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok ES") == 4


def test_minified_build_fits_the_size_budget() -> None:
    size = len(gzip.compress((STATIC / "eventsource.min.js").read_bytes(), 9))
    assert size <= SIZE_BUDGET, f"eventsource.min.js is {size} bytes gzipped, over {SIZE_BUDGET}"


def test_built_copies_match_a_fresh_build() -> None:
    result = node("build.mjs", "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (STATIC / "eventsource.js").read_bytes() == (JS / "eventsource.js").read_bytes()


def test_parser_passes_the_spec_vectors() -> None:
    result = node("test/vectors.mjs", ROOT / "spec" / "vectors")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    assert " passed, 0 failed" in result.stdout


@pytest.mark.parametrize("script", ["eventsource.js", "../sseproto/static/eventsource.min.js"])
def test_timing_and_transport_rules_with_a_fake_window(script: str) -> None:
    result = node("test/unit.mjs", script)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    passed = re.search(r"^# pass (\d+)$", result.stdout, re.M)
    assert "# fail 0" in result.stdout and passed is not None and int(passed[1]) >= 10


# Pieces of an event stream, weighted toward the corners where parsers differ.
_NAMES = ["data", "data", "data", "id", "event", "retry", "dat", "Data", "", "data ", "x"]
_VALUES = [
    "",
    " ",
    "  two",
    "a",
    " b:c",
    "é",
    "\u2028",
    "0",
    "007",
    "12",
    "1a",
    "-1",
    "\uff11",
    "18446744073709551615",
    "18446744073709551616",
    "1844674407370955161",
    "0018446744073709551615",
    "99999999999999999999",
    "a\0b",
    "\ufeff",
    "😀",
]
_ENDS = [b"\n", b"\r", b"\r\n", b"\n"]
_RAW = [
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe0\x80\xaf",
    b"\x80",
]


def _random_stream(rng: random.Random) -> list[bytes]:
    out = bytearray(rng.choice([b"", b"", b"\xef\xbb\xbf", b"\xef\xbb\xbf\xef\xbb\xbf"]))
    for _ in range(rng.randrange(1, 14)):
        kind = rng.random()
        if kind < 0.25:
            out += rng.choice(_ENDS)  # a blank line: dispatch
        elif kind < 0.27:
            out += b":" + rng.choice(_VALUES).encode() + rng.choice(_ENDS)
        elif kind < 0.35:
            out += rng.choice(_RAW)
        else:
            name = rng.choice(_NAMES)
            sep = rng.choice([":", ": ", ":  ", ""]) if name else ":"
            out += (name + sep + rng.choice(_VALUES)).encode() + rng.choice(_ENDS)
    cuts = sorted(rng.sample(range(1, len(out)), min(3, len(out) - 1))) if len(out) > 1 else []
    return [bytes(out[a:b]) for a, b in zip([0, *cuts], [*cuts, len(out)], strict=True)]


def _vector(name: str, chunks: list[bytes]) -> dict[str, object]:
    """The expected outcome of one connection, as the Python decoder (Chromium's rules) sees it."""
    decoder = Decoder()
    events = [e for chunk in chunks for e in decoder.feed(chunk)] + decoder.end()
    return {
        "name": name,
        "chunks": [{"hex": c.hex()} for c in chunks],
        "events": [{"type": e.event, "data": e.data, "lastEventId": e.id} for e in events],
        "lastEventId": decoder.last_event_id,
        "retry": decoder.retry,
    }


def test_parser_agrees_with_the_python_decoder_on_random_streams(tmp_path: Path) -> None:
    rng = random.Random(20240601)
    vectors = [_vector(f"random-{i}", _random_stream(rng)) for i in range(800)]
    assert sum(len(v["events"]) for v in vectors) > 200  # type: ignore[misc, arg-type]
    (tmp_path / "random.json").write_text(json.dumps({"description": "random", "vectors": vectors}))
    result = node("test/vectors.mjs", tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    assert "800 passed, 0 failed" in result.stdout


def test_own_utf8_decoder_matches_python_on_random_bytes(tmp_path: Path) -> None:
    rng = random.Random(99)
    alphabet = [b for b in range(256) if b not in (10, 13)]
    high = [b for b in alphabet if b >= 0x80] * 3  # mostly bytes that start or continue sequences
    vectors = []
    for i in range(300):
        body = bytes(
            rng.choice(high if rng.random() < 0.8 else alphabet) for _ in range(rng.randrange(1, 24))
        )
        wire = b"data: " + body + b"\n\n"
        cuts = sorted(rng.sample(range(1, len(wire)), 2))
        vectors.append(_vector(f"bytes-{i}", [wire[: cuts[0]], wire[cuts[0] : cuts[1]], wire[cuts[1] :]]))
    assert sum("\ufffd" in v["events"][0]["data"] for v in vectors) > 200  # type: ignore[index]
    (tmp_path / "bytes.json").write_text(json.dumps({"description": "bytes", "vectors": vectors}))
    result = node("test/vectors.mjs", tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    assert "300 passed, 0 failed" in result.stdout


@pytest.mark.parametrize(
    ("chunks", "data"),
    [
        ([b"data: \xe2\x82", b"\xac\n\n"], "\u20ac"),  # a sequence split across chunks
        ([b"data: \xe2\x82\n\n"], "\ufffd"),  # truncated: one U+FFFD for the maximal subpart
        ([b"data: \xf0\x9f\x98\x80\n\n"], "\U0001f600"),  # a surrogate pair in JS
        ([b"data: \xed\xa0\x80\n\n"], "\ufffd\ufffd\ufffd"),  # an encoded surrogate
    ],
)
def test_own_utf8_decoder_replaces_like_python(tmp_path: Path, chunks: list[bytes], data: str) -> None:
    vector = _vector("utf8", chunks)
    assert vector["events"] == [{"type": "message", "data": data, "lastEventId": ""}]
    (tmp_path / "utf8.json").write_text(json.dumps({"description": "utf8", "vectors": [vector]}))
    result = node("test/vectors.mjs", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
