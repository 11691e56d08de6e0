if (typeof window == 'undefined' && typeof self != 'undefined') self.window = self;
/*! sseproto EventSource polyfill | MIT */
/*
 * An EventSource for browsers without a usable one, in plain ES5 (it also parses as ES3).
 * UMD: CommonJS and AMD export the constructor; in a browser it is always
 * window.EventSourcePolyfill, and window.EventSource only when the browser has no usable
 * one (none, or one without withCredentials, which predates CORS).
 *
 * new EventSourcePolyfill(url, {withCredentials, heartbeatTimeout, bufferLimit,
 *                               maxLineSize, maxEventSize})
 *   heartbeatTimeout  ms without a byte before the connection counts as dropped
 *                     (default 45000; 0 turns it off)
 *   bufferLimit       characters an XHR/XDomainRequest response may grow to before the
 *                     polyfill reconnects, between two events, resuming from the last
 *                     event id (default 262144); the fetch transport keeps no such buffer
 *   maxLineSize       characters (UTF-16 code units) a line may hold, without its line
 *                     end, comments too (default 4194304; Infinity: no cap)
 *   maxEventSize      characters of data an event may hold, each data line counting one
 *                     more for its LF (default 4194304; Infinity: no cap)
 *   Past either cap the connection fails, as for a bad response: error, CLOSED, no
 *   reconnection. The events completed before the line that went over are delivered.
 *
 * Transports, best first: fetch with a streamed body; XMLHttpRequest progress events;
 * XDomainRequest (IE 8/9, cross-origin); XMLHttpRequest without progress events, read
 * when each response completes (long-polling). A same-origin reconnection sends the
 * Last-Event-ID header; a cross-origin one appends ?lastEventId= instead, which needs no
 * CORS preflight, and so does one whose id is not printable ASCII without spaces.
 *
 * Differences from a native EventSource, all documented: a reconnection time above
 * 2^31-1 ms (what setTimeout takes) is clamped to it; repeated failures back off
 * exponentially up to max(reconnection time, 30 s); an onmessage/onopen/onerror handler
 * set to null and set again with no listener added, removed or dispatched in between
 * keeps its place; a listener's exception is rethrown from a timer; events are plain
 * objects; after a redirect, a reconnection asks the URL given again, where Chromium
 * asks where the redirect led (events carry the origin of the response's final URL in
 * both); lines and events have size caps (above). Over XMLHttpRequest and
 * XDomainRequest the browser decodes the text and drops a leading BOM first, so a CR or
 * LF right after it ends a line, as the standard says (Chromium's native EventSource
 * instead reads it as text of the first line).
 *
 * EventSourcePolyfill._Parser and EventSourcePolyfill._Utf8 are internal, exposed for
 * tests only.
 */
(function (root, factory) {
  var ES = factory(root);
  if (typeof define == 'function' && define.amd) define(function () { return ES; });
  else if (typeof module == 'object' && module.exports) module.exports = ES;
  if (root) {
    root.EventSourcePolyfill = ES;
    // A native EventSource without withCredentials predates CORS: not usable
    // cross-origin, so it is replaced too.
    var N = root.EventSource;
    if (!N || !('withCredentials' in (N.prototype || {}))) root.EventSource = ES;
  }
}(typeof window != 'undefined' ? window : null, function (win) {
  var CONNECTING = 0;
  var OPEN = 1;
  var CLOSED = 2;
  var DEFAULT_RETRY = 3000; // Chromium's default reconnection time
  var MAX_DELAY = 2147483647; // the largest delay setTimeout takes
  var MAX_RETRY = '18446744073709551615'; // Chromium ignores a retry above 2^64-1
  var MAX_SIZE = 4194304; // default caps of a line and of an event, as sseproto's Decoder
  var LINE_END = /\r\n|[\r\n]/g;
  var HANDLERS = /^(open|message|error)$/;
  var MIME = /^\s*text\/event-stream\s*(;|$)/i;
  var ORIGIN = /^([^:\/?#]+:\/\/)(?:[^\/?#@]*@)?([^\/?#]*)/;
  var doc = win && win.document;
  var fromCharCode = String.fromCharCode;

  /* ---- UTF-8 ---- */

  // An incremental UTF-8 decoder, for fetch without TextDecoder. It follows the WHATWG
  // Encoding standard's "UTF-8 decoder": each maximal invalid subpart becomes one U+FFFD
  // and a sequence split across chunks is completed by the next one.
  function utf8() {
    var need = 0; // continuation bytes still to come
    var cp; // the code point so far
    var lo; // the range of the next continuation byte, set by each lead byte
    var hi;
    return function (bytes) {
      var out = '';
      var i = 0;
      var b;
      while (i < bytes.length) {
        b = bytes[i++];
        if (need) {
          if (b < lo || b > hi) {
            // Not a continuation byte here: one U+FFFD, then the byte starts anew.
            need = 0;
            i--;
            b = 0xfffd;
          } else {
            cp = (cp << 6) | (b & 0x3f);
            b = --need ? -1 : cp;
          }
          lo = 0x80;
          hi = 0xbf;
        } else if (b > 0x7f) {
          if (b < 0xc2 || b > 0xf4) {
            b = 0xfffd; // never a lead byte
          } else {
            // C2..DF lead 2 bytes, E0..EF 3, F0..F4 4. The second byte's range is
            // narrower after E0 and F0 (no overlong form), ED (no surrogate) and F4
            // (nothing above U+10FFFF).
            need = b > 0xef ? 3 : b > 0xdf ? 2 : 1;
            cp = b & (0x3f >> need);
            lo = b == 0xe0 ? 0xa0 : b == 0xf0 ? 0x90 : 0x80;
            hi = b == 0xed ? 0x9f : b == 0xf4 ? 0x8f : 0xbf;
            b = -1;
          }
        }
        // Above U+FFFF: a surrogate pair (0xd7c0 + (b >> 10) is 0xd800 + ((b - 0x10000) >> 10)).
        if (b > 0xffff) out += fromCharCode(0xd7c0 + (b >> 10), 0xdc00 + (b & 0x3ff));
        else if (b >= 0) out += fromCharCode(b);
      }
      return out;
    };
  }

  /* ---- The event-stream parser (WHATWG HTML, "Parsing an event stream") ---- */

  // Text in, events out: onEvent(type, data, lastEventId) for each dispatch. Feed the
  // decoded text of one connection in pieces split anywhere; end() when it closes.
  // A line longer than maxLine characters (its unfinished part counts as soon as it is
  // fed), or an event's data longer than maxEvent, is reported as onEvent() without
  // arguments, after the events before it, whatever the pieces; the caller is then to
  // stop feeding (the EventSource fails the connection, which ends the parser) until
  // end(). An undefined cap is none: a comparison with undefined is false.
  function Parser(onEvent, maxLine, maxEvent) {
    this._on = onEvent;
    this.lastEventId = ''; // the "last event ID string"
    this.retry = null; // ms the stream asked for; null: the client's default
    this._ml = maxLine;
    this._me = maxEvent;
    this.end();
  }

  function limit(p, text, max) {
    if (text.length > max) p._on(); // over a cap
  }

  Parser.prototype.feed = function (text) {
    var p = this;
    var i = 0;
    var buf;
    var m;
    var line;
    if (p._start) {
      // "One leading U+FEFF BYTE ORDER MARK character must be ignored if any are present."
      if (p._start == 1 && text.charCodeAt(0) == 0xfeff) {
        text = text.slice(1);
        p._start = 2;
      }
      if (!text) return;
      // Chromium takes a CR or LF right after that BOM as text of the first line, not as
      // its end (spec/vectors/bom.json): it goes into the buffer, where no search looks.
      if (p._start == 2 && /^[\r\n]/.test(text)) {
        p._buf = text.charAt(0);
        text = text.slice(1);
      }
      p._start = 0;
    }
    if (!text) return;
    if (p._cr) {
      // The last piece ended with CR, which ended its line: an LF now belongs to it.
      p._cr = 0;
      if (text.charAt(0) == '\n') text = text.slice(1);
    }
    buf = p._buf + text;
    // Lines end with CRLF, LF or CR; the buffer holds none, so search only the new text.
    LINE_END.lastIndex = p._buf.length;
    while ((m = LINE_END.exec(buf))) {
      limit(p, (line = buf.slice(i, m.index)), p._ml);
      i = LINE_END.lastIndex;
      parseLine(p, line); // may run listeners, which may feed another parser
      LINE_END.lastIndex = i;
    }
    p._cr = i == buf.length && buf.charAt(i - 1) == '\r'; // a CR that ended a line
    limit(p, (p._buf = buf.slice(i)), p._ml); // the unfinished line counts too
  };

  function parseLine(p, line) {
    var colon = line.indexOf(':');
    var name = line;
    var value = '';
    var id;
    if (!line) {
      // A blank line dispatches: the last event ID string takes the buffer's value even
      // when no event follows; an empty data buffer dispatches nothing.
      id = p.lastEventId = p._id;
      value = p._data;
      name = p._type || 'message';
      p._data = p._type = '';
      if (value) p._on(name, value.slice(0, -1), id);
      return;
    }
    if (colon == 0) return; // a comment
    if (colon > 0) {
      // One leading space of the value is dropped, no more.
      name = line.slice(0, colon);
      value = line.slice(colon + (line.charAt(colon + 1) == ' ' ? 2 : 1));
    }
    if (name == 'data') {
      limit(p, (p._data += value + '\n'), p._me);
    } else if (name == 'event') {
      p._type = value;
    } else if (name == 'id') {
      if (value.indexOf('\0') < 0) p._id = value;
    } else if (name == 'retry') {
      if (!value) {
        p.retry = null; // Chromium resets the reconnection time to its default
      } else if (/^\d+$/.test(value)) {
        // ASCII digits only (\d is no more in JavaScript); compared as digit strings,
        // without leading zeros, so that 2^64-1 is exact ("" left is 0).
        value = value.replace(/^0+/, '');
        if (value.length < 20 || (value.length == 20 && value <= MAX_RETRY)) p.retry = +value;
      }
    }
  }

  // The connection closed: the unfinished event is dropped, and the next connection's
  // id buffer starts from the last event ID string, as in browsers.
  Parser.prototype.end = function () {
    var p = this;
    p._buf = p._data = p._type = '';
    p._id = p.lastEventId;
    p._start = 1;
    p._cr = 0;
  };

  // Between two events, with nothing pending: a reconnection now loses nothing.
  function idle(p) {
    return !(p._buf || p._data || p._type || p._id != p.lastEventId);
  }

  /* ---- Events and listeners (DOM "EventTarget") ---- */

  function Ev(type, props) {
    this.type = type;
    for (var k in props) this[k] = props[k];
  }
  Ev.prototype = {
    preventDefault: function () {},
    stopPropagation: function () {},
    stopImmediatePropagation: function () {
      this._stop = 1;
    }
  };

  // The listener list of one type. An on<type> handler takes the place in it where it
  // is first seen set, as a native handler takes the place where it was first set, and
  // loses it when seen null (looked at on each add, remove and dispatch of that type).
  // Lists are kept under "on" + type, the name of the type's handler attribute: no key
  // is then a name Object.prototype holds (__proto__, constructor, toString...). This is
  // the one place that indexes by type.
  function listeners(es, type) {
    var key = 'on' + type;
    var list = es._ls[key] || (es._ls[key] = []);
    var on = HANDLERS.test(type) && es[key];
    var i = find(list, list, 0);
    if (!on) unlist(list, i);
    else if (i < 0) list.push({ _f: list, _c: 0 });
    return list;
  }

  // A removed listener is marked, so that a dispatch under way skips it.
  function unlist(list, i) {
    if (i >= 0) list.splice(i, 1)[0]._gone = 1;
  }

  function capture(options) {
    return !!(options && typeof options == 'object' ? options.capture : options);
  }

  function find(list, fn, cap) {
    for (var i = 0; i < list.length; i++) if (list[i]._f === fn && list[i]._c === cap) return i;
    return -1;
  }

  function dispatch(es, ev) {
    var list0 = listeners(es, ev.type);
    var list = list0.slice();
    var i;
    var l;
    var f;
    var h;
    ev.target = ev.currentTarget = es;
    for (i = 0; i < list.length && !ev._stop; i++) {
      l = list[i];
      if (l._gone) continue;
      // The handler's slot holds the list itself; a handler is called only if callable.
      h = l._f === list0;
      f = h ? es['on' + ev.type] : l._f;
      if (l._once) es.removeEventListener(ev.type, f, l._c);
      try {
        if (typeof f == 'function') f.call(es, ev);
        else if (!h && f && typeof f.handleEvent == 'function') f.handleEvent(ev);
      } catch (e) {
        // Reported like an uncaught exception in a native listener; the others still run.
        setTimeout(function () {
          throw e;
        }, 0);
      }
    }
    return !ev.defaultPrevented;
  }

  /* ---- EventSource ---- */

  function origin(url) {
    var m = ORIGIN.exec(url);
    return m ? (m[1] + m[2]).toLowerCase() : 'null';
  }

  function EventSource(url, init) {
    var es = this;
    var a;
    init = init || {};
    url = String(url);
    if (doc) {
      a = doc.createElement('a');
      a.href = url;
      url = a.href; // resolved against the document's base URL
    }
    es.url = url;
    es.withCredentials = !!init.withCredentials;
    es.readyState = CONNECTING;
    es.onopen = es.onmessage = es.onerror = null;
    es._ls = {};
    es._org = origin(url);
    es._same = !win || es._org == origin(win.location.href);
    es._hb = init.heartbeatTimeout == null ? 45000 : +init.heartbeatTimeout;
    es._max = init.bufferLimit || 262144;
    es._fails = 0;
    es._p = new Parser(
      function (type, data, id) {
        if (es.readyState == OPEN) {
          if (!type) return drop(es, 1); // a line or an event over its cap: fatal
          es._got = 1;
          dispatch(es, new Ev(type, { data: data, lastEventId: id, origin: es._org }));
        }
      },
      init.maxLineSize || MAX_SIZE,
      init.maxEventSize || MAX_SIZE
    );
    connect(es);
  }

  EventSource.prototype = {
    constructor: EventSource,
    CONNECTING: CONNECTING,
    OPEN: OPEN,
    CLOSED: CLOSED,
    close: function () {
      this.readyState = CLOSED;
      stop(this);
    },
    addEventListener: function (type, fn, options) {
      var list = listeners(this, type);
      var cap = capture(options);
      if (fn && find(list, fn, cap) < 0) list.push({ _f: fn, _c: cap, _once: !!(options && options.once) });
    },
    removeEventListener: function (type, fn, options) {
      var list = listeners(this, type);
      unlist(list, find(list, fn, capture(options)));
    },
    dispatchEvent: function (ev) {
      return dispatch(this, ev);
    }
  };
  EventSource.CONNECTING = CONNECTING;
  EventSource.OPEN = OPEN;
  EventSource.CLOSED = CLOSED;
  EventSource._Parser = Parser;
  EventSource._Utf8 = utf8;

  // Ends the current connection, its timers and its parsing (the unfinished event is
  // dropped); the caller decides what comes next.
  function stop(es) {
    es._p.end();
    clearTimeout(es._timer);
    clearTimeout(es._beat);
    es._conn = null;
    if (es._abort) es._abort();
    es._abort = null;
  }

  function fire(es, type) {
    dispatch(es, new Ev(type));
  }

  // The connection ends in error. fatal: "fail the connection" (CLOSED, no reconnection);
  // else "reestablish the connection": CONNECTING, and a new request after the
  // reconnection time (doubled after each failure that never reached OPEN).
  function drop(es, fatal) {
    var retry = retryOf(es._p);
    var delay = Math.min(retry * Math.pow(2, es._fails++), Math.max(retry, 30000));
    stop(es);
    if (es.readyState == CLOSED) return;
    es.readyState = fatal ? CLOSED : CONNECTING;
    fire(es, 'error');
    if (es.readyState == CONNECTING) later(es, delay);
  }

  // The reconnection time in ms, clamped to what setTimeout takes.
  function retryOf(p) {
    return p.retry == null ? DEFAULT_RETRY : Math.min(p.retry, MAX_DELAY);
  }

  function later(es, delay) {
    es._timer = setTimeout(function () {
      connect(es);
    }, delay);
  }

  function heartbeat(es, conn) {
    clearTimeout(es._beat);
    if (es._hb > 0) {
      es._beat = setTimeout(function () {
        if (es._conn == conn) drop(es);
      }, es._hb);
    }
  }

  function connect(es) {
    var p = es._p;
    var id = p.lastEventId;
    var url = es.url.replace(/#.*/, '');
    var headers = { Accept: 'text/event-stream' };
    var conn = {};
    var X;
    es._conn = conn;
    es._got = 0;
    if (id) {
      // A header value must be printable ASCII (and fetch trims spaces): other ids, and
      // cross-origin requests, use the query parameter.
      if (es._same && /^[!-~]+$/.test(id)) headers['Last-Event-ID'] = id;
      else url += (url.indexOf('?') < 0 ? '?' : '&') + 'lastEventId=' + encodeURIComponent(id);
    }
    // The transport calls these three; once the connection is replaced, they do nothing.
    // url: the response's, after redirects, where the transport tells it.
    conn.head = function (status, type, url) {
      if (es._conn != conn) return;
      if (status != 200 || !MIME.test(type)) return drop(es, 1);
      if (url) es._org = origin(url); // events carry the origin of the final URL
      es._fails = 0;
      heartbeat(es, conn);
      if (es.readyState == CONNECTING) {
        es.readyState = OPEN;
        fire(es, 'open');
      }
    };
    conn.data = function (text, size) {
      if (es._conn != conn) return;
      heartbeat(es, conn);
      p.feed(text);
      if (size > es._max && es._conn == conn && idle(p)) {
        // Bounded memory: a fresh response, resuming from the last event id. From a
        // timer: a request sent in the task that aborted the last one, Chromium may send
        // twice.
        stop(es);
        later(es, 0);
      }
    };
    conn.end = function (error, poll) {
      if (es._conn != conn) return;
      if (!error && poll) {
        // Long-polling: a complete response is the normal case; ask again at once after
        // an event, else after the reconnection time.
        stop(es);
        later(es, es._got ? 0 : retryOf(p));
        return;
      }
      drop(es);
    };
    heartbeat(es, conn);
    try {
      X = win.XMLHttpRequest;
      if (win.fetch && win.ReadableStream) {
        es._abort = viaFetch(url, headers, es.withCredentials, conn);
      } else {
        p._start = 0; // responseText is decoded as the XHR standard says: without the BOM
        es._abort =
          X && (es._same || 'withCredentials' in new X())
            ? viaXhr(new X(), url, headers, es.withCredentials, conn)
            : viaXhr(new win.XDomainRequest(), url, null, 0, conn);
      }
    } catch (e) {
      // No transport, or one that refused the request: a network error, retried.
      setTimeout(function () {
        conn.end(1);
      }, 0);
    }
  }

  /* ---- Transports: each returns a function that aborts the request ---- */

  function viaFetch(url, headers, credentials, conn) {
    var ctl = win.AbortController && new win.AbortController();
    var decode;
    var reader;
    var done;
    var td = win.TextDecoder && new win.TextDecoder('utf-8', { ignoreBOM: true });
    decode = td ? function (bytes) { return td.decode(bytes, { stream: true }); } : utf8();
    function error() {
      if (!done) conn.end(1);
    }
    win
      .fetch(url, {
        headers: headers,
        credentials: credentials ? 'include' : 'same-origin',
        cache: 'no-store',
        signal: ctl && ctl.signal
      })
      .then(function (res) {
        reader = res.body && res.body.getReader();
        conn.head(res.status, res.headers.get('Content-Type'), res.url);
        if (done) {
          if (reader) reader.cancel();
          return;
        }
        (function pump() {
          reader.read().then(function (r) {
            if (done) return;
            if (r.done) conn.end();
            else {
              conn.data(decode(r.value));
              pump();
            }
          }, error);
        })();
      }, error);
    return function () {
      done = 1;
      if (ctl) ctl.abort();
      else if (reader) reader.cancel();
    };
  }

  // XMLHttpRequest (headers is an object) or XDomainRequest (headers is null).
  function viaXhr(x, url, headers, credentials, conn) {
    var seen = 0;
    var status = 0;
    var poll = !('onprogress' in x);
    function progress() {
      var text;
      try {
        // Old IE throws on reading status and responseText while loading. XDomainRequest
        // shows no status: it has loaded only if it was 200.
        if (!status) {
          if (!headers) conn.head((status = 200), x.contentType);
          else if ((status = x.status)) conn.head(status, x.getResponseHeader('Content-Type'), x.responseURL);
        }
        text = x.responseText;
      } catch (e) {
        return;
      }
      if (text && text.length > seen) {
        conn.data(text.slice(seen), text.length);
        seen = text.length;
      }
    }
    x.open('GET', url, true);
    if (headers) {
      for (var k in headers) x.setRequestHeader(k, headers[k]);
      if (credentials) x.withCredentials = true;
      if (x.overrideMimeType) x.overrideMimeType('text/plain;charset=utf-8'); // always UTF-8
      x.onreadystatechange = function () {
        if (x.readyState > 1) progress();
        if (x.readyState == 4) conn.end(!status, poll);
      };
    } else {
      x.onload = function () {
        progress();
        conn.end(0, poll);
      };
      x.onerror = x.ontimeout = function () {
        conn.end(1);
      };
    }
    x.onprogress = progress;
    x.send(null);
    return function () {
      x.onprogress = x.onload = x.onerror = x.onreadystatechange = x.ontimeout = function () {};
      x.abort();
    };
  }

  return EventSource;
}));
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
