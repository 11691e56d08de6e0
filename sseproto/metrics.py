"""Prometheus metrics of stream endpoints (the ``metrics`` extra: ``pip install 'sseproto[metrics]'``).

Off unless asked for: ``EventStreamApp(broker, metrics=Metrics(app="chat"))``, or
``SSE(app, metrics=True)`` / ``SSE_METRICS = True`` in Flask (labelled with the Flask
app's name). Every series carries an ``app`` label, so several endpoints share one
registry (by default prometheus_client's ``REGISTRY``, which its ``make_wsgi_app()``
and ``generate_latest()`` serve):

- ``sseproto_streams_open`` (gauge): streams open now.
- ``sseproto_events_published_total``: events published to the endpoint's broker from
  this process.
- ``sseproto_deliveries_total``: events written to streams (replayed and live; counted
  once per chunk written).
- ``sseproto_disconnects_total{reason}``: streams ended, by :data:`DISCONNECT_REASONS`.
- ``sseproto_replay_gaps_total``: ``sseproto.gap`` events sent.
- ``sseproto_refusals_total{reason}``: stream requests turned away, ``busy`` (past
  ``max_connections``: the 503 or the ``retry:``-only stream) or ``draining``.

Only this module imports prometheus_client, and nothing in sseproto imports this module
unless metrics are turned on.
"""

from __future__ import annotations

import threading
import weakref
from typing import NamedTuple

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
except ModuleNotFoundError as exc:  # pragma: no cover - exercised with the package blocked
    if exc.name != "prometheus_client":
        raise
    raise ImportError("sseproto.metrics needs prometheus_client: pip install 'sseproto[metrics]'") from exc

__all__ = ["DISCONNECT_REASONS", "REFUSAL_REASONS", "Metrics"]

#: Why a stream ended: ``client_gone`` (the client went away, or the server stopped
#: reading the stream), ``lagging`` (it fell ``queue_size`` events behind and was cut
#: off), ``max_duration``, ``max_bytes``, ``draining`` (the process is shutting down),
#: ``closed`` (the broker ended the subscription, e.g. ``gunicorn.drain()`` or a Redis
#: that came back empty), ``unavailable`` (a networked broker could not replay) and
#: ``finished`` (the generator of an iterable stream ended).
DISCONNECT_REASONS = ("client_gone", "lagging", "max_duration", "max_bytes", "draining", "closed",
                      "unavailable", "finished")
#: Why a stream request was turned away.
REFUSAL_REASONS = ("busy", "draining")


class _Families(NamedTuple):
    streams_open: Gauge
    published: Counter
    deliveries: Counter
    disconnects: Counter
    gaps: Counter
    refusals: Counter


_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _families(registry: CollectorRegistry) -> _Families:
    """The metric families of ``registry``, registered on first use (a name registers once)."""
    with _LOCK:
        families = _FAMILIES.get(registry)
        if families is None:
            app = ("app",)
            families = _FAMILIES[registry] = _Families(
                # livesum: under prometheus_client's multiprocess mode, the sum over live workers.
                Gauge("sseproto_streams_open", "Event streams open now", app, registry=registry,
                      multiprocess_mode="livesum"),
                Counter("sseproto_events_published", "Events published to the broker by this process",
                        app, registry=registry),
                Counter("sseproto_deliveries", "Events written to streams, replayed or live",
                        app, registry=registry),
                Counter("sseproto_disconnects", "Event streams ended, by reason", (*app, "reason"),
                        registry=registry),
                Counter("sseproto_replay_gaps", "Gap events sent: replay could not cover a Last-Event-ID",
                        app, registry=registry),
                Counter("sseproto_refusals", "Stream requests turned away, by reason", (*app, "reason"),
                        registry=registry),
            )
        return families


class Metrics:
    """The metrics of one app (the ``app`` label) in ``registry`` (default: prometheus_client's
    ``REGISTRY``). Apps sharing a registry share its metric families.

    The attributes are the labelled children (``streams_open``, ``published``,
    ``deliveries``, ``gaps``), resolved once, so counting costs one ``inc()``.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, app: str = "sseproto") -> None:
        self.registry = REGISTRY if registry is None else registry
        self.app = app
        families = _families(self.registry)
        self.streams_open = families.streams_open.labels(app)
        self.published = families.published.labels(app)
        self.deliveries = families.deliveries.labels(app)
        self.gaps = families.gaps.labels(app)
        # Every reason exported from the start (at 0), so rates work from the first scrape.
        disconnects, refusals = families.disconnects, families.refusals
        self._disconnects = {reason: disconnects.labels(app, reason) for reason in DISCONNECT_REASONS}
        self._refusals = {reason: refusals.labels(app, reason) for reason in REFUSAL_REASONS}

    def __repr__(self) -> str:
        return f"Metrics(app={self.app!r})"

    def stream_opened(self) -> None:
        self.streams_open.inc()

    def stream_closed(self, reason: str) -> None:
        """One stream ended for ``reason`` (one of :data:`DISCONNECT_REASONS`)."""
        self.streams_open.dec()
        self._disconnects[reason].inc()

    def refused(self, reason: str) -> None:
        """One stream request turned away for ``reason`` (one of :data:`REFUSAL_REASONS`)."""
        self._refusals[reason].inc()
