"""Brokers: where published events go and where streams subscribe.

The interface is small on purpose, so the in-memory broker (the default) and a
networked one fit behind it alike:

- ``broker.publish(channel, event) -> Event`` stores ``event`` (giving it an id when it
  has none) and hands it to every live subscriber of ``channel``; it never blocks on a
  subscriber.
- ``broker.subscribe(channels, last_event_id=None) -> Subscription`` starts delivery of
  live events and, when ``last_event_id`` is given, collects what the client missed.
- ``subscription.replay`` holds the missed events in id order; ``subscription.gap`` names
  the channels for which ``last_event_id`` could not be placed (unknown or evicted), whose
  retained events the replay then includes in full.
- ``subscription.get(timeout)`` returns the next live event, or None when ``timeout``
  seconds pass first (the local subscriptions notice that up to a tenth of ``timeout``,
  at most 0.1 s, late), and raises :class:`SubscriptionEnded` once the subscription is
  closed, fell too far behind, or (a networked broker) could not reach its server to
  replay; ``subscription.close()`` unsubscribes (idempotent).

Replay and live delivery never overlap and never leave a hole between them.

Brokers: :class:`MemoryBroker` (one process, the default) and
``sseproto.brokers.redis.RedisBroker`` (any number of processes on one Redis or Valkey;
needs the ``redis`` extra, imported only when used). A networked broker raises
:class:`BrokerUnavailable` from ``publish`` when its server cannot be reached.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    def replay(self) -> list[Event]: ...

    @property
    def gap(self) -> tuple[str, ...]: ...

    def get(self, timeout: float | None = None) -> Event | None: ...

    def close(self) -> None: ...


class Broker(Protocol):
    """Publishes events to channels and subscribes streams to them."""

    def publish(self, channel: str, event: Event) -> Event: ...

    def subscribe(self, channels: Sequence[str], last_event_id: str | None = None) -> Subscription: ...

    def close(self) -> None: ...


def broker_from_url(url: str | None, **options: int | float | None) -> Broker:
    """The broker a URL names, with ``options`` for its constructor.

    ``None`` or ``memory://`` is a :class:`MemoryBroker`; ``redis://``, ``rediss://`` and
    ``unix://`` URLs are a ``RedisBroker`` (``queue_size``, ``replay_size`` and
    ``replay_max_age`` mean the same for both). Creating a Redis broker does not connect.
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
        return RedisBroker(url, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown broker URL {url!r}: expected memory://, redis://, rediss:// or unix://")
