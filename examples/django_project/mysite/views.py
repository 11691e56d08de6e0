"""Django views: a page, one channel's stream chosen by the URL, and publishing.

The stream view is where Django decides who reads what (``request.user``, the URL, ...);
``events.subscription_reply`` then opens the stream as the /events mount would, with the
same replay from ``Last-Event-ID``, connection limit, heartbeats and disconnect check.
"""

from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from sseproto import Event
from sseproto.brokers import BrokerUnavailable
from sseproto.wsgi import Reply, last_event_id_from

from .streams import broker, events

PAGE = """<!doctype html><meta charset="utf-8"><title>sseproto on Django</title>
<h1>news</h1>
<form id="say"><input name="text" required autocomplete="off"> <button>Publish</button></form>
<ol id="got"></ol>
<script>
const source = new EventSource("/events?channel=news");
source.onmessage = (e) => {
  const li = document.createElement("li");
  li.textContent = e.data;
  document.getElementById("got").append(li);
};
document.getElementById("say").onsubmit = (e) => {
  e.preventDefault();
  fetch("/publish/news", {method: "POST", body: e.target.text.value});
  e.target.reset();
};
</script>
"""


@require_GET
def page(request: HttpRequest) -> HttpResponse:
    return HttpResponse(PAGE)


@require_GET
def stream(request: HttpRequest, channel: str) -> HttpResponseBase:
    """GET /stream/<channel>: that channel's events (authorize the reader here)."""
    try:
        events.options.check_channel(channel)
    except ValueError as exc:
        return HttpResponse(f"{exc}\n", status=400, content_type="text/plain")
    reply = events.subscription_reply([channel], last_event_id_from(request.META), request.META)
    return streaming_response(reply)


def streaming_response(reply: Reply) -> StreamingHttpResponse:
    """A sseproto reply as a Django response: its status, its headers, its body unbuffered."""
    response = StreamingHttpResponse(reply.body, status=int(reply.status.split(" ", 1)[0]))
    for name, value in reply.headers:
        response[name] = value
    return response


@csrf_exempt  # an API: no cookie authenticates it; cross-site browser posts are refused below
@require_POST
def publish(request: HttpRequest, channel: str) -> HttpResponse:
    """POST /publish/<channel>: the request body, as text, is the event's data; ``?event=`` its type.

    An example: anyone who can reach it may publish. Put your own authorization here
    (a token, ``request.user``) before exposing it.
    """
    if from_another_site(request):
        return JsonResponse({"error": "posts from other sites are refused"}, status=403)
    try:
        events.options.check_channel(channel)
        event = broker.publish(channel, Event(request.body.decode(), request.GET.get("event")))
    except (UnicodeDecodeError, ValueError) as exc:  # bad channel, event type or size
        return JsonResponse({"error": str(exc)}, status=400)
    except BrokerUnavailable as exc:
        return JsonResponse({"error": str(exc)}, status=503)
    return JsonResponse({"id": event.id}, status=201)


def from_another_site(request: HttpRequest) -> bool:
    """Whether a browser sent this POST from another site's page (curl and servers send
    neither header). ``Sec-Fetch-Site`` where browsers send it, else ``Origin``."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    return origin is not None and origin != f"{request.scheme}://{request.get_host()}"
