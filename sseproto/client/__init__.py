"""Event stream clients with a browser's EventSource semantics: reconnect, resume, stop.

:class:`EventSource` runs on ``requests`` (the ``client`` extra), :class:`AsyncEventSource`
on ``httpx`` for asyncio and trio (the ``async`` extra). Both drive the sans-IO ``Policy``
of :mod:`sseproto.client._policy`, which holds every rule of reconnection, so that they
keep the same rules; each transport is imported only when used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import ContentTypeError, EventSourceError, HTTPStatusError
from ._policy import CLOSED, CONNECTING, MAX_DELAY, MIN_FAILURE_DELAY, OPEN

if TYPE_CHECKING:
    from ._async import AsyncEventSource, aiter_events
    from ._sync import EventSource, check_response, iter_events

__all__ = [
    "CLOSED",
    "CONNECTING",
    "MAX_DELAY",
    "MIN_FAILURE_DELAY",
    "OPEN",
    "AsyncEventSource",
    "ContentTypeError",
    "EventSource",
    "EventSourceError",
    "HTTPStatusError",
    "aiter_events",
    "check_response",
    "iter_events",
]

# Where each lazily imported name lives, and the extra that brings its library.
_LAZY = {
    "AsyncEventSource": ("_async", "async"),
    "aiter_events": ("_async", "async"),
    "EventSource": ("_sync", "client"),
    "check_response": ("_sync", "client"),
    "iter_events": ("_sync", "client"),
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, extra = where
    try:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    except ModuleNotFoundError as exc:
        if exc.name not in ("requests", "urllib3", "httpx", "anyio"):
            raise
        raise ImportError(f"sseproto.client.{name} needs {exc.name}: "
                          f"pip install 'sseproto[{extra}]'") from exc
    globals()[name] = value
    return value
