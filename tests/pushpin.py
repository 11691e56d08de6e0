"""A private Pushpin for the GRIP tests and bench/fanout.py: its config, and when it is up.

The config starts from the packaged ``/etc/pushpin/pushpin.conf`` and moves everything
under one directory of its own (sockets, logs, routes), on the given ports, with zurl
among the services (Pushpin's proxy reaches the app through it). Standard library only,
so the benchmark can use it without the test dependencies.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

PUSHPIN_CONF = Path("/etc/pushpin/pushpin.conf")


def pushpin_config(root: Path, http_port: int, publish_port: int, app_port: int, key: str,
                   **settings: str) -> Path:
    """Write ``root/pushpin.conf`` and ``root/routes`` (every request to ``app_port``);
    ``settings`` override more of the packaged keys (``client_maxconn="21000"``, ...)."""
    text = PUSHPIN_CONF.read_text()
    (root / "run").mkdir()
    (root / "log").mkdir()
    values = {"rundir": str(root / "run"), "ipc_prefix": "pp-", "logdir": str(root / "log"),
              "http_port": str(http_port), "push_in_http_addr": "127.0.0.1",
              "push_in_http_port": str(publish_port), "sig_key": key, "sig_iss": "pushpin",
              "push_in_spec": "ipc://{rundir}/{ipc_prefix}push-in",
              "push_in_sub_specs": "ipc://{rundir}/{ipc_prefix}push-in-sub",
              "command_spec": "ipc://{rundir}/{ipc_prefix}command",
              "stats_spec": "ipc://{rundir}/{ipc_prefix}stats", "updates_check": "off", **settings}
    for name, value in values.items():
        text, count = re.subn(rf"(?m)^{name}=.*$", lambda _m, v=value, k=name: f"{k}={v}", text)
        if count < 1:
            raise RuntimeError(f"{PUSHPIN_CONF} has no {name}=")
    text = re.sub(r"(?m)^services=.*$", "services=condure,zurl,pushpin-proxy,pushpin-handler", text)
    text = text.replace("[proxy]\n", "[proxy]\n"
                        "zurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in\n"
                        "zurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream\n"
                        "zurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out\n", 1)
    (root / "routes").write_text(f"* 127.0.0.1:{app_port}\n")
    (root / "pushpin.conf").write_text(text)
    return root / "pushpin.conf"


def holds_and_delivers(port: int, publish: Callable[[], object]) -> bool:
    """Whether a stream through Pushpin (on ``port``) of channel ``ready`` is held and
    receives the event ``publish()`` publishes there through the app (data ``ready``).

    condure listens before the proxy, zurl and pushpin-handler are connected: a stream opened
    too early gets ``500 Accept service unavailable``, or is held without delivery.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /sse/stream?channel=ready HTTP/1.0\r\nHost: x\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(65536)
                if not chunk:
                    return False
                head += chunk
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                return False
            time.sleep(0.2)  # the handler subscribes as it sends the headers
            publish()
            body = head
            while b"data: ready" not in body:
                chunk = s.recv(65536)
                if not chunk:
                    return False
                body += chunk
            return True
    except OSError:
        return False


def log_summary(logdir: Path, limit: int = 8) -> list[str]:
    """Pushpin's logged warnings and errors, by kind (times and ids dropped), most frequent first."""
    counts: dict[str, int] = {}
    for log in sorted(logdir.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(("[WARN", "[ERR")):
                kind = re.sub(r"\d{4}-\d\d-\d\d [\d:.]+ |[0-9a-f-]{36}|\b\d+\b", "#", line)[:160]
                key = f"{log.stem}: {kind}"
                counts[key] = counts.get(key, 0) + 1
    return [f"{n} x {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])[:limit]]
