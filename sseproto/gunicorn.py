"""gunicorn settings for event streams: on shutdown, end every stream at once.

gunicorn lets open requests finish for ``--graceful-timeout`` seconds (30 by default)
when a worker stops, and an event stream never finishes: clients would hang on a
dying worker, and then be cut mid-stream. With this hook, SIGTERM ends every stream of
every broker in the worker cleanly (a proper last chunk); clients reconnect at once,
elsewhere, with their ``Last-Event-ID``, and the worker exits without waiting::

    gunicorn -c python:sseproto.gunicorn -k gevent app:app

or, in your own ``gunicorn.conf.py``: ``from sseproto.gunicorn import post_worker_init``.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from .brokers._base import LIVE

__all__ = ["drain", "post_worker_init"]


def drain() -> int:
    """End the streams of every broker in this process (they reconnect); return how many."""
    return sum(broker.disconnect_all() for broker in list(LIVE))


def post_worker_init(worker: Any) -> None:
    """gunicorn server hook: chain a SIGTERM handler that drains every broker."""
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
            spawn(drain)
        else:
            threading.Thread(target=drain, name="sseproto-drain", daemon=True).start()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
    signal.siginterrupt(signal.SIGTERM, False)
