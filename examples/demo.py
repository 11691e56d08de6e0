"""A live page on sseproto's Flask extension: chat, a server clock, a job's progress bar, live plots.

Run ``python3 examples/demo.py`` (``--host``, ``--port``, ``--replay-age``) and open the
URL it prints in two windows; ``/?polyfill=1`` runs the page on the polyfill instead of
the browser's EventSource. One stream per page carries five channels from the in-memory
broker: ``chat``, ``clock`` (a tick each second, on the second), ``jobs`` (progress),
``stats`` (each second: streams open, events published) and ``load`` (bursts on demand).
Every event carries the server time it was published at, so the page plots its delivery
latency. A page that loses its connection replays what it missed from its
``Last-Event-ID`` and lists what was replayed; past the replay window it shows the gap
event. A fresh page gets the recent chat with the HTML and resumes the stream from the id
the server had reached when it rendered that HTML.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import threading
import time
from collections import deque
from typing import Any

from flask import Flask, Response, redirect, request
from flask.typing import ResponseReturnValue
from werkzeug.serving import make_server

from sseproto.flask import SSE

CHANNELS = ("chat", "clock", "jobs", "stats", "load")
HISTORY = 50  # chat messages a fresh page shows
PLOTTED = 60  # seconds of stats a fresh page plots at once (a sparkline's width)
JOB_SECONDS = 5.0
JOB_STEPS = 20
BURST_EVENTS = 1000
BURST_SECONDS = 2.0
MAX_NAME = 40
MAX_TEXT = 500
REPLAY_AGE = 30.0  # seconds of events each channel keeps for pages that reconnect
MAX_BEHIND = 5  # seconds the clock catches up one by one; further behind, it starts again from now

FAVICON = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">\
<rect width="32" height="32" rx="7" fill="#2563eb"/>\
<polyline points="4,21 10,21 13,9 18,25 21,15 28,15" fill="none" stroke="#fff" stroke-width="3" \
stroke-linecap="round" stroke-linejoin="round"/></svg>
"""

PAGE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sseproto demo</title>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<style>
  :root { --bg: #f5f6f8; --card: #fff; --ink: #1d2330; --dim: #5d6676; --line: #dde1e7;
          --accent: #2563eb; --ok: #15803d; --warn: #b45309; --bad: #b91c1c;
          --eps: #2563eb; --streams: #7c3aed; --latency: #db2777; }
  @media (prefers-color-scheme: dark) {
    :root { --bg: #12151b; --card: #1b2029; --ink: #e6e9ef; --dim: #9aa3b2; --line: #2d3440;
            --accent: #60a5fa; --ok: #4ade80; --warn: #fbbf24; --bad: #f87171;
            --eps: #60a5fa; --streams: #a78bfa; --latency: #f472b6; }
  }
  * { box-sizing: border-box; }
  body { font: 15px/1.45 system-ui, sans-serif; color: var(--ink); background: var(--bg); margin: 0; }
  header, main { max-width: 72rem; margin: 0 auto; padding: 0 1rem; }
  header { padding-top: 1rem; }
  h1 { font-size: 1.5rem; margin: 0 0 .25rem; display: flex; align-items: center; gap: .5rem; }
  h2 { font-size: 1.05rem; margin: 0 0 .6rem; }
  .lede, .fine { color: var(--dim); margin: .25rem 0; }
  .fine { font-size: .85rem; }
  .status { display: flex; flex-wrap: wrap; gap: .35rem .9rem; align-items: center; margin: .6rem 0; }
  .status output { font-weight: 600; }
  .pill { display: inline-block; padding: .05rem .6rem; border-radius: 1rem; font-weight: 700;
          font-size: .8rem; letter-spacing: .03em; color: #fff; background: var(--warn); }
  .pill[data-state="OPEN"] { background: var(--ok); }
  .pill[data-state="CLOSED"] { background: var(--bad); }
  .banner { border-radius: .5rem; padding: .6rem .8rem; margin: .5rem 0; }
  .banner:empty { display: none; }
  #notice { background: #fef3c7; color: #78350f; }
  #gap { background: #fee2e2; color: #7f1d1d; border-left: 4px solid var(--bad); }
  .noscript { background: #fef3c7; color: #78350f; border-left: 4px solid var(--warn); }
  main { display: grid; grid-template-columns: repeat(auto-fit, minmax(20rem, 1fr)); gap: 1rem;
         padding-bottom: 2rem; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: .75rem; padding: 1rem;
          min-width: 0; }
  .wide { grid-column: 1 / -1; }
  .plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(14rem, 1fr)); gap: .75rem 1.25rem; }
  .plot .head { display: flex; justify-content: space-between; align-items: baseline; }
  .plot .now { font-size: 1.35rem; font-weight: 700; font-variant-numeric: tabular-nums; }
  .plot svg { display: block; width: 100%; height: 56px; border-bottom: 1px solid var(--line); }
  .plot polyline { fill: none; stroke-width: 2; vector-effect: non-scaling-stroke;
                   stroke-linejoin: round; stroke-linecap: round; }
  .plot polygon { opacity: .15; stroke: none; }
  #eps polyline { stroke: var(--eps); } #eps polygon { fill: var(--eps); }
  #streams polyline { stroke: var(--streams); } #streams polygon { fill: var(--streams); }
  #latency polyline { stroke: var(--latency); } #latency polygon { fill: var(--latency); }
  .clock { font-size: 3rem; font-weight: 700; font-variant-numeric: tabular-nums; margin: .25rem 0;
           letter-spacing: .02em; }
  form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; margin: .5rem 0 0; }
  .buttons { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
  .buttons form { margin: 0; }
  label { display: flex; flex-direction: column; font-size: .85rem; color: var(--dim); }
  input { font: inherit; padding: .35rem .5rem; border: 1px solid var(--line); border-radius: .4rem;
          background: var(--bg); color: var(--ink); }
  button { font: inherit; padding: .4rem .8rem; border: 0; border-radius: .4rem; background: var(--accent);
           color: #fff; cursor: pointer; }
  button.secondary { background: var(--dim); }
  progress { width: 14rem; height: 1rem; }
  .log { max-height: 14rem; overflow-y: auto; margin: .5rem 0 0; padding-left: 2rem; font-size: .85rem; }
  .log time, #messages time { color: var(--dim); font-size: .85em; font-variant-numeric: tabular-nums; }
  .log code { font-weight: 600; }
  #messages { max-height: 16rem; overflow-y: auto; list-style: none; padding: 0; margin: 0; }
  #replayed { padding-left: 2.75rem; }
  #replay-count { font-weight: 700; }
</style>
<noscript><style>.needs-js { display: none !important; }</style></noscript>
<header>
  <h1><img src="/favicon.svg" alt="" width="28" height="28"> sseproto demo</h1>
  <p class="lede">Server-sent events from one Flask process on sseproto's embedded broker: one stream
    per page, five channels, replay after a drop. Open it in two windows.</p>
  <noscript><p class="banner noscript" id="noscript"><strong>JavaScript is off.</strong> The live parts
    of this page (the stream, the clock, the plots, the replay) need it. The chat and the job still work:
    the forms post and this page comes back showing the chat as it was then; reload to see newer
    messages.</p>
  </noscript>
  <p class="status needs-js">
    <span class="pill" id="state" data-state="CONNECTING">CONNECTING</span>
    <span>on <output id="transport">?</output> EventSource (<output id="transport-how">?</output>)</span>
    <span>connections: <output id="opens">0</output></span>
    <span>last event id: <output id="last-id">none</output></span>
    <a id="switch" href="/?polyfill=1">Run on the polyfill</a>
  </p>
  <p id="notice" class="banner" role="status"></p>
  <p id="gap" class="banner" role="alert"></p>
</header>
<main>
<section class="card wide needs-js" aria-labelledby="live-title">
  <h2 id="live-title">Live</h2>
  <div class="plots">
    <div class="plot">
      <div class="head"><span>Events published</span>
        <span><span class="now" id="eps-now">&ndash;</span> /s</span></div>
      <svg id="eps" viewBox="0 0 120 40" preserveAspectRatio="none" role="img"
           aria-label="Events the server published per second, last minute"><polygon/><polyline/></svg>
      <p class="fine">peak <span id="eps-max">&ndash;</span>/s ·
        this page received <output id="received">0</output></p>
    </div>
    <div class="plot">
      <div class="head"><span>Streams open</span><span class="now" id="streams-now">&ndash;</span></div>
      <svg id="streams" viewBox="0 0 120 40" preserveAspectRatio="none" role="img"
           aria-label="Streams the server holds open, last minute"><polygon/><polyline/></svg>
      <p class="fine">peak <span id="streams-max">&ndash;</span> · one per open page</p>
    </div>
    <div class="plot">
      <div class="head"><span>Delivery latency</span>
        <span><span class="now" id="latency-now">&ndash;</span> ms</span></div>
      <svg id="latency" viewBox="0 0 120 40" preserveAspectRatio="none" role="img"
           aria-label="Delivery latency, slowest event of each second, last minute">
        <polygon/><polyline/></svg>
      <p class="fine">slowest event each second, publish to page ·
        peak <span id="latency-max">&ndash;</span> ms</p>
    </div>
  </div>
  <form method="post" action="/burst" id="burst-form">
    <button>Publish a burst of __BURST__ events</button>
    <output id="burst-state" class="fine">__BURST__ events in __BURST_SECONDS__ s on the
      <code>load</code> channel: watch the plots, and the clock keep its pace</output>
  </form>
</section>

<section class="card" aria-labelledby="clock-title">
  <h2 id="clock-title">Server clock</h2>
  <p class="clock"><time id="clock" data-second="__SECOND__">__TIME__</time></p>
  <p class="fine needs-js">A tick each second, on the second, carrying the server's time;
    delivered in <output id="tick-latency">&ndash;</output> ms.</p>
</section>

<section class="card needs-js" aria-labelledby="replay-title">
  <h2 id="replay-title">Replay and gaps</h2>
  <p class="fine">A page that loses its stream comes back with the last event id it saw and the server replays
    what it missed: the last __REPLAY_AGE__ s of each channel. Away longer, and the page is told so.</p>
  <div class="buttons">
    <form method="post" action="/drop" id="drop-form"><button>Drop every stream</button></form>
    <button type="button" class="secondary" id="offline">Go offline</button>
  </div>
  <p id="replay-summary" class="fine">No reconnection yet: drop the streams, or take this page offline for a
    while, and see here what the server replays.</p>
  <ol id="replayed" class="log"></ol>
  <p id="replay-more" class="fine"></p>
</section>

<section class="card" aria-labelledby="job-title">
  <h2 id="job-title">Background job</h2>
  <form method="post" action="/job">
    <button id="start-job">Start a 5-second job</button>
    <label for="job-progress">Progress <progress id="job-progress" max="100" value="__JOB_PERCENT__">\
__JOB_PERCENT__%</progress></label>
    <output id="job-state" for="job-progress">__JOB_STATE__</output>
  </form>
</section>

<section class="card wide" aria-labelledby="chat-title">
  <h2 id="chat-title">Chat</h2>
  <ol id="messages" aria-live="polite">__MESSAGES__</ol>
  <form method="post" action="/chat" id="chat-form">
    <label>Name <input name="name" maxlength="__MAX_NAME__" value="guest" required></label>
    <label>Message <input name="text" maxlength="__MAX_TEXT__" autocomplete="off" required></label>
    <button>Send</button>
  </form>
</section>
</main>

<script type="application/json" id="initial">__INITIAL__</script>
<script src="/sse/eventsource.js"></script>
<script>
// Plain ES5, like the polyfill: the page also runs where only the polyfill gives EventSource.
(function () {
  "use strict";
  function $(id) { return document.getElementById(id); }
  var initial = JSON.parse($("initial").textContent);
  var CHANNELS = ["chat", "clock", "jobs", "stats", "load"];
  var POINTS = 60;  // a minute of samples per plot
  var LISTED = 100;  // replayed events listed; past it, counted
  var seen = {};  // chat ids on the page: a replay after a gap repeats what it already shows
  var shownSecond = initial.tick ? initial.tick.second : 0;
  var lastId = initial.lastEventId;

  function pad(n) { return n < 10 ? "0" + n : String(n); }
  function clockOf(ms) {
    var d = new Date(ms);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function text(el, value) { el.textContent = value; return el; }

  // A sparkline: the last POINTS values as an SVG polyline over its shaded area, scaled to its peak.
  function Plot(name, digits) {
    this.svg = $(name);
    this.area = this.svg.getElementsByTagName("polygon")[0];
    this.line = this.svg.getElementsByTagName("polyline")[0];
    this.now = $(name + "-now");
    this.peak = $(name + "-max");
    this.digits = digits;
    this.values = [];
  }
  Plot.prototype.push = function (value) {
    var values = this.values, points = [], max = 0, i, x, top;
    values.push(value);
    if (values.length > POINTS) values.shift();
    for (i = 0; i < values.length; i++) if (values[i] > max) max = values[i];
    top = max > 0 ? max * 1.15 : 1;
    for (i = 0; i < values.length; i++) {
      x = (POINTS - values.length + i) * 120 / (POINTS - 1);
      points.push(x.toFixed(2) + "," + (39 - values[i] / top * 37).toFixed(2));
    }
    this.line.setAttribute("points", points.join(" "));
    x = (POINTS - values.length) * 120 / (POINTS - 1);
    this.area.setAttribute("points", x.toFixed(2) + ",40 " + points.join(" ") + " 120,40");
    this.svg.setAttribute("data-samples", String(values.length));
    text(this.now, value.toFixed(this.digits));
    text(this.peak, max.toFixed(this.digits));
  };
  var plots = { eps: new Plot("eps", 0), streams: new Plot("streams", 0), latency: new Plot("latency", 1) };
  function showStats(s) {
    plots.eps.push(s.published);
    plots.streams.push(s.streams);
  }
  for (var i = 0; i < initial.stats.length; i++) showStats(initial.stats[i]);  // the last minute

  // Chat lines the server rendered are already on the page.
  var rendered = $("messages").getElementsByTagName("li");
  for (var r = 0; r < rendered.length; r++) seen[rendered[r].getAttribute("data-id")] = true;

  function showChat(id, m) {
    if (seen[id]) return;
    seen[id] = true;
    var li = document.createElement("li");
    li.setAttribute("data-id", id);
    li.appendChild(text(document.createElement("time"), m.time));
    li.appendChild(document.createTextNode(" "));
    li.appendChild(text(document.createElement("b"), m.name));
    li.appendChild(document.createTextNode(": " + m.text));
    $("messages").appendChild(li);
    $("messages").scrollTop = $("messages").scrollHeight;
  }
  function showJob(p) {
    $("job-progress").value = p.percent;
    text($("job-progress"), p.percent + "%");
    text($("job-state"), p.percent >= 100 ? "done" : "job " + p.job + ": " + p.percent + "%");
  }
  // The server's time, as the tick carries it; never backwards, never twice (a replay may
  // bring ticks the page has shown).
  function showTick(t) {
    if (t.second <= shownSecond) return;
    shownSecond = t.second;
    text($("clock"), t.time).setAttribute("data-second", String(t.second));
  }
  function describe(type, d) {
    if (type === "tick") return d.time;
    if (type === "chat") return d.name + ": " + d.text;
    if (type === "progress") return "job " + d.job + ": " + d.percent + "%";
    if (type === "stats") return d.streams + " streams, " + d.published + " events/s";
    if (type === "load") return "#" + d.n + " of " + d.of;
    return "";
  }

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
        text($("notice"), ok ? "" : (body.error || "request failed: " + xhr.status));
        if (ok && form.id === "chat-form") {
          form.elements.text.value = "";
          form.elements.text.focus();
        }
        if (ok && form.id === "drop-form") {
          text($("replay-summary"), "Dropped " + body.dropped + " stream" + (body.dropped === 1 ? "" : "s") +
               " at " + clockOf(Date.now()) + ": every page reconnects in about a second and replays " +
               "what it missed.");
        }
      };
      xhr.onerror = function () { text($("notice"), "request failed: network error"); };
      xhr.send(new FormData(form));
    });
  }
  var forms = document.getElementsByTagName("form");
  for (var f = 0; f < forms.length; f++) background(forms[f]);

  // ?polyfill=1: the polyfill even where the browser has EventSource. Without the switch,
  // window.EventSource is the browser's, or the polyfill where the browser has none.
  var wantPolyfill = /[?&]polyfill=1(&|$)/.test(location.search);
  var ES = wantPolyfill ? window.EventSourcePolyfill : window.EventSource;
  var polyfill = !!ES && ES === window.EventSourcePolyfill;
  text($("transport"), !ES ? "no" : polyfill ? "polyfill" : "native");
  text($("transport-how"), !ES ? "none" : !polyfill ? "built into the browser" :
       window.fetch && window.ReadableStream ? "fetch stream" : "XMLHttpRequest");
  if (polyfill) {
    $("switch").href = "/";
    text($("switch"), window.EventSource === window.EventSourcePolyfill ? "" : "Run on native EventSource");
  }
  if (!ES) { text($("state"), "unavailable"); return; }

  var source = null;
  var offline = false;
  var opens = 0;
  var received = 0;
  var conn = null;  // the current connection: when it opened, what it replayed
  var slowest = 0;  // ms: the slowest live event since the last tick
  var lastSent = null;  // when the newest event this page has was published
  var states = ["CONNECTING", "OPEN", "CLOSED"];

  function showState() {
    var state = states[source.readyState];
    text($("state"), state).setAttribute("data-state", state);
  }
  function showReplay() {
    var s = $("replay-summary");
    s.textContent = "";
    s.appendChild(document.createTextNode((conn.n === 1 ? "The first connection" : "Connection " + conn.n) +
      " opened at " + clockOf(conn.openedAt) + " and replayed "));
    s.appendChild(text(document.createElement("span"), String(conn.count))).id = "replay-count";
    s.appendChild(document.createTextNode(" event" + (conn.count === 1 ? "" : "s") +
      " published while this page " + (conn.n === 1 ? "loaded" : "was away") +
      (conn.gap ? "; gap on " + conn.gap.join(", ") : "") +
      (conn.repeats ? "; " + conn.repeats + " it already had were skipped" : "") + "."));
    text($("replay-more"), conn.count > LISTED ? "… and " + (conn.count - LISTED) + " more" : "");
  }
  function replayed(type, d) {
    if (conn.count === 0 && conn.n === 1) $("replayed").innerHTML = "";
    conn.count += 1;
    if (conn.count <= LISTED) {
      var li = document.createElement("li");
      li.appendChild(text(document.createElement("time"), clockOf(d.sent)));
      li.appendChild(document.createTextNode(" "));
      li.appendChild(text(document.createElement("code"), type));
      li.appendChild(document.createTextNode(" " + describe(type, d)));
      $("replayed").appendChild(li);
    }
    showReplay();
  }

  function on(type, handle) {
    source.addEventListener(type, function (e) {
      var d = JSON.parse(e.data);
      // After a gap the server replays all it still holds, some of it seen before going away.
      if (conn.seenUpTo !== null && d.sent <= conn.seenUpTo) {
        conn.repeats += 1;
        showReplay();
        return;
      }
      lastSent = lastSent === null ? d.sent : Math.max(lastSent, d.sent);
      lastId = e.lastEventId || lastId;
      if (e.lastEventId) text($("last-id"), e.lastEventId);
      text($("received"), String(received += 1));
      // Published before this connection opened: it comes from the server's replay.
      // (Both times are read on one machine; across machines their clocks must agree.)
      var isReplay = !conn.live && d.sent <= conn.openedAt;
      if (isReplay) replayed(type, d);
      else {
        conn.live = true;
        slowest = Math.max(slowest, Date.now() - d.sent);
      }
      handle(d, e.lastEventId, isReplay);
    });
  }

  // One stream, five channels. lastEventId resumes from where the server was when it
  // rendered this page (or where this page was when it went offline); on a reconnection the
  // Last-Event-ID header wins over it.
  function connect(fromId) {
    var url = "/sse/stream?channel=" + CHANNELS.join("&channel=");
    if (fromId) url += "&lastEventId=" + encodeURIComponent(fromId);
    source = window.source = new ES(url);  // global, to try things from the console
    source.onopen = function () {
      opens += 1;
      text($("opens"), String(opens));
      conn = { n: opens, openedAt: Date.now(), live: false, count: 0, gap: null, repeats: 0,
               seenUpTo: opens > 1 ? lastSent : null };
      if (opens > 1) {
        $("replayed").innerHTML = "";
        showReplay();
      }
      showState();
    };
    source.onerror = showState;
    on("chat", function (m, id) { showChat(id, m); });
    on("progress", showJob);
    on("tick", function (t, id, isReplay) {
      showTick(t);
      if (isReplay) return;
      var latency = Math.max(0, Date.now() - t.sent);
      text($("tick-latency"), latency.toFixed(1));
      plots.latency.push(Math.max(0, slowest));
      slowest = 0;
    });
    on("stats", showStats);
    on("load", function (d, id, isReplay) {
      if (!isReplay) text($("burst-state"), "load: #" + d.n + " of " + d.of + " received");
    });
    source.addEventListener("sseproto.gap", function (e) {
      var gap = JSON.parse(e.data);
      if (conn) conn.gap = gap.channels;
      text($("gap"), "Gap at " + clockOf(Date.now()) + ": the server no longer held the events after id " +
           gap.lastEventId + " on " + gap.channels.join(", ") + " (it keeps " + initial.replayAge +
           " s of them), so events there may be lost. The page got what the server still had; reload it " +
           "for the recent chat.");
      if (conn) showReplay();
    });
  }
  connect(initial.lastEventId);

  // Offline: this page alone closes its stream, and comes back from its last event id.
  $("offline").onclick = function () {
    offline = !offline;
    if (offline) {
      source.close();
      showState();
      text($("replay-summary"), "Offline since " + clockOf(Date.now()) + ": what the server publishes " +
           "now is replayed when this page comes back (within " + initial.replayAge + " s; later, the " +
           "page is told of the gap).");
    } else {
      connect(lastId);
    }
    text(this, offline ? "Come back online" : "Go offline");
  };
}());
</script>
</html>
"""


def clock_text(seconds: float) -> str:
    """Local wall-clock time of ``seconds`` since the epoch, as HH:MM:SS.

    Always from an explicit time: ``time.strftime()`` and ``time.localtime()`` without one
    read C's ``time()``, which glibc serves from a coarse clock (a few ms behind
    ``time.time()``), so just after a second begins they still name the previous one.
    """
    return time.strftime("%H:%M:%S", time.localtime(seconds))


class ClockSchedule:
    """When the clock ticks: each wall-clock second once, in order, published at its start.

    Give it the time; it answers which seconds to publish now and how long to wait. A wait
    that ends early publishes nothing; one that ends late publishes every second it passed
    (up to ``MAX_BEHIND``: a process that was suspended, or a clock set forward, starts again
    from now, and so does a clock set back).
    """

    def __init__(self, now: float) -> None:
        self.due = math.floor(now) + 1  # the next second to publish

    def poll(self, now: float) -> tuple[list[int], float]:
        """The seconds to publish at ``now``, and the seconds until the next is due."""
        if now < self.due - 1 or now >= self.due + MAX_BEHIND:
            self.due = math.floor(now) + (1 if now < self.due else 0)
        if now < self.due:
            return [], self.due - now
        seconds = list(range(self.due, math.floor(now) + 1))
        self.due = seconds[-1] + 1
        return seconds, self.due - now


class Demo:
    """The demo's state: its SSE extension, recent chat, the clock thread, the job and the burst.

    Every publish goes through :meth:`publish`, under one lock, so a rendered page's
    chat history and resume id always describe the same moment.
    """

    def __init__(self, app: Flask, replay_age: float = REPLAY_AGE) -> None:
        # Pages reconnect 1 s after a drop; each channel keeps its last replay_age seconds
        # (and at most 2000 events: a burst fits) for replay.
        app.config.update(SSE_RETRY=1000, SSE_REPLAY_SIZE=2000, SSE_REPLAY_MAX_AGE=replay_age)
        self.sse = SSE(app)
        self.replay_age = replay_age
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_id: str | None = None
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._job: dict[str, Any] | None = None
        self._tick: dict[str, Any] | None = None
        self._stats: deque[dict[str, Any]] = deque(maxlen=PLOTTED)
        self._published = 0
        self._jobs = 0
        self._workers: dict[str, threading.Thread] = {}
        self._clock_thread: threading.Thread | None = None

    def publish(self, data: dict[str, Any], event: str, channel: str) -> str | None:
        """Publish ``data`` as JSON, stamped with the time it went out; the event's id."""
        with self._lock:
            if self._stop.is_set():
                return None
            data = {**data, "sent": round(time.time() * 1000, 3)}  # ms since the epoch
            published = self.sse.publish(data, event=event, channel=channel)
            self._published += 1
            self._last_id = published.id
            if channel == "chat":
                self._history.append({"id": published.id, **data})
            elif channel == "jobs":
                self._job = data
            elif event == "tick":
                self._tick = data
            elif event == "stats":
                self._stats.append(data)
            return published.id

    def snapshot(self) -> dict[str, Any]:
        """What a fresh page starts from: chat, job, clock and stats as of the id it resumes after."""
        with self._lock:
            return {"history": list(self._history), "job": self._job, "tick": self._tick,
                    "stats": list(self._stats), "lastEventId": self._last_id}

    def start(self) -> None:
        """Start the clock (one tick at once, so every page has an id to resume from)."""
        now = time.time()
        self._publish_tick(math.floor(now))
        self._clock_thread = threading.Thread(target=self._clock, args=(ClockSchedule(now),), name="clock",
                                              daemon=True)
        self._clock_thread.start()

    def start_worker(self, kind: str) -> int | None:
        """Start the background ``"job"`` or ``"burst"``: its number, or None while one still runs."""
        with self._lock:
            running = self._workers.get(kind)
            if self._stop.is_set() or (running is not None and running.is_alive()):
                return None
            self._jobs += 1
            target = self._run_job if kind == "job" else self._run_burst
            thread = threading.Thread(target=target, args=(self._jobs,), name=kind, daemon=True)
            self._workers[kind] = thread
            thread.start()
            return self._jobs

    def close(self) -> None:
        """Stop the threads and end every stream."""
        with self._lock:
            self._stop.set()
            threads = [self._clock_thread, *self._workers.values()]
        self.sse.broker.close()
        for thread in threads:
            if thread is not None and thread.is_alive():
                thread.join(2)

    def _publish_tick(self, second: int) -> None:
        # The second's own time, whenever the thread woke to publish it.
        self.publish({"time": clock_text(second), "second": second}, "tick", "clock")

    def _clock(self, schedule: ClockSchedule) -> None:
        """Each second: its tick, then the stats of the second that ended."""
        counted, published = time.monotonic(), self._published
        while True:
            seconds, wait = schedule.poll(time.time())
            for second in seconds:
                self._publish_tick(second)
            if seconds:
                now = time.monotonic()
                rate = (self._published - published) / max(now - counted, 1e-3)
                counted, published = now, self._published
                self.publish({"streams": self.sse.endpoint.active_streams, "published": round(rate, 1)},
                             "stats", "stats")
            if self._stop.wait(wait):
                return

    def _run_job(self, number: int) -> None:
        """Simulated work: progress 0..100 over JOB_SECONDS."""
        for step in range(JOB_STEPS + 1):
            if step and self._stop.wait(JOB_SECONDS / JOB_STEPS):
                return
            self.publish({"job": number, "percent": step * 100 // JOB_STEPS}, "progress", "jobs")

    def _run_burst(self, number: int) -> None:
        """BURST_EVENTS small events over BURST_SECONDS, in batches of 10."""
        pause = BURST_SECONDS / (BURST_EVENTS / 10)
        for n in range(1, BURST_EVENTS + 1):
            self.publish({"burst": number, "n": n, "of": BURST_EVENTS}, "load", "load")
            if n % 10 == 0 and self._stop.wait(pause):
                return


def render_page(demo: Demo) -> str:
    """The page as of one snapshot: chat, job and clock shown, the stream resuming after it."""
    snap = demo.snapshot()
    job, tick = snap["job"], snap["tick"]
    messages = "".join(
        f'<li data-id="{html.escape(m["id"])}"><time>{html.escape(m["time"])}</time> '
        f'<b>{html.escape(m["name"])}</b>: {html.escape(m["text"])}</li>'
        for m in snap["history"])
    percent = job["percent"] if job else 0
    state = "idle" if job is None else "done" if percent >= 100 else f"job {job['job']}: {percent}%"
    initial = {"lastEventId": snap["lastEventId"], "tick": tick, "stats": snap["stats"],
               "replayAge": f"{demo.replay_age:g}"}
    values = {
        "__BURST__": str(BURST_EVENTS), "__BURST_SECONDS__": f"{BURST_SECONDS:g}",
        "__REPLAY_AGE__": f"{demo.replay_age:g}", "__MAX_NAME__": str(MAX_NAME),
        "__MAX_TEXT__": str(MAX_TEXT),
        "__SECOND__": str(tick["second"] if tick else 0),
        "__TIME__": tick["time"] if tick else clock_text(time.time()),
        "__JOB_PERCENT__": str(percent), "__JOB_STATE__": state,
    }
    page = PAGE
    for marker, value in values.items():
        page = page.replace(marker, value)
    # Last, so that chat text holding a marker stays as it is.
    page = page.replace("__MESSAGES__", messages)
    return page.replace("__INITIAL__", json.dumps(initial).replace("<", "\\u003c"))  # safe inside <script>


def create_app(replay_age: float = REPLAY_AGE) -> tuple[Flask, Demo]:
    """The Flask app and its demo state (the clock starts with :meth:`Demo.start`)."""
    app = Flask(__name__)
    demo = Demo(app, replay_age)

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
        return Response(render_page(demo), mimetype="text/html")

    @app.get("/favicon.svg")
    def favicon() -> ResponseReturnValue:
        return Response(FAVICON, mimetype="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    @app.post("/chat")
    def chat() -> ResponseReturnValue:
        name = request.form.get("name", "").strip() or "guest"
        text = request.form.get("text", "").strip()
        if not text or len(text) > MAX_TEXT or len(name) > MAX_NAME:
            return answer(400, error=f"a message needs 1 to {MAX_TEXT} characters, a name at most {MAX_NAME}")
        event_id = demo.publish({"name": name, "text": text, "time": clock_text(time.time())}, "chat", "chat")
        return answer(201, id=event_id)

    @app.post("/job")
    def job() -> ResponseReturnValue:
        number = demo.start_worker("job")
        if number is None:
            return answer(409, error="a job is already running")
        return answer(202, job=number)

    @app.post("/burst")
    def burst() -> ResponseReturnValue:
        number = demo.start_worker("burst")
        if number is None:
            return answer(409, error="a burst is already running")
        return answer(202, burst=number, events=BURST_EVENTS)

    @app.post("/drop")
    def drop() -> ResponseReturnValue:
        # What a restarting proxy or a network blip does; the pages resume without loss.
        return answer(200, dropped=demo.sse.broker.disconnect_all())  # type: ignore[attr-defined]

    return app, demo


def main(argv: list[str] | None = None) -> None:
    """Serve the demo until Ctrl-C."""
    parser = argparse.ArgumentParser(description="sseproto demo: live chat, clock, progress bar and plots")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (default 5000)")
    parser.add_argument("--replay-age", type=float, default=REPLAY_AGE, metavar="SECONDS",
                        help=f"seconds of events kept for pages that reconnect (default {REPLAY_AGE:g})")
    args = parser.parse_args(argv)
    if not args.replay_age > 0:
        parser.error("--replay-age must be a positive number of seconds")
    app, demo = create_app(args.replay_age)
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
