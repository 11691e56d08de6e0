"""Server-sent events for Flask: ``SSE(app)``, a stream endpoint, ``sse.publish()``.

::

    sse = SSE(app)                    # or SSE() and later sse.init_app(app)
    sse.publish({"n": 1}, event="tick", channel="news")
    # browsers: new EventSource("/sse/stream?channel=news")

Streams can also come from a view: ``return sse.stream("a", "b")`` (channels, with
replay), ``return sse.stream_iterable(generator())`` or ``return sse.stream_polling(func,
interval=1.0)``. Everything runs on :mod:`sseproto.wsgi`; wire conventions are there.

Configuration: ``SSE_*`` keys of ``app.config``, or their lower-case names as keyword
options of ``SSE()`` (which win). The table of keys, defaults and meanings is in the
README ("Settings"); ``SSE_BROKER_URL`` picks the broker (None or ``memory://``: in
memory; ``redis://...``: Redis).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import Blueprint, Flask, Response, abort, current_app, has_app_context, request, send_file

from ._event import Event
from .brokers import Broker, broker_from_url
from .grip import Grip
from .wsgi import EventStream, EventStreamApp, Options, Reply, WSGIEnvironment, event_from, last_event_id_from

if TYPE_CHECKING:  # prometheus_client is imported only when metrics are turned on
    from .metrics import Metrics

__all__ = ["SSE"]

# The minified build; the source, eventsource.js, is beside it.
POLYFILL = Path(__file__).parent / "static" / "eventsource.min.js"
# The polyfill with its shared mode (all tabs of an origin on one stream), also its own worker.
POLYFILL_SHARED = Path(__file__).parent / "static" / "eventsource-shared.min.js"

# Config key -> Options field.
_OPTION_KEYS = {
    "SSE_HEARTBEAT": "heartbeat",
    "SSE_RETRY": "retry",
    "SSE_RETRY_JITTER": "retry_jitter",
    "SSE_PADDING": "padding",
    "SSE_MAX_BYTES": "max_bytes",
    "SSE_MAX_DURATION": "max_duration",
    "SSE_MAX_CHANNELS": "max_channels",
    "SSE_MAX_CHANNEL_LENGTH": "max_channel_length",
    "SSE_CHANNEL_PATTERN": "channel_pattern",
    "SSE_MAX_LAST_EVENT_ID_LENGTH": "max_last_event_id_length",
    "SSE_MAX_REPLAY": "max_replay",
    "SSE_MAX_CONNECTIONS": "max_connections",
    "SSE_RETRY_AFTER": "retry_after",
    "SSE_BUSY": "busy",
    "SSE_WRITE_TIMEOUT": "write_timeout",
    "SSE_CORS_ORIGINS": "cors_origins",
    "SSE_CORS_CREDENTIALS": "cors_credentials",
}
# Config key -> broker option (of the broker SSE_BROKER_URL names).
_BROKER_KEYS = {
    "SSE_QUEUE_SIZE": "queue_size",
    "SSE_REPLAY_SIZE": "replay_size",
    "SSE_REPLAY_MAX_AGE": "replay_max_age",
    "SSE_REPLAY_MAX_BYTES": "replay_max_bytes",
    "SSE_MAX_EVENT_SIZE": "max_event_size",
    "SSE_RETAINED_CHANNELS": "retained_channels",
}
_OTHER_KEYS = {"SSE_URL_PREFIX": "url_prefix", "SSE_BROKER_URL": "broker_url",
               "SSE_DEFAULT_CHANNEL": "default_channel", "SSE_METRICS": "metrics",
               "SSE_GRIP_URL": "grip_url", "SSE_GRIP_KEY": "grip_key",
               "SSE_GRIP_RECOVERY_TTL": "grip_recovery_ttl"}

F = TypeVar("F", bound=Callable[[str], bool])


class _AppState:
    """What one app's SSE needs: its broker and its stream endpoint."""

    def __init__(self, broker: Broker, endpoint: EventStreamApp, default_channel: str) -> None:
        self.broker = broker
        self.endpoint = endpoint
        self.default_channel = default_channel


class SSE:
    """The Flask extension: one broker and one stream endpoint per app.

    ``authorize(channel) -> bool`` runs in the request context of each stream request,
    once per channel; False answers 403. Keyword ``options`` are the lower-case names of
    the ``SSE_*`` keys (``heartbeat=5``, ``url_prefix="/events"``, ...).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        broker: Broker | None = None,
        authorize: Callable[[str], bool] | None = None,
        **options: Any,
    ) -> None:
        known = {*_OPTION_KEYS.values(), *_BROKER_KEYS.values(), *_OTHER_KEYS.values()}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown SSE options: {', '.join(sorted(unknown))}")
        self._broker = broker
        self._authorize = authorize
        self._options = options
        self._states: weakref.WeakKeyDictionary[Flask, _AppState] = weakref.WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the app's ``SSE_*`` config, set up its broker, register the blueprint."""
        if "sse" in app.extensions:
            raise RuntimeError("an SSE extension is already registered on this app")
        settings = {key: app.config[key] for key in (*_OPTION_KEYS, *_BROKER_KEYS, *_OTHER_KEYS)
                    if key in app.config}
        for key, name in {**_OPTION_KEYS, **_BROKER_KEYS, **_OTHER_KEYS}.items():
            if name in self._options:
                settings[key] = self._options[name]
        option_values = {name: settings[key] for key, name in _OPTION_KEYS.items() if key in settings}
        if isinstance(option_values.get("cors_origins"), list):
            option_values["cors_origins"] = tuple(option_values["cors_origins"])
        default_channel = settings.get("SSE_DEFAULT_CHANNEL", "sse")
        options = Options(default_channels=(default_channel,), **option_values)
        broker = self._broker
        broker_options = {name: settings[key] for key, name in _BROKER_KEYS.items() if key in settings}
        if broker is None:
            broker = broker_from_url(settings.get("SSE_BROKER_URL"), **broker_options)
        elif broker_options:
            raise ValueError(f"{', '.join(sorted(broker_options))}: set these on the broker you pass, "
                             "they configure the broker SSE makes")
        endpoint = EventStreamApp(broker, options, authorize=self._check if self._authorize else None,
                                  metrics=_metrics(settings.get("SSE_METRICS"), app),
                                  grip=_grip(settings.get("SSE_GRIP_URL"), settings.get("SSE_GRIP_KEY"),
                                             settings.get("SSE_GRIP_RECOVERY_TTL")))
        self._states[app] = _AppState(broker, endpoint, default_channel)
        app.extensions["sse"] = self
        prefix = settings.get("SSE_URL_PREFIX", "/sse")
        if prefix is not None:
            app.register_blueprint(self._blueprint(), url_prefix=prefix)

    def authorizer(self, func: F) -> F:
        """Decorator: set the per-channel authorization callback."""
        self._authorize = func
        for state in self._states.values():
            state.endpoint.authorize = self._check
        return func

    @property
    def broker(self) -> Broker:
        """The broker of the current app (or of the only app, outside an app context)."""
        return self._state().broker

    @property
    def endpoint(self) -> EventStreamApp:
        """The stream endpoint of the current app: its options and open stream count."""
        return self._state().endpoint

    def publish(
        self,
        data: object,
        event: str | None = None,
        id: str | None = None,
        channel: str | None = None,
        retry: int | None = None,
    ) -> Event:
        """Publish to ``channel`` (default ``SSE_DEFAULT_CHANNEL``); non-str ``data`` goes as JSON.

        ``data`` may also be a whole :class:`~sseproto.Event` (then without ``event``,
        ``id`` or ``retry``). Works from any thread; outside an app context when the
        extension serves one app. Returns the stored event, with the id the broker gave it.
        """
        state = self._state()
        channel = state.default_channel if channel is None else channel
        state.endpoint.options.check_channel(channel)
        if isinstance(data, Event):
            if event is not None or id is not None or retry is not None:
                raise TypeError("publish an Event as it is, or give data with event, id and retry")
            message = data
        else:
            text = "" if data is None else event_from(data).data  # type: ignore[union-attr]
            message = Event(text, event or "message", id, retry)
        if message.id is not None and len(message.id) > state.endpoint.options.max_last_event_id_length:
            # A client would send it back as Last-Event-ID and be refused.
            raise ValueError(f"id is longer than {state.endpoint.options.max_last_event_id_length}")
        if state.endpoint.grip is not None:  # stored, then sent to the GRIP proxy too
            return state.endpoint.grip.publish(state.broker, channel, message)
        return state.broker.publish(channel, message)

    def stream(self, *channels: str, last_event_id: str | None = None) -> Response:
        """A streaming response of ``channels``, replaying after the request's last event id."""
        state = self._state()
        environ = request.environ
        if last_event_id is None:
            last_event_id = last_event_id_from(environ)
        chosen = channels or (state.default_channel,)
        for channel in chosen:
            state.endpoint.options.check_channel(channel)
        return _response(state.endpoint.subscription_reply(chosen, last_event_id, environ))

    def stream_iterable(self, iterable: Iterable[object]) -> Response:
        """A streaming response of what ``iterable`` yields: Event, str, None (idle) or JSON data.

        Wrap a generator that needs the request in :func:`flask.stream_with_context`.
        """
        return _response(self._state().endpoint.iterable_reply(iterable, request.environ))

    def stream_polling(self, func: Callable[[], object], interval: float) -> Response:
        """A streaming response of what ``func()`` returns, called every ``interval`` seconds."""
        return _response(self._state().endpoint.polling_reply(func, interval, request.environ))

    def _check(self, environ: WSGIEnvironment, channel: str) -> bool:
        return self._authorize is None or bool(self._authorize(channel))

    def _state(self) -> _AppState:
        if has_app_context():
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            state = self._states.get(app)
            if state is None:
                raise RuntimeError("SSE is not registered on the current app: call init_app(app)")
            return state
        states = list(self._states.values())
        if len(states) != 1:
            raise RuntimeError("outside an app context, SSE needs exactly one registered app")
        return states[0]

    def _blueprint(self) -> Blueprint:
        bp = Blueprint("sse", __name__)

        def stream() -> Response:
            return _response(self._state().endpoint.respond(request.environ))

        def script(path: Path) -> Response:
            if not path.is_file():
                abort(404)
            response = send_file(path, mimetype="text/javascript", max_age=3600)
            response.headers["X-Content-Type-Options"] = "nosniff"
            return response

        bp.add_url_rule("/stream", "stream", stream, methods=["GET", "OPTIONS"],
                        provide_automatic_options=False)
        bp.add_url_rule("/eventsource.js", "polyfill", lambda: script(POLYFILL))
        bp.add_url_rule("/eventsource-shared.js", "polyfill_shared", lambda: script(POLYFILL_SHARED))
        return bp


def _metrics(setting: object, app: Flask) -> Metrics | None:
    """``SSE_METRICS``: False or None (off), True (the default registry, labelled with the
    app's name) or a :class:`sseproto.metrics.Metrics` of one's own."""
    if setting is None or setting is False:
        return None
    if setting is True:
        from .metrics import Metrics

        return Metrics(app=app.name)
    module = sys.modules.get("sseproto.metrics")  # loaded if ``setting`` is a Metrics
    if module is not None and isinstance(setting, module.Metrics):
        return cast("Metrics", setting)
    raise ValueError(f"SSE_METRICS must be True, False or a sseproto.metrics.Metrics, got {setting!r}")


def _grip(url: object, key: object, recovery_ttl: object = None) -> Grip | None:
    """``SSE_GRIP_URL`` and ``SSE_GRIP_KEY``: both (GRIP on) or neither; ``SSE_GRIP_RECOVERY_TTL``
    (seconds, None: Grip's default) how long a hold's recoveries skip ``authorize``."""
    if not url and not key:
        if recovery_ttl is not None:
            raise ValueError("SSE_GRIP_RECOVERY_TTL needs SSE_GRIP_URL and SSE_GRIP_KEY")
        return None
    if not (isinstance(url, str) and url and isinstance(key, (str, bytes)) and key):
        raise ValueError("GRIP needs both SSE_GRIP_URL (the proxy's publish endpoint) and SSE_GRIP_KEY")
    if recovery_ttl is None:
        return Grip(url, key)
    if type(recovery_ttl) not in (int, float):
        raise ValueError(f"SSE_GRIP_RECOVERY_TTL must be a number of seconds, got {recovery_ttl!r}")
    return Grip(url, key, recovery_ttl=cast(float, recovery_ttl))


def _response(reply: Reply) -> Response:
    # A stream goes to the server as it is: without Werkzeug's per-chunk wrappers (a few
    # percent of the CPU per event sent), and marked so compressing middleware skips it.
    stream = isinstance(reply.body, EventStream)
    return Response(reply.body, status=reply.status, headers=reply.headers, direct_passthrough=stream)
