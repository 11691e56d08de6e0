"""Loader of the conformance vectors in spec/vectors/*.json, shared by the tests that run them.

Every file is checked strictly (exact keys, types, kebab-case names unique across all
files, decodable hex), so a malformed vector fails loudly instead of testing nothing.
The format is described in spec/README.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

VECTOR_DIR = Path(__file__).resolve().parent.parent / "spec" / "vectors"

_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_FILE_KEYS = {"description", "vectors"}
_VECTOR_KEYS = {"name", "description", "chunks", "events", "lastEventId", "retry"}
_EVENT_KEYS = {"type", "data", "lastEventId"}


class VectorFormatError(ValueError):
    """A vector file breaks the format of spec/README.md."""


class Expected(NamedTuple):
    """One event a browser dispatches: its type, data and lastEventId."""

    type: str
    data: str
    lastEventId: str  # the DOM attribute's name, as in the JSON


@dataclass(frozen=True)
class Vector:
    """One stream (the exact byte chunks a server sends) and what a browser makes of it."""

    name: str
    description: str
    chunks: tuple[bytes, ...]
    events: tuple[Expected, ...]
    last_event_id: str
    retry: int | None  # the final reconnection time in ms; None: the client's default
    source: str  # the file it came from

    @property
    def stream(self) -> bytes:
        """All chunks joined: the whole response body."""
        return b"".join(self.chunks)


def _fail(where: str, message: str) -> VectorFormatError:
    return VectorFormatError(f"{where}: {message}")


def _chunk(value: object, where: str) -> bytes:
    if isinstance(value, str):
        data = value.encode("utf-8", "strict")
    elif isinstance(value, Mapping) and set(value) == {"hex"} and isinstance(value["hex"], str):
        text = value["hex"]
        if not re.fullmatch(r"(?:[0-9a-fA-F]{2})+", text):
            raise _fail(where, f"hex must be pairs of hex digits, got {text!r}")
        data = bytes.fromhex(text)
    else:
        raise _fail(where, f'a chunk is a string or {{"hex": "..."}}, got {value!r}')
    if not data:
        raise _fail(where, "a chunk may not be empty")
    return data


def _retry(value: object, where: str) -> int | None:
    if value is None:
        return None
    if type(value) is int and value >= 0:
        if value > 2**53:
            raise _fail(where, "a retry above 2**53 must be a string of digits (JSON numbers are doubles)")
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise _fail(where, f"retry is null, a non-negative integer or a string of digits, got {value!r}")


def _event(value: object, where: str) -> Expected:
    if not isinstance(value, Mapping) or set(value) != _EVENT_KEYS:
        raise _fail(where, f"an event has exactly the keys {sorted(_EVENT_KEYS)}, got {value!r}")
    for key in _EVENT_KEYS:
        if not isinstance(value[key], str):
            raise _fail(where, f"event {key} must be a string, got {value[key]!r}")
    if not value["type"]:
        raise _fail(where, "an event type is never empty (an empty type dispatches as message)")
    return Expected(value["type"], value["data"], value["lastEventId"])


def _vector(value: object, where: str, source: str) -> Vector:
    if not isinstance(value, Mapping):
        raise _fail(where, "a vector is an object")
    keys = set(value)
    if keys != _VECTOR_KEYS:
        missing, extra = sorted(_VECTOR_KEYS - keys), sorted(keys - _VECTOR_KEYS)
        raise _fail(where, f"missing keys {missing}, unknown keys {extra}")
    name = value["name"]
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _fail(where, f"name must be kebab-case ([a-z0-9] words joined by -), got {name!r}")
    where = f"{where} ({name})"
    if not isinstance(value["description"], str) or not value["description"].strip():
        raise _fail(where, "description must be a non-empty string")
    chunks = value["chunks"]
    if not isinstance(chunks, list) or not chunks:
        raise _fail(where, "chunks must be a non-empty list")
    events = value["events"]
    if not isinstance(events, list):
        raise _fail(where, "events must be a list")
    if not isinstance(value["lastEventId"], str):
        raise _fail(where, "lastEventId must be a string")
    return Vector(
        name=name,
        description=value["description"],
        chunks=tuple(_chunk(c, f"{where} chunk {i}") for i, c in enumerate(chunks)),
        events=tuple(_event(e, f"{where} event {i}") for i, e in enumerate(events)),
        last_event_id=value["lastEventId"],
        retry=_retry(value["retry"], where),
        source=source,
    )


def parse(document: object, source: str) -> list[Vector]:
    """The vectors of one decoded JSON document; VectorFormatError when it breaks the format."""
    if not isinstance(document, Mapping) or set(document) != _FILE_KEYS:
        raise _fail(source, f"a vector file is an object with exactly the keys {sorted(_FILE_KEYS)}")
    if not isinstance(document["description"], str) or not document["description"].strip():
        raise _fail(source, "description must be a non-empty string")
    items = document["vectors"]
    if not isinstance(items, list) or not items:
        raise _fail(source, "vectors must be a non-empty list")
    out = [_vector(item, f"{source} vector {i}", source) for i, item in enumerate(items)]
    _check_unique(out)
    return out


def _check_unique(vectors: Iterable[Vector]) -> None:
    seen: dict[str, str] = {}
    for v in vectors:
        if v.name in seen:
            raise VectorFormatError(f"vector name {v.name!r} is used twice ({seen[v.name]}, {v.source})")
        seen[v.name] = v.source


def load_file(path: Path) -> list[Vector]:
    """The vectors of one file."""
    try:
        document: Any = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise VectorFormatError(f"{path.name}: not JSON: {exc}") from None
    return parse(document, path.name)


def load_all(directory: Path = VECTOR_DIR) -> list[Vector]:
    """Every vector of every ``*.json`` file in ``directory``, names unique across files."""
    files = sorted(directory.glob("*.json"))
    if not files:
        raise VectorFormatError(f"no vector files in {directory}")
    out = [v for path in files for v in load_file(path)]
    _check_unique(out)
    return out
