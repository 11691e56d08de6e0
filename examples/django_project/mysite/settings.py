"""Settings of the example: no database, no apps; the stream settings come from the environment.

``SSE_BROKER_URL``: unset for the in-memory broker (one worker process), ``redis://...``
for the Redis broker (any number of workers and servers). ``SSE_MAX_CONNECTIONS`` stays
below gunicorn's ``--threads`` (64 in docs/deployment.md), so that past it streams get 503
instead of waiting for a thread, and a few threads are left for pages and publishing.
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-example-only-set-DJANGO_SECRET_KEY")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1 localhost").split()

INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Not GZipMiddleware: it compresses a streaming response without flushing, so events
    # would wait in its buffer.
]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

SSE_BROKER_URL = os.environ.get("SSE_BROKER_URL") or None
SSE_HEARTBEAT = float(os.environ.get("SSE_HEARTBEAT", "15"))
SSE_MAX_CONNECTIONS = int(os.environ.get("SSE_MAX_CONNECTIONS", "56"))
