"""The spec vectors through sseproto.Decoder, fed as given, whole, byte by byte and in random splits.

Chromium's native EventSource is the authority for every vector (tests/test_vectors_chromium.py);
this checks that our decoder agrees with it, and that the loader refuses malformed files.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from vectors import VECTOR_DIR, Expected, Vector, VectorFormatError, load_all, load_file, parse

from sseproto import Decoder

VECTORS = load_all()
SPLIT_SEEDS = range(8)


def run(chunks: list[bytes] | tuple[bytes, ...]) -> tuple[list[Expected], str, int | None]:
    """What a browser would see: the dispatched events, the final last event id and retry."""
    decoder = Decoder()
    events = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    events += decoder.end()
    seen = [Expected(e.event, e.data, e.id if e.id is not None else "") for e in events]
    return seen, decoder.last_event_id, decoder.retry


def random_splits(stream: bytes, seed: int) -> list[bytes]:
    """``stream`` cut at seeded random points, 1-byte pieces and empty chunks included."""
    rng = random.Random(seed)
    out: list[bytes] = []
    i = 0
    while i < len(stream):
        n = rng.choice((0, 1, 1, 2, 3, 5, 8, 64))
        out.append(stream[i : i + n])
        i += n
    return out


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_decoder_matches_vector(vector: Vector) -> None:
    expected = (list(vector.events), vector.last_event_id, vector.retry)
    stream = vector.stream
    ways: dict[str, list[bytes] | tuple[bytes, ...]] = {
        "given chunks": vector.chunks,
        "whole": [stream],
        "byte by byte": [stream[i : i + 1] for i in range(len(stream))],
    }
    for seed in SPLIT_SEEDS:
        ways[f"random splits (seed {seed})"] = random_splits(stream, seed)
    for how, chunks in ways.items():
        assert run(chunks) == expected, f"{vector.source} {vector.name}: {how}"


def test_enough_vectors_on_every_topic() -> None:
    per_file = Counter(v.source for v in VECTORS)
    assert sum(per_file.values()) >= 100
    topics = {"line-endings", "bom", "utf8", "fields", "event-type", "id", "retry", "comments", "dispatch",
              "chunking"}
    assert {name.removesuffix(".json") for name in per_file} >= topics
    assert all(count >= 5 for count in per_file.values()), per_file


def test_vector_files_are_canonical_json() -> None:
    """Each file is plain UTF-8 JSON with exactly the described keys (the loader checked the rest)."""
    for path in sorted(VECTOR_DIR.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        assert set(document) == {"description", "vectors"}, path.name


# -- the loader refuses malformed vectors -------------------------------------------------------


def good() -> dict[str, Any]:
    return {
        "name": "ok",
        "description": "d",
        "chunks": ["data: a\n\n"],
        "events": [{"type": "message", "data": "a", "lastEventId": ""}],
        "lastEventId": "",
        "retry": None,
    }


def test_loader_accepts_a_good_file() -> None:
    second = {**good(), "name": "two", "chunks": [{"hex": "efbbbf"}, "x"], "retry": "18446744073709551615"}
    vectors = parse({"description": "d", "vectors": [good(), second]}, "t.json")
    assert [v.name for v in vectors] == ["ok", "two"]
    assert vectors[1].chunks == (b"\xef\xbb\xbf", b"x") and vectors[1].retry == 2**64 - 1
    assert vectors[0].events == (Expected("message", "a", ""),)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Not Kebab"}, "kebab-case"),
        ({"name": "trailing-"}, "kebab-case"),
        ({"description": ""}, "description"),
        ({"chunks": []}, "non-empty list"),
        ({"chunks": [""]}, "may not be empty"),
        ({"chunks": [{"hex": "abc"}]}, "pairs of hex digits"),
        ({"chunks": [{"hex": "zz"}]}, "pairs of hex digits"),
        ({"chunks": [{"hex": "00", "text": "x"}]}, "a chunk is a string"),
        ({"chunks": [7]}, "a chunk is a string"),
        ({"events": [{"type": "message", "data": "a"}]}, "exactly the keys"),
        ({"events": [{"type": "", "data": "a", "lastEventId": ""}]}, "never empty"),
        ({"events": [{"type": "message", "data": 1, "lastEventId": ""}]}, "must be a string"),
        ({"lastEventId": None}, "lastEventId"),
        ({"retry": -1}, "retry"),
        ({"retry": 1.5}, "retry"),
        ({"retry": True}, "retry"),
        ({"retry": "12a"}, "retry"),
        ({"retry": 2**53 + 1}, "string of digits"),
        ({"extra": 1}, "unknown keys ['extra']"),
    ],
)
def test_loader_rejects_a_bad_vector(change: dict[str, Any], message: str) -> None:
    with pytest.raises(VectorFormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse({"description": "d", "vectors": [{**good(), **change}]}, "t.json")


@pytest.mark.parametrize("key", ["name", "description", "chunks", "events", "lastEventId", "retry"])
def test_loader_rejects_a_missing_key(key: str) -> None:
    vector = good()
    del vector[key]
    with pytest.raises(VectorFormatError, match=f"missing keys \\['{key}'\\]"):
        parse({"description": "d", "vectors": [vector]}, "t.json")


@pytest.mark.parametrize(
    "document",
    [[], {"vectors": []}, {"description": "d", "vectors": []}, {"description": "d", "vectors": [], "x": 1}],
)
def test_loader_rejects_a_bad_file(document: object) -> None:
    with pytest.raises(VectorFormatError):
        parse(document, "t.json")


def test_loader_rejects_duplicate_names(tmp_path: Path) -> None:
    with pytest.raises(VectorFormatError, match="used twice"):
        parse({"description": "d", "vectors": [good(), good()]}, "t.json")
    for stem in ("a", "b"):  # the same name in two files
        (tmp_path / f"{stem}.json").write_text(json.dumps({"description": "d", "vectors": [good()]}))
    with pytest.raises(VectorFormatError, match="used twice"):
        load_all(tmp_path)


def test_loader_rejects_invalid_json_and_empty_dirs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(VectorFormatError, match="not JSON"):
        load_file(bad)
    with pytest.raises(VectorFormatError, match="no vector files"):
        load_all(tmp_path / "missing")
