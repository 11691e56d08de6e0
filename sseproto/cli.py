"""The ``sseproto`` command: ``listen`` prints a stream's events as they arrive; ``publish`` sends one."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from typing import TextIO

from . import DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_LINE_SIZE, Event, LimitExceeded, LocalProtocolError

LISTEN_EPILOG = """\
output: one line per event, as soon as it arrives.
  plain (default):  EVENT: DATA   line breaks in DATA are written as \\n, backslashes as \\\\
  --json:           {"event": ..., "data": ..., "id": ...}   (id is the stream's last event id)
control characters from the server (C0 but tab, DEL, C1) never reach the terminal raw: plain
output writes them as \\xNN (ESC as \\x1b), JSON as \\uNNNN.
reconnection: a GET reconnects like a browser's EventSource, sending Last-Event-ID. Another
method (-X POST, or -d without -X) is sent again, with the same body and Last-Event-ID, only
once its stream carried an id; without ids the stream ends with its response (an LLM API's
tokens then [DONE]). --once: never sent again; --reconnect: always, whatever the method.
exit status:
  0    the server answered 204, or a stream that is not sent again ended normally
  1    an error status, a wrong content type or a TLS error; an event or a line over the
       limits; for a stream that is not sent again (--once, a POST without ids): no
       connection, a read timeout or a cut connection (and with --once, a --retry-status)
  2    a usage error (bad option, unreadable -d @FILE), or the requests package missing
  130  Ctrl-C
stderr: each failed attempt (no connection, an error status of --retry-status, a drop, a
read timeout) and each reconnection, as it happens; -q silences them.
"""


PUBLISH_EPILOG = """\
output: the id of the stored event, on one line.
exit status: 0 published, 1 Redis unreachable (nothing published; after a timeout it may
have been), 2 a usage error (bad URL, channel, type or id).
"""


def _seconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _size(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a size >= 1, got {text!r}")
    return value


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _method(text: str) -> str:
    if not text.isascii() or not text.isalpha():
        raise argparse.ArgumentTypeError(f"expected an HTTP method name such as POST, got {text!r}")
    return text.upper()


def _body(text: str) -> bytes:
    """The request body of ``-d``: the text itself, ``@FILE``'s bytes, or stdin's for ``-`` and ``@-``."""
    if text in ("-", "@-"):
        return sys.stdin.buffer.read()
    if text.startswith("@"):
        try:
            with open(text[1:], "rb") as file:
                return file.read()
        except OSError as exc:
            message = f"cannot read the body from {text[1:]!r}: {exc.strerror}"
            raise argparse.ArgumentTypeError(message) from None
    return text.encode()


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
        help="send this request header on every connection (repeatable); not to another origin a "
        "redirect leads to, unless --forward-headers",
    )
    listen.add_argument(
        "-X",
        "--request",
        dest="method",
        type=_method,
        default=None,
        metavar="METHOD",
        help="the request method (default GET, or POST with -d)",
    )
    listen.add_argument(
        "-d",
        "--data",
        dest="body",
        type=_body,
        default=None,
        metavar="BODY",
        help="send BODY, as is, with every attempt; @FILE sends a file's bytes, - (or @-) stdin's; "
        "set its type with -H 'Content-Type: ...'",
    )
    again = listen.add_mutually_exclusive_group()
    again.add_argument(
        "--once",
        action="store_true",
        help="one request: never reconnect, whatever the method (a drop exits 1)",
    )
    again.add_argument(
        "--reconnect",
        action="store_true",
        help="reconnect whatever the method, even a POST whose stream carries no id",
    )
    listen.add_argument(
        "--forward-headers",
        action="store_true",
        help="also send the -H headers where a redirect to another origin (scheme, host, port) leads",
    )
    listen.add_argument("--json", action="store_true", help="print one JSON object per event")
    listen.add_argument(
        "-q", "--quiet",
        action="store_true",
        help="do not report failed attempts and reconnections on stderr",
    )
    listen.add_argument("--last-event-id", default=None, metavar="ID", help="resume after this event id")
    listen.add_argument(
        "--timeout",
        type=_seconds,
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
    listen.add_argument(
        "--max-event-size",
        type=_size,
        default=DEFAULT_MAX_EVENT_SIZE,
        metavar="N",
        help=f"exit 1 on an event of more than N characters of data (default {DEFAULT_MAX_EVENT_SIZE})",
    )
    listen.add_argument(
        "--max-line-size",
        type=_size,
        default=DEFAULT_MAX_LINE_SIZE,
        metavar="N",
        help=f"exit 1 on a line of more than N bytes (default {DEFAULT_MAX_LINE_SIZE})",
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


# What a terminal may act on: C0 controls but tab (ESC starts CSI, OSC 52 clipboard writes,
# title changes), DEL and C1 (U+009B is a one-character CSI). Plain output also escapes
# the backslash, so every escape reads back unambiguously.
_PLAIN_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\\\x7f-\x9f]")
_PLAIN_ESCAPES = {chr(c): f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_PLAIN_ESCAPES.update({"\n": "\\n", "\\": "\\\\"})
# JSON escapes C0 itself; ensure_ascii=False leaves DEL and C1 raw.
_JSON_UNSAFE = re.compile(r"[\x7f-\x9f]")
# Messages on stderr: the same controls (a reason phrase is the server's text).
_MESSAGE_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _plain(text: str) -> str:
    return _PLAIN_UNSAFE.sub(lambda m: _PLAIN_ESCAPES[m.group()], text)


def _message(text: str) -> str:
    """``text`` with control characters made visible, for stderr."""
    return _MESSAGE_UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def format_event(event: Event, as_json: bool) -> str:
    """One output line for ``event``: plain ``EVENT: DATA`` with escaped line breaks, or JSON;
    either way control characters are escaped, so a server cannot drive the terminal."""
    if as_json:
        line = json.dumps({"event": event.event, "data": event.data, "id": event.id}, ensure_ascii=False)
        return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", line)
    return f"{_plain(event.event)}: {_plain(event.data)}"


def listen(args: argparse.Namespace, out: TextIO) -> int:
    try:
        import requests

        from .client import EventSource, EventSourceError
    except ImportError as exc:
        print(f"sseproto listen: needs the requests package: pip install 'sseproto[client]' ({exc})",
              file=sys.stderr)
        return 2

    method = args.method or ("GET" if args.body is None else "POST")
    # A failure the source does not raise: a refused one-shot request (a --retry-status
    # answer with --once) ends iteration quietly, after on_error.
    refused: list[Exception] = []
    opened = [0]

    def on_error(exc: Exception) -> None:
        if args.once:
            refused.append(exc)
        if not args.quiet and source.will_reconnect:  # else the failure is raised, and reported
            print(f"sseproto listen: {method} {_message(args.url)}: {_message(str(exc))}; trying again",
                  file=sys.stderr, flush=True)

    def on_open(response: object) -> None:
        opened[0] += 1
        if opened[0] > 1 and not args.quiet:
            resume = f" (Last-Event-ID: {_message(source.last_event_id)})" if source.last_event_id else ""
            print(f"sseproto listen: reconnected to {_message(args.url)}{resume}",
                  file=sys.stderr, flush=True)

    source = EventSource(
        args.url,
        method=method,
        content=args.body,
        headers=dict(args.header),
        last_event_id=args.last_event_id,
        timeout=(min(10.0, args.timeout), args.timeout),
        reconnect=False if args.once else True if args.reconnect else None,
        retry_statuses=args.retry_status,
        forward_headers=args.forward_headers,
        max_event_size=args.max_event_size,
        max_line_size=args.max_line_size,
        on_error=on_error,
        on_open=on_open,
    )
    with source:
        try:
            for event in source:
                out.write(format_event(event, args.json) + "\n")
                out.flush()
        except EventSourceError as exc:
            print(f"sseproto listen: {_message(str(exc))}", file=sys.stderr)
            return 1
        except LimitExceeded as exc:
            option = "--" + exc.limit.replace("_", "-")
            what = "a line" if exc.limit == "max_line_size" else "an event"
            print(f"sseproto listen: the server sent {what} over {option} {exc.value}; "
                  f"raise {option} if such are expected", file=sys.stderr)
            return 1
        except requests.RequestException as exc:
            # No connection, a read timeout or a cut stream that is not sent again, a TLS error.
            print(f"sseproto listen: {method} {_message(args.url)}: {_message(str(exc))}", file=sys.stderr)
            return 1
    if refused:
        print(f"sseproto listen: {_message(str(refused[-1]))} (--once: not sent again)", file=sys.stderr)
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
