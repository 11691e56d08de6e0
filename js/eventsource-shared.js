/*
 * sseproto EventSource polyfill, shared mode: all tabs of an origin share one stream.
 *
 * The build appends this to eventsource.js (sseproto/static/eventsource-shared{,.min}.js):
 * one script, loaded instead of eventsource.js. Then
 *
 *   new EventSourcePolyfill(url, {shared: true, withCredentials, heartbeatTimeout,
 *                                 maxLineSize, maxEventSize, workerUrl})
 *
 * returns a SharedEventSource (also window.SharedEventSource): the same attributes,
 * handlers and events as an EventSource, yet the tabs that open one for the same URL and
 * withCredentials share one connection. Without shared: true it is the plain polyfill.
 *
 * Where SharedWorker exists, a worker (this very script, loaded again as the worker;
 * workerUrl overrides its URL) holds the connection and posts each event to every tab's
 * port. Else, with BroadcastChannel and Web Locks (navigator.locks), the tabs elect a
 * leader with a lock per stream: the leader holds the connection and broadcasts each
 * event; when it closes, the next tab in the lock's queue takes the lock and resumes
 * with Last-Event-ID = the last id it saw, which is the last any tab was sent. Without
 * either, each tab gets its own plain connection.
 *
 * Per tab: readyState follows the shared connection (CONNECTING, OPEN, CLOSED); open
 * fires when it opens (at once for a tab that joins an open one), error on each drop
 * and failure; a leader hand-over fires nothing. lastEventId is that of the last event
 * the tab received. close() detaches this tab only; the connection ends when no tab
 * listens. holding: true in the tab whose leader holds the connection.
 */
(function (win) {
  var CONNECTING = 0;
  var OPEN = 1;
  var CLOSED = 2;
  var MIME = /^\s*text\/event-stream\s*(;|$)/i;
  var ORIGIN = /^([^:\/?#]+:\/\/)(?:[^\/?#@]*@)?([^\/?#]*)/;
  var NAME = 'sseproto-eventsource';
  var Base = win && win.EventSourcePolyfill;
  if (!Base) return;
  var Parser = Base._Parser;
  var doc = win.document;
  var script = doc && doc.currentScript && doc.currentScript.src;
  var worker = !doc && typeof win.WorkerGlobalScope != 'undefined';
  var locks = win.navigator && win.navigator.locks;

  function origin(url) {
    var m = ORIGIN.exec(url);
    return m ? (m[1] + m[2]).toLowerCase() : 'null';
  }

  function uid() {
    return Math.random().toString(36).slice(2) + (+new Date()).toString(36);
  }

  /* ---- The one connection: in the worker or in the leader tab ---- */

  // Holds one stream and reports to emit(msg): {t: 'open'}, {t: 'error', state},
  // {t: 'event', type, data, id, origin}. The same rules as the polyfill's: fetch with a
  // streamed body, Last-Event-ID (header same-origin, query parameter otherwise), the
  // reconnection time of retry: (3 s by default), backing off after failures, a bad
  // response or an oversize line or event ending it for good.
  function Hub(url, init, lastId, emit) {
    var hub = this;
    hub.url = url;
    hub.state = CONNECTING;
    hub.fails = 0;
    hub.hb = init.heartbeatTimeout == null ? 45000 : +init.heartbeatTimeout;
    hub.cred = !!init.withCredentials;
    hub.same = origin(url) == origin(win.location.href);
    hub.emit = emit;
    hub.org = origin(url);
    hub.p = new Parser(
      function (type, data, id) {
        if (hub.state != OPEN) return;
        if (!type) return hub.drop(1);
        hub.emit({ t: 'event', type: type, data: data, id: id, origin: hub.org });
      },
      init.maxLineSize || 4194304,
      init.maxEventSize || 4194304
    );
    hub.p.lastEventId = lastId || '';
    hub.p.end();
    hub.connect();
  }

  Hub.prototype = {
    lastId: function () {
      return this.p.lastEventId;
    },
    halt: function () {
      var hub = this;
      hub.p.end();
      clearTimeout(hub.timer);
      clearTimeout(hub.hbt);
      hub.conn = null;
      if (hub.ctl) hub.ctl.abort();
      hub.ctl = null;
    },
    stop: function () {
      this.state = CLOSED;
      this.halt();
    },
    drop: function (fatal) {
      var hub = this;
      var retry = hub.p.retry == null ? 3000 : Math.min(hub.p.retry, 2147483647);
      var delay = Math.min(retry * Math.pow(2, hub.fails++), Math.max(retry, 30000));
      hub.halt();
      if (hub.state == CLOSED) return;
      hub.state = fatal ? CLOSED : CONNECTING;
      hub.emit({ t: 'error', state: hub.state });
      if (!fatal) {
        hub.timer = setTimeout(function () {
          hub.connect();
        }, delay);
      }
    },
    beat: function (conn) {
      var hub = this;
      clearTimeout(hub.hbt);
      if (hub.hb > 0) {
        hub.hbt = setTimeout(function () {
          if (hub.conn == conn) hub.drop();
        }, hub.hb);
      }
    },
    connect: function () {
      var hub = this;
      var conn = {};
      var id = hub.p.lastEventId;
      var url = hub.url.replace(/#.*/, '');
      var headers = { Accept: 'text/event-stream' };
      var ctl = new win.AbortController();
      var td = new win.TextDecoder('utf-8', { ignoreBOM: true });
      if (id) {
        if (hub.same && /^[!-~]+$/.test(id)) headers['Last-Event-ID'] = id;
        else url += (url.indexOf('?') < 0 ? '?' : '&') + 'lastEventId=' + encodeURIComponent(id);
      }
      hub.conn = conn;
      hub.ctl = ctl;
      hub.beat(conn);
      function error() {
        if (hub.conn == conn) hub.drop();
      }
      win
        .fetch(url, {
          headers: headers,
          credentials: hub.cred ? 'include' : 'same-origin',
          cache: 'no-store',
          signal: ctl.signal
        })
        .then(function (res) {
          var reader;
          if (hub.conn != conn) return;
          if (res.status != 200 || !MIME.test(res.headers.get('Content-Type')) || !res.body) {
            return hub.drop(1);
          }
          if (res.url) hub.org = origin(res.url);
          hub.fails = 0;
          hub.beat(conn);
          hub.state = OPEN;
          hub.emit({ t: 'open' });
          reader = res.body.getReader();
          (function pump() {
            reader.read().then(function (r) {
              if (hub.conn != conn) return;
              if (r.done) return hub.drop();
              hub.beat(conn);
              hub.p.feed(td.decode(r.value, { stream: true }));
              pump();
            }, error);
          })();
        }, error);
    }
  };

  /* ---- The SharedWorker: one hub per (URL, withCredentials), fanned out to ports ---- */

  if (worker) {
    var hubs = {};
    var leave = function (key, cid) {
      var h = hubs[key];
      if (!h || !h.ports[cid]) return;
      delete h.ports[cid];
      for (var k in h.ports) return;
      h.hub.stop();
      delete hubs[key];
    };
    win.onconnect = function (e) {
      var port = e.ports[0];
      port.onmessage = function (m) {
        var d = m.data;
        var h = hubs[d.key];
        if (d.cmd == 'close') return leave(d.key, d.cid);
        if (!h || h.hub.state == CLOSED) {
          h = hubs[d.key] = { ports: {} };
          h.hub = new Hub(d.url, d.init, '', function (msg) {
            for (var cid in h.ports) h.ports[cid].postMessage(msg);
          });
        }
        h.ports[d.cid] = port;
        if (h.hub.state == OPEN) port.postMessage({ t: 'open' });
        // The tab holds a lock named after it while it listens: granted here when the
        // tab closes or goes away, as a MessagePort tells nothing of that.
        if (locks) {
          locks.request(d.cid, function () {
            leave(d.key, d.cid);
          });
        }
      };
    };
    return;
  }

  /* ---- In the tab ---- */

  var Target = win.EventTarget;
  var open = []; // the SharedEventSources of this tab not closed
  var MessageEv = win.MessageEvent;

  function SharedEventSource(url, init) {
    var a;
    var es;
    init = init || {};
    if (!Target || !MessageEv || !win.fetch || !win.ReadableStream || !win.TextDecoder ||
        !win.AbortController || !((win.SharedWorker && (init.workerUrl || script)) ||
        (win.BroadcastChannel && locks))) {
      return new Base(url, init); // nothing to share with: a connection of its own
    }
    es = new Target();
    if (Object.setPrototypeOf) Object.setPrototypeOf(es, SharedEventSource.prototype);
    else es.__proto__ = SharedEventSource.prototype;
    a = doc.createElement('a');
    a.href = String(url);
    es.url = a.href;
    es.withCredentials = !!init.withCredentials;
    es.readyState = CONNECTING;
    es.lastEventId = '';
    es.holding = false;
    es.onopen = es.onmessage = es.onerror = null;
    es._key = JSON.stringify([es.url, es.withCredentials]);
    es._cid = NAME + ':' + uid();
    es._init = {
      withCredentials: es.withCredentials,
      heartbeatTimeout: init.heartbeatTimeout,
      maxLineSize: init.maxLineSize,
      maxEventSize: init.maxEventSize
    };
    open.push(es);
    if (win.SharedWorker && (init.workerUrl || script)) viaWorker(es, init.workerUrl || script);
    else viaLeader(es);
    return es;
  }

  function fire(es, ev) {
    var h = es['on' + ev.type];
    es.dispatchEvent(ev);
    if (typeof h == 'function' && /^(open|message|error)$/.test(ev.type)) {
      try {
        h.call(es, ev);
      } catch (e) {
        setTimeout(function () {
          throw e;
        }, 0);
      }
    }
  }

  // A message of the hub, to this tab.
  function receive(es, msg) {
    if (es.readyState == CLOSED && es._done) return;
    if (msg.t == 'open') {
      if (es.readyState == OPEN) return;
      es.readyState = OPEN;
      fire(es, new win.Event('open'));
    } else if (msg.t == 'error') {
      es.readyState = msg.state;
      fire(es, new win.Event('error'));
    } else if (msg.t == 'event') {
      es.lastEventId = msg.id;
      fire(es, new MessageEv(msg.type, { data: msg.data, lastEventId: msg.id, origin: msg.origin }));
    }
  }

  function viaWorker(es, src) {
    var w = new win.SharedWorker(src, NAME);
    var port = w.port;
    var hello = { cmd: 'open', key: es._key, cid: es._cid, url: es.url, init: es._init };
    port.onmessage = function (m) {
      receive(es, m.data);
    };
    port.start();
    es._detach = function () {
      port.postMessage({ cmd: 'close', key: es._key, cid: es._cid });
      if (es._release) es._release();
    };
    if (!locks) return port.postMessage(hello);
    locks.request(es._cid, function () {
      if (es._done) return;
      port.postMessage(hello);
      return new Promise(function (resolve) {
        es._release = resolve;
      });
    });
  }

  // Leader election: whoever holds the stream's lock holds the connection and
  // broadcasts; the others listen on the channel.
  function viaLeader(es) {
    var bc = new win.BroadcastChannel(NAME + ':' + es._key);
    var ctl = win.AbortController && new win.AbortController();
    var hub;
    var seen = []; // the ids of the last events received, newest last
    var skip = []; // ids a new leader will send again that this tab already has
    var last = ''; // the last id any tab was sent, as far as this tab knows
    function got(msg) {
      if (msg.t == 'event') {
        if (skip.length && skip[0] === msg.id) return skip.shift();
        skip = [];
        last = msg.id;
        seen.push(msg.id);
        if (seen.length > 256) seen.shift();
      }
      receive(es, msg);
    }
    bc.onmessage = function (m) {
      var msg = m.data;
      var i;
      if (msg.t == 'hello') {
        if (hub) bc.postMessage({ t: 'state', state: hub.state, id: hub.lastId() });
      } else if (msg.t == 'state') {
        if (!seen.length) last = msg.id;
        if (msg.state != CONNECTING) receive(es, msg.state == OPEN ? { t: 'open' } : { t: 'error', state: CLOSED });
      } else if (msg.t == 'lead') {
        // A new leader resumes after msg.id: what this tab got after that comes again.
        i = seen.lastIndexOf(msg.id);
        skip = i >= 0 ? seen.slice(i + 1) : [];
      } else if (!hub) {
        got(msg);
      }
    };
    bc.postMessage({ t: 'hello' });
    locks.request(NAME + ':' + es._key, ctl ? { signal: ctl.signal } : {}, function () {
      if (es._done) return;
      es.holding = true;
      bc.postMessage({ t: 'lead', id: last });
      hub = new Hub(es.url, es._init, last, function (msg) {
        bc.postMessage(msg);
        got(msg);
      });
      return new Promise(function (resolve) {
        es._release = resolve;
      });
    })['catch'](function () {}); // aborted by close()
    es._detach = function () {
      if (hub) hub.stop();
      hub = null;
      es.holding = false;
      bc.close();
      if (ctl) ctl.abort();
      if (es._release) es._release();
    };
  }

  SharedEventSource.prototype = Object.create(Target ? Target.prototype : Object.prototype);
  SharedEventSource.prototype.constructor = SharedEventSource;
  SharedEventSource.prototype.close = function () {
    var i = open.indexOf(this);
    if (i >= 0) open.splice(i, 1);
    this.readyState = CLOSED;
    if (!this._done && this._detach) this._detach();
    this._done = 1;
  };
  SharedEventSource.CONNECTING = SharedEventSource.prototype.CONNECTING = CONNECTING;
  SharedEventSource.OPEN = SharedEventSource.prototype.OPEN = OPEN;
  SharedEventSource.CLOSED = SharedEventSource.prototype.CLOSED = CLOSED;

  // A tab that goes away without close() is detached by its locks being released; a
  // page hide says it sooner.
  win.addEventListener('pagehide', function (e) {
    if (!e.persisted) while (open.length) open[0].close();
  });

  function EventSourcePolyfill(url, init) {
    return init && init.shared ? new SharedEventSource(url, init) : new Base(url, init);
  }
  for (var k in Base) if (Object.prototype.hasOwnProperty.call(Base, k)) EventSourcePolyfill[k] = Base[k];
  EventSourcePolyfill.prototype = Base.prototype;
  EventSourcePolyfill.Shared = SharedEventSource;
  win.SharedEventSource = SharedEventSource;
  win.EventSourcePolyfill = EventSourcePolyfill;
  if (win.EventSource === Base) win.EventSource = EventSourcePolyfill;
}(typeof window != 'undefined' ? window : typeof self != 'undefined' ? self : null));
