"""The process's broker and stream endpoint, shared by the Django views and the /events mount."""

from django.conf import settings

from sseproto.brokers import broker_from_url
from sseproto.wsgi import EventStreamApp

broker = broker_from_url(settings.SSE_BROKER_URL)
events = EventStreamApp(broker, heartbeat=settings.SSE_HEARTBEAT,
                        max_connections=settings.SSE_MAX_CONNECTIONS)
