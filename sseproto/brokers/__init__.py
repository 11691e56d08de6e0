"""Brokers: where published events go and where streams subscribe.

The interface is small on purpose, so the in-memory broker (the default) and a
networked one fit behind it alike:

- ``broker.publish(channel, event) -> Event`` stores ``event`` (giving it an id when it
  has none) and hands it to every live subscriber of ``channel``; it never blocks on a
  subscriber.
- ``broker.subscribe(channels, last_event_id=None, *, max_replay=None) -> Subscription``
  starts delivery of live events and, when ``last_event_id`` is given, collects what the
  client missed: at most ``max_replay`` events (past it, the newest ones, with a gap on
  the channels that lost some).
- ``subscription.replay`` is an iterable of the missed events in id order, possibly read
  lazily as the stream sends them (so a long history is never copied per stream); an
  iterator of it raises :class:`SubscriptionEnded` if the broker can no longer give it
  exactly, and the stream then ends so the client resumes. ``subscription.gap`` names
  the channels for which ``last_event_id`` could not be placed (unknown on the requested
  channels, or evicted), whose retained events the replay then includes in full.
- ``subscription.get(timeout)`` returns the next live event, or None when ``timeout``
  seconds pass first (the local subscriptions notice that up to a tenth of ``timeout``,
  at most 0.1 s, late), and raises :class:`SubscriptionEnded` once the subscription is
  closed, fell too far behind, or (a networked broker) could not reach its server to
  replay; ``subscription.close()`` unsubscribes (idempotent).

Optional, for :mod:`sseproto.grip`: ``broker.last_id(channel) -> str | None``, the id of
the newest event published on ``channel`` whether or not it is still retained (None:
none), which is what a GRIP proxy checks each message's ``prev-id`` against. Both brokers
here have it (and read it in the same step as each publish); for a broker without it,
GRIP falls back to the newest event a replay still holds.

An id is known only on the requested channels that stored it: an id of another channel
is a gap, so ids and gap answers reveal nothing about channels a client may not read.
Brokers refuse events larger than their ``max_event_size`` (ValueError).

Replay and live delivery never overlap and never leave a hole between them.

Brokers: :class:`MemoryBroker` (one process, the default) and
``sseproto.brokers.redis.RedisBroker`` (any number of processes on one Redis or Valkey;
needs the ``redis`` extra, imported only when used). A networked broker raises
:class:`BrokerUnavailable` from ``publish`` when its server cannot be reached.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from .._event import Event
from ._base import SubscriptionEnded
from .memory import MemoryBroker, MemorySubscription

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "MemoryBroker",
    "MemorySubscription",
    "Subscription",
    "SubscriptionEnded",
    "broker_from_url",
]


class BrokerUnavailable(ConnectionError):
    """The broker's server cannot be reached: the event was not published (after a timeout,
    it may have been). A ``ConnectionError``, so ``except OSError`` catches it too."""


class Subscription(Protocol):
    """Live events of some channels for one stream, plus what it missed."""

    @property
    def channels(self) -> tuple[str, ...]: ...

    @property
    def replay(self) -> Iterable[Event]: ...

    @property
    def gap(self) -> tuple[str, ...]: ...

    def get(self, timeout: float | None = None) -> Event | None: ...

    def close(self) -> None: ...


class Broker(Protocol):
    """Publishes events to channels and subscribes streams to them."""

    def publish(self, channel: str, event: Event) -> Event: ...

    def subscribe(
        self, channels: Sequence[str], last_event_id: str | None = None, *, max_replay: int | None = None
    ) -> Subscription: ...

    def close(self) -> None: ...


def broker_from_url(url: str | None, **options: int | float | None) -> Broker:
    """The broker a URL names, with ``options`` for its constructor.

    ``None`` or ``memory://`` is a :class:`MemoryBroker`; ``redis://``, ``rediss://`` and
    ``unix://`` URLs are a ``RedisBroker`` (``queue_size``, ``replay_size``,
    ``replay_max_age`` and ``max_event_size`` mean the same for both;
    ``retained_channels`` is the in-memory broker's alone). Creating a Redis broker does
    not connect.
    """
    if url is None or url in ("memory://", "memory:", "memory"):
        return MemoryBroker(**options)  # type: ignore[arg-type]
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        try:
            from .redis import RedisBroker
        except ModuleNotFoundError as exc:
            if exc.name != "redis":
                raise
            raise ValueError(f"the broker URL {url!r} needs the redis package: "
                             "pip install 'sseproto[redis]'") from exc
        if "retained_channels" in options:
            raise ValueError("retained_channels bounds the in-memory broker only; "
                             "Redis keeps one stream per channel")
        return RedisBroker(url, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown broker URL {url!r}: expected memory://, redis://, rediss:// or unix://")
