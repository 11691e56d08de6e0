"""gunicorn settings for event streams: end every stream at once on shutdown, and keep
the garbage collector from pausing thousands of streams.

gunicorn lets open requests finish for ``--graceful-timeout`` seconds (30 by default)
when a worker stops, and an event stream never finishes: clients would hang on a
dying worker, and then be cut mid-stream. With this hook, SIGTERM ends every stream of
every broker in the worker cleanly (a proper last chunk); clients reconnect at once,
elsewhere, with their ``Last-Event-ID``, and the worker exits without waiting. The
hook also tunes the collector (see :func:`tune_gc`)::

    gunicorn -c python:sseproto.gunicorn -k gevent app:app

or, in your own ``gunicorn.conf.py``: ``from sseproto.gunicorn import post_worker_init``
(or a ``post_worker_init`` of your own calling :func:`drain_on_sigterm` and, if you
want it, :func:`tune_gc`).
"""

from __future__ import annotations

import gc
import signal
import threading
from types import FrameType
from typing import Any

from .brokers._base import DRAINING, LIVE

__all__ = ["drain", "drain_on_sigterm", "post_worker_init", "tune_gc"]

#: The young-generation threshold :func:`tune_gc` sets (Python's default is 700).
YOUNG_THRESHOLD = 20_000


def drain() -> int:
    """End the streams of every broker in this process (they reconnect); return how many."""
    return sum(broker.disconnect_all() for broker in list(LIVE))


def _shut_down() -> None:
    """This process is on its way out: end its streams, and turn new ones away.

    Streams of broker channels end at once; those of generators and polling functions at
    their next heartbeat. Stream requests that still reach the process (over a kept-alive
    connection) get a stream of just ``retry:``, and come back elsewhere.
    """
    DRAINING.set()
    drain()


def drain_on_sigterm() -> None:
    """Chain a SIGTERM handler that ends every stream of this process and turns new ones away."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        from gevent import monkey, spawn  # type: ignore[import-untyped]

        green = monkey.is_module_patched("threading")
    except ImportError:
        green = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        # Never block in a signal handler: under gevent it runs in the event loop, where
        # even starting a thread would raise BlockingSwitchOutError and kill the worker.
        if green:
            spawn(_shut_down)
        else:
            threading.Thread(target=_shut_down, name="sseproto-drain", daemon=True).start()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
    signal.siginterrupt(signal.SIGTERM, False)


def tune_gc(young: int = YOUNG_THRESHOLD) -> None:
    """Freeze what the app has loaded and raise the collector's young threshold to ``young``.

    Each waiting stream holds a few short-lived objects (under gevent, its wake-up
    links). With thousands of streams, every published event crosses the default
    threshold of 700 several times, so the collector runs on every event, promotes the
    waiters' objects, and soon runs full collections over the whole heap: pauses of
    tens of milliseconds for every stream (bench/README.md has the figures). Frozen
    objects are never scanned again; garbage cycles are still collected, after ``young``
    allocations instead of 700. A ``young`` below the current threshold is ignored.
    """
    if type(young) is not int or young < 1:
        raise ValueError(f"young must be a positive int, got {young!r}")
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(max(young, threshold[0]), *threshold[1:])


def post_worker_init(worker: Any) -> None:
    """gunicorn server hook: drain every broker on SIGTERM, and :func:`tune_gc`."""
    drain_on_sigterm()
    tune_gc()
