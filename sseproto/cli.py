"""The ``sseproto`` command: ``listen`` prints a stream's events as they arrive; ``publish`` sends one."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from . import Event, LimitExceeded, LocalProtocolError

LISTEN_EPILOG = """\
output: one line per event, as soon as it arrives.
  plain (default):  EVENT: DATA   line breaks in DATA are written as \\n, backslashes as \\\\
  --json:           {"event": ..., "data": ..., "id": ...}   (id is the stream's last event id)
reconnects like a browser's EventSource (sending Last-Event-ID) until the server answers
204 (exit 0), answers an error or a wrong content type (exit 1), or Ctrl-C (exit 130).
"""


PUBLISH_EPILOG = """\
output: the id of the stored event, on one line.
exit status: 0 published, 1 Redis unreachable (nothing published; after a timeout it may
have been), 2 a usage error (bad URL, channel, type or id).
"""


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sseproto", description="Server-Sent Events from the command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listen = commands.add_parser(
        "listen",
        help="print the events of a stream as they arrive, reconnecting",
        description="Print the events of an event stream as they arrive, reconnecting like a browser.",
        epilog=LISTEN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listen.add_argument("url", metavar="URL")
    listen.add_argument(
        "-H",
        "--header",
        action="append",
        type=_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="send this request header on every connection (repeatable)",
    )
    listen.add_argument("--json", action="store_true", help="print one JSON object per event")
    listen.add_argument("--last-event-id", default=None, metavar="ID", help="resume after this event id")
    listen.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="reconnect when nothing (not even a heartbeat) arrives for S seconds (default 60)",
    )
    listen.add_argument(
        "--retry-status",
        action="append",
        type=int,
        default=[],
        metavar="CODE",
        help="reconnect after this HTTP status instead of exiting, e.g. 502 or 503 (repeatable)",
    )

    publish = commands.add_parser(
        "publish",
        help="publish one event through the Redis broker",
        description="Publish one event to a channel of the Redis broker; every server on that Redis "
        "delivers it to its streams of the channel.",
        epilog=PUBLISH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_argument(
        "--broker", required=True, metavar="URL", help="Redis URL, e.g. redis://127.0.0.1:6379/0"
    )
    publish.add_argument("--channel", required=True, metavar="C")
    publish.add_argument("--event", default="message", metavar="TYPE", help="event type (default: message)")
    publish.add_argument(
        "--id",
        default=None,
        metavar="ID",
        help="your own event id, sent as is (default: the broker's stream id; ids of the form "
        "DIGITS-DIGITS are the broker's own and refused)",
    )
    publish.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="seconds to reach Redis (default 5)"
    )
    publish.add_argument("data", metavar="DATA", help="the event's data (line breaks: several data: lines)")
    return parser


def format_event(event: Event, as_json: bool) -> str:
    """One output line for ``event``: plain ``EVENT: DATA`` with escaped line breaks, or JSON."""
    if as_json:
        return json.dumps({"event": event.event, "data": event.data, "id": event.id}, ensure_ascii=False)
    data = event.data.replace("\\", "\\\\").replace("\n", "\\n")
    return f"{event.event}: {data}"


def listen(args: argparse.Namespace, out: TextIO) -> int:
    from .client import EventSource, EventSourceError

    source = EventSource(
        args.url,
        headers=dict(args.header),
        last_event_id=args.last_event_id,
        timeout=(min(10.0, args.timeout), args.timeout),
        retry_statuses=args.retry_status,
    )
    with source:
        try:
            for event in source:
                out.write(format_event(event, args.json) + "\n")
                out.flush()
        except (EventSourceError, LimitExceeded) as exc:
            print(f"sseproto listen: {exc}", file=sys.stderr)
            return 1
    return 0


def publish(args: argparse.Namespace, out: TextIO) -> int:
    """Publish one event through the Redis broker; print its id. Exit 1 when Redis is unreachable."""
    try:
        event = Event(args.data, event=args.event, id=args.id)
    except LocalProtocolError as exc:
        print(f"sseproto publish: {exc}", file=sys.stderr)
        return 2
    if args.broker.split(":", 1)[0].lower() not in ("redis", "rediss", "unix"):
        print(f"sseproto publish: --broker must be a redis://, rediss:// or unix:// URL, got {args.broker!r}",
              file=sys.stderr)
        return 2
    try:
        from .brokers import BrokerUnavailable
        from .brokers.redis import RedisBroker
    except ModuleNotFoundError as exc:
        if exc.name != "redis":
            raise
        print("sseproto publish: needs the redis package: pip install 'sseproto[redis]'", file=sys.stderr)
        return 2
    try:
        broker = RedisBroker(args.broker, pool_size=1, socket_timeout=args.timeout)
    except ValueError as exc:
        print(f"sseproto publish: bad --broker URL: {exc}", file=sys.stderr)
        return 2
    with broker:
        try:
            stored = broker.publish(args.channel, event)
        except BrokerUnavailable as exc:
            print(f"sseproto publish: {exc}", file=sys.stderr)
            return 1
        except ValueError as exc:
            print(f"sseproto publish: {exc}", file=sys.stderr)
            return 2
    out.write(f"{stored.id}\n")
    out.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sseproto`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "listen":
            return listen(args, sys.stdout)
        return publish(args, sys.stdout)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, without a second error at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
