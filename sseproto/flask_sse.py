"""A drop-in for Flask-SSE: change ``from flask_sse import sse`` to ``from sseproto.flask_sse import sse``.

::

    app.config["REDIS_URL"] = "redis://localhost"    # optional here: without it, in memory
    app.register_blueprint(sse, url_prefix="/stream")
    sse.publish({"message": "Hello!"}, type="greeting")
    # pages: new EventSource("{{ url_for('sse.stream', channel='sse') }}")

The same public names (``sse``, ``ServerSentEventsBlueprint``, ``Message``) and calls
(``publish(data, type=None, id=None, retry=None, channel="sse")``, ``messages(channel)``,
the ``stream`` view at the blueprint's root with ``?channel=``). What changes, for the
better: ``SSE_REDIS_URL`` or ``REDIS_URL`` select the Redis broker, and without them the
embedded in-memory broker serves (no Redis needed on one machine); streams replay what a
reconnecting browser missed (``Last-Event-ID``), send heartbeats and free their slot
when the client goes; each process holds one Redis listener connection, not one per
client. Every ``SSE_*`` setting of :mod:`sseproto.flask` applies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app, has_app_context, request
from flask.blueprints import BlueprintSetupState

from ._event import Event
from .brokers import SubscriptionEnded
from .flask import SSE, _response

__all__ = ["Message", "ServerSentEventsBlueprint", "sse"]


class Message:
    """Data published as a server-sent event, as Flask-SSE's ``Message``: non-str data is
    sent as JSON (with the application's JSON provider)."""

    def __init__(self, data: Any, type: str | None = None, id: str | None = None, retry: int | None = None):
        self.data = data
        self.type = type
        self.id = id
        self.retry = retry

    def to_dict(self) -> dict[str, Any]:
        """The message as a minimal dictionary (data, and the fields that are set)."""
        fields = {"data": self.data, "type": self.type, "id": self.id, "retry": self.retry}
        return {key: value for key, value in fields.items() if key == "data" or value}

    def to_event(self) -> Event:
        """The :class:`~sseproto.Event` this message is sent as."""
        return Event(_text(self.data), self.type or "message", self.id, self.retry)

    def __str__(self) -> str:
        return self.to_event().encode().decode()

    def __repr__(self) -> str:
        extra = "".join(f", {key}={value!r}" for key, value in self.to_dict().items() if key != "data")
        return f"{type(self).__name__}({self.data!r}{extra})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, as Flask-SSE's


class ServerSentEventsBlueprint(Blueprint):
    """A blueprint that publishes and streams server-sent events, as Flask-SSE's, on sseproto."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sse = SSE(url_prefix=None)  # the blueprint is the route: no second one
        self.record_once(self._set_up)

    def _set_up(self, state: BlueprintSetupState) -> None:
        app = state.app
        assert isinstance(app, Flask)
        redis_url = app.config.get("SSE_REDIS_URL") or app.config.get("REDIS_URL")
        if redis_url and "SSE_BROKER_URL" not in app.config:
            app.config["SSE_BROKER_URL"] = redis_url
        self._sse.init_app(app)

    @property
    def extension(self) -> SSE:
        """The :class:`sseproto.flask.SSE` underneath: its broker, endpoint and options."""
        return self._sse

    def publish(
        self, data: Any, type: str | None = None, id: str | None = None, retry: int | None = None,
        channel: str = "sse",
    ) -> Event:
        """Publish ``data`` (non-str as JSON) to ``channel``; returns the stored event, with its id."""
        return self._sse.publish(Message(data, type, id, retry).to_event(), channel=channel)

    def messages(self, channel: str = "sse") -> Iterator[Message]:
        """The messages published to ``channel`` from now on, as they come (a generator)."""
        subscription = self._sse.broker.subscribe([channel])
        try:
            while True:
                try:
                    event = subscription.get()
                except SubscriptionEnded:
                    return
                if event is not None:
                    yield Message(event.data, None if event.event == "message" else event.event,
                                  event.id, event.retry)
        finally:
            subscription.close()

    def stream(self) -> Response:
        """The stream view: ``?channel=`` (default ``sse``), resuming from ``Last-Event-ID``."""
        return _response(self._sse.endpoint.respond(request.environ))


def _text(data: Any) -> str:
    """``data`` as event text: str as is, anything else as JSON (the app's provider when there is one)."""
    if isinstance(data, str):
        return data
    if has_app_context():
        return str(current_app.json.dumps(data))
    import json

    return json.dumps(data)


sse = ServerSentEventsBlueprint("sse", __name__)
"""The blueprint to register: its root is the stream view (``url_for("sse.stream")``)."""
sse.add_url_rule(rule="", endpoint="stream", view_func=sse.stream, methods=["GET", "OPTIONS"],
                 provide_automatic_options=False)
