"""The clients' errors: the same classes from the requests client and the httpx client.

With ``requests`` installed they subclass ``requests.RequestException``, so existing
``except`` clauses keep working; without it (the httpx client alone) ``OSError``, which
``RequestException`` is too. ``response`` is the HTTP response of either library.
"""

from __future__ import annotations

from typing import Any

try:
    from requests import RequestException as _Base
except ModuleNotFoundError:  # pragma: no cover - the async extra alone
    _Base = OSError  # type: ignore[misc,assignment]


class EventSourceError(_Base):
    """The stream cannot go on (the server said so); ``response`` is the HTTP response."""

    def __init__(self, *args: object, response: Any = None) -> None:
        if _Base is OSError:  # pragma: no cover - the async extra alone
            super().__init__(*args)
            self.response = response
            self.request = getattr(response, "request", None)
        else:
            super().__init__(*args, response=response)


class HTTPStatusError(EventSourceError):
    """The server answered with a status other than 200 (or 204, which ends the stream quietly)."""


class ContentTypeError(EventSourceError):
    """The server answered 200 with a content type other than ``text/event-stream``."""


def response_error(verdict: str, response: Any, reason: str) -> EventSourceError:
    """The error for a response :func:`~sseproto.client._policy.classify` refused, from
    either library's response (``reason`` is its reason phrase)."""
    if verdict == "status":
        return HTTPStatusError(f"{response.status_code} {reason} from {response.url}: not an event stream",
                               response=response)
    ctype = response.headers.get("Content-Type", "")
    message = f"Content-Type {ctype or '(none)'!r} from {response.url}: expected text/event-stream"
    return ContentTypeError(message, response=response)
