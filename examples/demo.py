"""A live page on sseproto's Flask extension: chat, a server clock and a job's progress bar.

Run ``python3 examples/demo.py`` (``--host``, ``--port``) and open the URL it prints in
two windows. One stream per page carries three channels (``chat``, ``clock``, ``jobs``)
from the in-memory broker; a page that loses its connection replays what it missed from
its ``Last-Event-ID``, and a fresh page gets the recent chat with the HTML and then
resumes the stream from the id the server had reached when it rendered that HTML.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import deque
from typing import Any

from flask import Flask, Response, redirect, request
from flask.typing import ResponseReturnValue
from werkzeug.serving import make_server

from sseproto.flask import SSE

CHANNELS = ("chat", "clock", "jobs")
HISTORY = 50  # chat messages a fresh page shows
JOB_SECONDS = 5.0
JOB_STEPS = 20
MAX_NAME = 40
MAX_TEXT = 500

PAGE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sseproto demo</title>
<style>
  body { font: 16px/1.4 system-ui, sans-serif; max-width: 40rem; margin: 1rem auto; padding: 0 1rem; }
  section { border-top: 1px solid #ccc; margin-top: 1rem; }
  #messages { max-height: 16rem; overflow-y: auto; padding-left: 1.5rem; }
  #messages time { color: #666; font-size: .85em; }
  form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; }
  label { display: flex; flex-direction: column; font-size: .9em; }
  output { font-weight: bold; }
</style>
<h1>sseproto demo</h1>
<p>Stream: <output id="state">CONNECTING</output> over <output id="transport">?</output>
  EventSource; connections: <output id="opens">0</output>; last event id:
  <output id="last-id">none</output></p>
<form method="post" action="/drop">
  <button>Drop every stream</button> <small>(pages reconnect and replay what they missed)</small>
</form>
<p id="notice" role="status"></p>

<section aria-labelledby="clock-title">
  <h2 id="clock-title">Server clock</h2>
  <p>Server time: <time id="clock">__TIME__</time></p>
</section>

<section aria-labelledby="job-title">
  <h2 id="job-title">Background job</h2>
  <form method="post" action="/job">
    <button id="start-job">Start a 5-second job</button>
    <label for="job-progress">Progress <progress id="job-progress" max="100" value="0">0%</progress></label>
    <output id="job-state" for="job-progress">idle</output>
  </form>
</section>

<section aria-labelledby="chat-title">
  <h2 id="chat-title">Chat</h2>
  <ol id="messages" aria-live="polite"></ol>
  <form method="post" action="/chat" id="chat-form">
    <label>Name <input name="name" maxlength="__MAX_NAME__" value="guest" required></label>
    <label>Message <input name="text" maxlength="__MAX_TEXT__" autocomplete="off" required></label>
    <button>Send</button>
  </form>
</section>

<script type="application/json" id="initial">__INITIAL__</script>
<script src="/sse/eventsource.js"></script>
<script>
// Plain ES5, like the polyfill: the page also runs where only the polyfill gives EventSource.
(function () {
  "use strict";
  function $(id) { return document.getElementById(id); }
  var initial = JSON.parse($("initial").textContent);
  var seen = {};

  function showChat(id, m) {
    if (seen[id]) return;  // a replay after a gap repeats what the page already shows
    seen[id] = true;
    var li = document.createElement("li");
    var time = document.createElement("time");
    var name = document.createElement("b");
    time.textContent = m.time;
    name.textContent = m.name;
    li.appendChild(time);
    li.appendChild(document.createTextNode(" "));
    li.appendChild(name);
    li.appendChild(document.createTextNode(": " + m.text));
    $("messages").appendChild(li);
    $("messages").scrollTop = $("messages").scrollHeight;
  }
  function showJob(p) {
    $("job-progress").value = p.percent;
    $("job-progress").textContent = p.percent + "%";
    $("job-state").textContent = p.percent >= 100 ? "done" : "job " + p.job + ": " + p.percent + "%";
  }
  function showTime(t) { $("clock").textContent = t.time; }

  for (var i = 0; i < initial.history.length; i++) showChat(initial.history[i].id, initial.history[i]);
  if (initial.job) showJob(initial.job);

  // Forms post in the background (without script they post and come back here).
  function background(form) {
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.onload = function () {
        var ok = xhr.status >= 200 && xhr.status < 300;
        var body = {};
        try { body = JSON.parse(xhr.responseText); } catch (err) { /* not JSON */ }
        $("notice").textContent = ok ? "" : (body.error || "request failed: " + xhr.status);
        if (ok && form.id === "chat-form") {
          form.elements.text.value = "";
          form.elements.text.focus();
        }
      };
      xhr.onerror = function () { $("notice").textContent = "request failed: network error"; };
      xhr.send(new FormData(form));
    });
  }
  var forms = document.getElementsByTagName("form");
  for (var f = 0; f < forms.length; f++) background(forms[f]);

  // The polyfill installed itself as window.EventSource only if the browser had none.
  var ES = window.EventSource;
  $("transport").textContent = !ES ? "no" : ES === window.EventSourcePolyfill ? "polyfill" : "native";
  if (!ES) { $("state").textContent = "unavailable"; return; }

  // One stream, three channels. lastEventId resumes from where the server was when it
  // rendered this page; on reconnection the browser's Last-Event-ID header wins over it.
  var url = "/sse/stream?channel=chat&channel=clock&channel=jobs";
  if (initial.lastEventId) url += "&lastEventId=" + encodeURIComponent(initial.lastEventId);
  var source = window.source = new ES(url);  // global, to try things from the console
  var states = ["CONNECTING", "OPEN", "CLOSED"];
  var opens = 0;
  function showState() { $("state").textContent = states[source.readyState]; }
  source.onopen = function () { opens += 1; $("opens").textContent = String(opens); showState(); };
  source.onerror = showState;
  function on(type, handle) {
    source.addEventListener(type, function (e) {
      if (e.lastEventId) $("last-id").textContent = e.lastEventId;
      handle(JSON.parse(e.data), e.lastEventId);
    });
  }
  on("chat", function (m, id) { showChat(id, m); });
  on("tick", showTime);
  on("progress", showJob);
  on("sseproto.gap", function (gap) {
    $("notice").textContent = "Some events may have been lost on: " + gap.channels.join(", ");
  });
}());
</script>
</html>
"""


class Demo:
    """The demo's state: its SSE extension, recent chat, the clock thread and the running job.

    Every publish goes through :meth:`publish`, under one lock, so a rendered page's
    chat history and resume id always describe the same moment.
    """

    def __init__(self, app: Flask) -> None:
        # Pages reconnect 1 s after a drop; each channel keeps 200 events for replay.
        app.config.update(SSE_RETRY=1000, SSE_REPLAY_SIZE=200)
        self.sse = SSE(app)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_id: str | None = None
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._job: dict[str, Any] | None = None
        self._jobs = 0
        self._job_thread: threading.Thread | None = None
        self._clock_thread = threading.Thread(target=self._clock, name="clock", daemon=True)

    def publish(self, data: dict[str, Any], event: str, channel: str) -> str | None:
        """Publish ``data`` as JSON and remember it for pages rendered later; the event's id."""
        with self._lock:
            if self._stop.is_set():
                return None
            published = self.sse.publish(data, event=event, channel=channel)
            self._last_id = published.id
            if channel == "chat":
                self._history.append({"id": published.id, **data})
            elif channel == "jobs":
                self._job = data
            return published.id

    def snapshot(self) -> dict[str, Any]:
        """What a fresh page starts from: recent chat, the job's state, the id to resume after."""
        with self._lock:
            return {"history": list(self._history), "job": self._job, "lastEventId": self._last_id}

    def start(self) -> None:
        """Start the clock (one tick at once, so every page has an id to resume from)."""
        self._tick()
        self._clock_thread.start()

    def start_job(self) -> int | None:
        """Start the background job; its number, or None while one is still running."""
        with self._lock:
            if self._stop.is_set() or (self._job_thread is not None and self._job_thread.is_alive()):
                return None
            self._jobs += 1
            number = self._jobs
            self._job_thread = threading.Thread(target=self._run_job, args=(number,), name="job", daemon=True)
            self._job_thread.start()
            return number

    def close(self) -> None:
        """Stop the threads and end every stream."""
        with self._lock:
            self._stop.set()
            job = self._job_thread
        self.sse.broker.close()
        for thread in (self._clock_thread, job):
            if thread is not None and thread.is_alive():
                thread.join(2)

    def _tick(self) -> None:
        self.publish({"time": time.strftime("%H:%M:%S")}, "tick", "clock")

    def _clock(self) -> None:
        while not self._stop.wait(1 - time.time() % 1):  # on the second
            self._tick()

    def _run_job(self, number: int) -> None:
        """Simulated work: progress 0..100 over JOB_SECONDS."""
        for step in range(JOB_STEPS + 1):
            if step and self._stop.wait(JOB_SECONDS / JOB_STEPS):
                return
            self.publish({"job": number, "percent": step * 100 // JOB_STEPS}, "progress", "jobs")


def create_app() -> tuple[Flask, Demo]:
    """The Flask app and its demo state (the clock starts with :meth:`Demo.start`)."""
    app = Flask(__name__)
    demo = Demo(app)

    def answer(status: int, **body: object) -> ResponseReturnValue:
        """JSON for the page's script; a redirect back to the page for a plain form post."""
        if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "application/json":
            return body, status
        return redirect("/", 303)

    @app.before_request
    def same_origin_posts_only() -> ResponseReturnValue | None:
        # Another site's page could post a form here (and /drop ends every stream):
        # browsers name the page that sent a POST in Origin, or mark it in Sec-Fetch-Site.
        if request.method != "POST":
            return None
        origin = request.headers.get("Origin")
        foreign = origin is not None and origin != request.host_url.rstrip("/")
        if foreign or request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
            return answer(403, error="posts come from this page only")
        return None

    @app.get("/")
    def page() -> ResponseReturnValue:
        initial = json.dumps(demo.snapshot()).replace("<", "\\u003c")  # safe inside <script>
        html = (PAGE.replace("__TIME__", time.strftime("%H:%M:%S")).replace("__MAX_NAME__", str(MAX_NAME))
                .replace("__MAX_TEXT__", str(MAX_TEXT))
                .replace("__INITIAL__", initial))  # last: chat text may hold the other markers
        return Response(html, mimetype="text/html")

    @app.post("/chat")
    def chat() -> ResponseReturnValue:
        name = request.form.get("name", "").strip() or "guest"
        text = request.form.get("text", "").strip()
        if not text or len(text) > MAX_TEXT or len(name) > MAX_NAME:
            return answer(400, error=f"a message needs 1 to {MAX_TEXT} characters, a name at most {MAX_NAME}")
        event_id = demo.publish({"name": name, "text": text, "time": time.strftime("%H:%M:%S")},
                                "chat", "chat")
        return answer(201, id=event_id)

    @app.post("/job")
    def job() -> ResponseReturnValue:
        number = demo.start_job()
        if number is None:
            return answer(409, error="a job is already running")
        return answer(202, job=number)

    @app.post("/drop")
    def drop() -> ResponseReturnValue:
        # What a restarting proxy or a network blip does; the pages resume without loss.
        return answer(200, dropped=demo.sse.broker.disconnect_all())  # type: ignore[attr-defined]

    return app, demo


def main(argv: list[str] | None = None) -> None:
    """Serve the demo until Ctrl-C."""
    parser = argparse.ArgumentParser(description="sseproto demo: live chat, clock and progress bar")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    args = parser.parse_args(argv)
    app, demo = create_app()
    server = make_server(args.host, args.port, app, threaded=True)
    demo.start()
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"sseproto demo at http://{host}:{server.server_port}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
        server.server_close()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
