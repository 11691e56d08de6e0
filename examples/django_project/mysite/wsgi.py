"""The WSGI application: /events is sseproto's EventStreamApp, everything else is Django.

``gunicorn mysite.wsgi`` serves ``application``. A stream at /events takes its channels
from the query string (``/events?channel=news``, several: ``?channel=a,b``) and never
goes through Django's middleware, so no middleware can buffer or compress it.
"""

import os
from collections.abc import Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django_app = get_wsgi_application()

from .streams import events  # noqa: E402  (needs the settings, loaded just above)

MOUNT = "/events"


def application(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == MOUNT:
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + MOUNT
        environ["PATH_INFO"] = ""
        return events(environ, start_response)
    return django_app(environ, start_response)
