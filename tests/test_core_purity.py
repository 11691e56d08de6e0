"""The protocol layer imports the standard library only: no I/O or framework libraries."""

from __future__ import annotations

import subprocess
import sys

BLOCKED = ["flask", "werkzeug", "requests", "urllib3", "redis", "gevent", "asyncio", "socket", "threading_io"]

SCRIPT = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import sseproto
wire = sseproto.Event("x", id="1").encode()
assert sseproto.Decoder().feed(wire)[0].data == "x"
sseproto.ReplayBuffer().append(sseproto.Event("y"))
bad = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})
print("loaded:", bad)
assert not bad, bad
"""


def test_core_imports_no_web_or_io_library() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "loaded: []" in proc.stdout


def test_public_api_is_exactly_all() -> None:
    import types

    import sseproto

    # Submodules (sseproto.wsgi, sseproto.client, ...) appear as attributes once imported.
    public = {
        n for n, v in vars(sseproto).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)
    } - {"annotations"}
    assert public == set(sseproto.__all__)


def run_blocked(blocked: list[str], body: str) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh interpreter where importing any of ``blocked`` fails."""
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError("blocked: " + name, name=name.split(".")[0])
sys.meta_path.insert(0, Block())
{body}
"""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_the_client_policy_is_sans_io() -> None:
    """The rules both clients share import no HTTP, socket or event-loop library."""
    io = [*BLOCKED, "httpx", "anyio", "trio", "sniffio"]
    proc = run_blocked(io, f"""
from sseproto.client._policy import Policy
policy = Policy(method="POST")
assert policy.response(200, {{"Content-Type": "text/event-stream"}}) == "open"
assert [e.data for e in policy.events(b"id: 1\\ndata: x\\n\\n")] == ["x"]
policy.ended()
assert policy.delay() == 3.0  # the stream carried an id: a POST may be sent again
bad = sorted(m for m in sys.modules if m.split(".")[0] in {io!r})
assert not bad, bad
print("ok")
""")
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_a_client_without_its_library_names_the_extra_to_install() -> None:
    proc = run_blocked(["requests"], """
import sseproto.client
try:
    from sseproto.client import EventSource
except ImportError as exc:
    print("refused:", exc)
""")
    assert proc.returncode == 0, proc.stderr
    assert "refused:" in proc.stdout and "pip install 'sseproto[client]'" in proc.stdout
