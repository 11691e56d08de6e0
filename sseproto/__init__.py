"""sseproto: Server-Sent Events for Python, from the wire format up.

The names below are the sans-IO protocol layer: standard library only, no I/O.
"""

from ._decoder import DEFAULT_MAX_EVENT_SIZE, DEFAULT_MAX_LINE_SIZE, Decoder
from ._errors import LimitExceeded, LocalProtocolError, ProtocolError, RemoteProtocolError
from ._event import Event, encode_comment
from ._replay import ReplayBuffer

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "DEFAULT_MAX_LINE_SIZE",
    "Decoder",
    "Event",
    "LimitExceeded",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "ReplayBuffer",
    "encode_comment",
]

__version__ = "0.1.0"
