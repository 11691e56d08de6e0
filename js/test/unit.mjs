// Timing and transport rules of the polyfill, checked with a fake window in a Node VM:
// fake XMLHttpRequest and fake timers, so delays are read, never waited for.
// Usage: node test/unit.mjs [script] (default: the source; pass the minified build too).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import vm from 'node:vm';

const source = readFileSync(process.argv[2] || new URL('../eventsource.js', import.meta.url), 'utf8');

function setup(url = 'http://a.test/sse', options = { heartbeatTimeout: 0, bufferLimit: 100 }, extra = {}) {
  const timers = new Map();
  let next = 1;
  const xhrs = [];
  class FakeXHR {
    constructor() {
      this.readyState = 0;
      this.status = 0;
      this.responseText = '';
      this.headers = {};
      this.withCredentials = false;
      this.onprogress = null;
      this.aborted = false;
    }
    open(method, url) {
      xhrs.push(this); // opened ones only: the polyfill may make one to probe for CORS
      this.url = url;
      this.readyState = 1;
    }
    setRequestHeader(k, v) {
      this.headers[k] = v;
    }
    overrideMimeType() {}
    send() {}
    abort() {
      this.aborted = true;
    }
    getResponseHeader(name) {
      return name === 'Content-Type' ? this.type : null;
    }
    respond(status = 200, type = 'text/event-stream', url = undefined) {
      this.status = status;
      this.type = type;
      this.responseURL = url; // after redirects; undefined where XMLHttpRequest has none
      this.readyState = 2;
      this.onreadystatechange();
    }
    push(text) {
      this.readyState = 3;
      this.responseText += text;
      this.onprogress();
    }
    finish() {
      this.readyState = 4;
      this.onreadystatechange();
    }
    fail() {
      this.status = 0;
      this.readyState = 4;
      this.onreadystatechange();
    }
  }
  // IE 8/9: an XMLHttpRequest without withCredentials, and XDomainRequest, which shows
  // no status or headers, only contentType.
  class FakeXDR extends FakeXHR {
    constructor() {
      super();
      delete this.withCredentials;
      this.onload = this.onerror = null;
    }
    respond(status = 200, type = 'text/event-stream') {
      this.contentType = type;
    }
    finish() {
      this.onload();
    }
  }
  const window = { location: { href: 'http://a.test/page' }, XMLHttpRequest: FakeXHR, ...extra };
  if (window.XMLHttpRequest === 'poll') {
    // No progress events: the text is read when the response completes.
    window.XMLHttpRequest = class extends FakeXHR {
      constructor() {
        super();
        delete this.onprogress;
      }
      push(text) {
        this.readyState = 3;
        this.responseText += text;
      }
    };
  }
  if (window.XDomainRequest === true) {
    window.XDomainRequest = FakeXDR;
    window.XMLHttpRequest = class extends FakeXHR {
      constructor() {
        super();
        delete this.withCredentials;
      }
    };
  }
  const context = {
    window,
    setTimeout(fn, ms) {
      timers.set(next, { fn, ms });
      return next++;
    },
    clearTimeout(id) {
      timers.delete(id);
    },
  };
  vm.runInNewContext(source, context);
  const log = [];
  const es = new window.EventSourcePolyfill(url, options);
  es.onopen = () => log.push('open');
  es.onerror = () => log.push(`error ${es.readyState}`);
  es.onmessage = (e) => log.push(`message ${e.data}`);
  // The one pending reconnection timer: its delay, and a function that fires it.
  const pending = () => {
    assert.equal(timers.size, 1, 'one timer pending');
    const [[id, t]] = timers;
    return { ms: t.ms, fire: () => (timers.delete(id), t.fn()) };
  };
  return { es, xhrs, log, pending, timers, window };
}

test('the retry field sets the reconnection time, without a lower clamp', () => {
  const { xhrs, pending } = setup();
  xhrs[0].respond();
  xhrs[0].push('retry: 7\n\n');
  xhrs[0].finish();
  assert.equal(pending().ms, 7);
});

test('retry 0 reconnects at once; an empty retry restores the default', () => {
  const { xhrs, pending } = setup();
  xhrs[0].respond();
  xhrs[0].push('retry: 0\n\n');
  xhrs[0].finish();
  const t = pending();
  assert.equal(t.ms, 0);
  t.fire();
  xhrs[1].respond();
  xhrs[1].push('retry:\n\n');
  xhrs[1].finish();
  assert.equal(pending().ms, 3000);
});

test('a reconnection time beyond what setTimeout takes is clamped to 2^31-1 ms', () => {
  const { xhrs, pending } = setup();
  xhrs[0].respond();
  xhrs[0].push('retry: 18446744073709551615\n\n');
  xhrs[0].finish();
  assert.equal(pending().ms, 2147483647);
});

test('failures before an open back off exponentially up to 30 s, and an open resets it', () => {
  const { xhrs, pending, log } = setup();
  const delays = [];
  for (let i = 0; i < 6; i++) {
    xhrs[i].fail();
    const t = pending();
    delays.push(t.ms);
    t.fire();
  }
  assert.deepEqual(delays, [3000, 6000, 12000, 24000, 30000, 30000]);
  assert.deepEqual(log, Array(6).fill('error 0'));
  xhrs[6].respond();
  xhrs[6].finish();
  assert.equal(pending().ms, 3000);
});

test('a reconnection sends the last event id, and an unfinished event is dropped', () => {
  const { xhrs, pending, log } = setup();
  xhrs[0].respond();
  xhrs[0].push('id: 1\ndata: a\n\nid: 2\ndata: b');
  xhrs[0].finish();
  pending().fire();
  assert.equal(xhrs[1].headers['Last-Event-ID'], '1');
  assert.equal(xhrs[1].url, 'http://a.test/sse');
  assert.deepEqual(log, ['open', 'message a', 'error 0']);
});

test('past bufferLimit, a fresh request starts between two events, silently', () => {
  const { xhrs, log, timers, pending } = setup();
  xhrs[0].respond();
  xhrs[0].push(`id: 1\ndata: ${'x'.repeat(120)}\n\ndata: y`);
  assert.equal(xhrs.length, 1, 'not between events: no new request');
  xhrs[0].push('\n\n');
  assert.ok(xhrs[0].aborted);
  const fresh = pending(); // from a timer, not in the task that aborted the last request
  assert.equal(fresh.ms, 0);
  fresh.fire();
  assert.equal(xhrs.length, 2);
  assert.equal(xhrs[1].headers['Last-Event-ID'], '1');
  xhrs[1].respond();
  xhrs[1].push('data: z\n\n');
  assert.deepEqual(log, ['open', `message ${'x'.repeat(120)}`, 'message y', 'message z']);
  assert.equal(timers.size, 0);
});

test('204, other statuses and other content types fail the connection', () => {
  for (const [status, type] of [[204, 'text/event-stream'], [500, 'text/event-stream'], [200, 'text/plain'], [200, null]]) {
    const { es, xhrs, log, timers } = setup();
    xhrs[0].respond(status, type);
    assert.equal(es.readyState, 2);
    assert.deepEqual(log, ['error 2']);
    assert.equal(timers.size, 0);
    assert.ok(xhrs[0].aborted);
  }
  const { es, xhrs } = setup();
  xhrs[0].respond(200, 'Text/Event-Stream; charset=utf-8');
  assert.equal(es.readyState, 1);
});

test('close() aborts the request and cancels every timer', () => {
  const { es, xhrs, timers, log } = setup();
  xhrs[0].respond();
  es.close();
  assert.ok(xhrs[0].aborted);
  assert.equal(timers.size, 0);
  xhrs[0].push('data: late\n\n');
  assert.deepEqual(log, ['open']);
});

test('the heartbeat timeout counts as a drop', () => {
  const { xhrs, pending, log } = setup('http://a.test/sse', { heartbeatTimeout: 500 });
  xhrs[0].respond();
  const beat = pending();
  assert.equal(beat.ms, 500);
  beat.fire();
  assert.ok(xhrs[0].aborted);
  assert.deepEqual(log, ['open', 'error 0']);
  assert.equal(pending().ms, 3000);
});

test('cross-origin, the last event id goes in the query, and the fragment goes', () => {
  const { es, xhrs, pending } = setup('http://b.test/sse?x=1#frag');
  assert.equal(es.url, 'http://b.test/sse?x=1#frag');
  assert.equal(xhrs[0].url, 'http://b.test/sse?x=1');
  xhrs[0].respond();
  xhrs[0].push('id: a&b\ndata: 1\n\n');
  xhrs[0].fail();
  pending().fire();
  assert.equal(xhrs[1].url, 'http://b.test/sse?x=1&lastEventId=a%26b');
  assert.deepEqual(xhrs[1].headers, { Accept: 'text/event-stream' });
});

test('a parser callback that feeds another parser leaves this one undisturbed', () => {
  const { window } = setup();
  const Parser = window.EventSourcePolyfill._Parser;
  const got = [];
  const inner = new Parser((type, data) => got.push(`inner ${data}`));
  const outer = new Parser((type, data) => {
    got.push(`outer ${data}`);
    inner.feed('data: x\n\ndata: y\n\n');
  });
  outer.feed('data: 1\n\ndata: 2\n\n');
  assert.deepEqual(got, ['outer 1', 'inner x', 'inner y', 'outer 2', 'inner x', 'inner y']);
});

test('installs itself as EventSource only where none is usable', () => {
  const usable = function EventSource() {};
  usable.prototype.withCredentials = false;
  const old = function EventSource() {}; // before CORS: no withCredentials
  for (const [existing, installed] of [[undefined, true], [usable, false], [old, true]]) {
    const { window } = setup('http://a.test/sse', {}, { EventSource: existing });
    assert.equal(typeof window.EventSourcePolyfill, 'function');
    assert.equal(window.EventSource === window.EventSourcePolyfill, installed);
    if (!installed) assert.equal(window.EventSource, existing);
  }
});

test('constants, url, withCredentials and the initial readyState', () => {
  const { es, window } = setup('/sse?x=1', { withCredentials: 1 });
  const ES = window.EventSourcePolyfill;
  assert.deepEqual([ES.CONNECTING, ES.OPEN, ES.CLOSED, es.CONNECTING, es.OPEN, es.CLOSED], [0, 1, 2, 0, 1, 2]);
  assert.equal(es.readyState, 0);
  assert.equal(es.withCredentials, true);
  assert.equal(es.url, '/sse?x=1'); // no document here to resolve it against
});

test('an on<type> handler keeps its place while set, loses it when seen null, and must be callable', () => {
  const { es } = setup();
  const calls = [];
  es.onmessage = () => calls.push('h1');
  es.addEventListener('message', () => calls.push('g'));
  es.onmessage = null;
  es.addEventListener('message', () => calls.push('k'));
  es.onmessage = () => calls.push('h2');
  es.dispatchEvent({ type: 'message' });
  es.onmessage = { handleEvent: () => calls.push('object handler') };
  es.addEventListener('message', { handleEvent: () => calls.push('object listener') });
  es.dispatchEvent({ type: 'message' });
  assert.deepEqual(calls, ['g', 'k', 'h2', 'g', 'k', 'object listener']);
});

test('IE 8/9 cross-origin: XDomainRequest, its contentType checked, the id in the query', () => {
  const { es, xhrs, log, pending } = setup('http://b.test/sse', { heartbeatTimeout: 0 }, { XDomainRequest: true });
  assert.equal(xhrs.length, 1);
  assert.deepEqual(xhrs[0].headers, {}); // XDomainRequest sets no header
  xhrs[0].respond();
  xhrs[0].push('id: 5\ndata: a\n\n');
  xhrs[0].finish();
  pending().fire();
  assert.equal(xhrs[1].url, 'http://b.test/sse?lastEventId=5');
  xhrs[1].respond(200, 'text/plain');
  xhrs[1].push('data: no\n\n');
  assert.equal(es.readyState, 2);
  assert.deepEqual(log, ['open', 'message a', 'error 0', 'error 2']);
});

test('long-polling: the next request goes at once after an event, else after the reconnection time', () => {
  const { es, xhrs, log, pending } = setup('http://a.test/sse', { heartbeatTimeout: 0 }, { XMLHttpRequest: 'poll' });
  xhrs[0].respond();
  xhrs[0].push('retry: 500\nid: 1\ndata: a\n\n');
  assert.deepEqual(log, ['open'], 'nothing is read before the response completes');
  xhrs[0].finish();
  assert.deepEqual(log, ['open', 'message a']);
  let next = pending();
  assert.equal(next.ms, 0);
  next.fire();
  assert.equal(xhrs[1].headers['Last-Event-ID'], '1');
  xhrs[1].respond();
  xhrs[1].push(': nothing new\n');
  xhrs[1].finish();
  next = pending();
  assert.equal(next.ms, 500);
  next.fire();
  assert.equal(xhrs.length, 3);
  assert.equal(es.readyState, 1); // a completed response is no error here
  assert.deepEqual(log, ['open', 'message a']);
  xhrs[2].fail();
  assert.deepEqual(log, ['open', 'message a', 'error 0']);
});

// Every name Object.prototype holds that a plain-object registry could trip on.
const PROTO_NAMES = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', '__defineGetter__'];

test('event types named after Object.prototype members are dispatched like any other', () => {
  const { es, xhrs, log } = setup('http://a.test/sse', { heartbeatTimeout: 0 });
  const stream = PROTO_NAMES.map((n) => `event: ${n}\ndata: ${n}\n\n`).join('') + 'data: after\n\n';
  xhrs[0].respond();
  xhrs[0].push(stream); // no listener of these types yet: dispatched to nobody
  assert.deepEqual(log, ['open', 'message after']);
  const listener = (e) => log.push(`${e.type} ${e.data}`);
  for (const n of PROTO_NAMES) es.addEventListener(n, listener);
  xhrs[0].push(stream);
  assert.deepEqual(log.slice(2), [...PROTO_NAMES.map((n) => `${n} ${n}`), 'message after']);
  for (const n of PROTO_NAMES) es.removeEventListener(n, listener);
  assert.equal(es.dispatchEvent({ type: '__proto__' }), true);
  xhrs[0].push(stream); // each event went once: nothing is delivered again
  assert.deepEqual(log.slice(2 + PROTO_NAMES.length + 1), ['message after']);
  assert.equal(es.readyState, 1);
});

test("events carry the origin of the response's final URL, connection by connection", () => {
  const { es, xhrs, pending } = setup();
  const origins = [];
  es.addEventListener('message', (e) => origins.push(e.origin));
  xhrs[0].respond(200, 'text/event-stream', 'http://B.test:8080/moved?x=1'); // redirected
  xhrs[0].push('data: 1\n\n');
  xhrs[0].fail();
  pending().fire();
  assert.equal(xhrs[1].url, 'http://a.test/sse'); // a reconnection asks the URL given
  xhrs[1].respond(200, 'text/event-stream', 'http://a.test/sse'); // not redirected this time
  xhrs[1].push('data: 2\n\n');
  assert.deepEqual(origins, ['http://b.test:8080', 'http://a.test']);
  // Without responseURL (older browsers, XDomainRequest), the origin of the URL asked.
  const old = setup('http://c.test:81/sse', { heartbeatTimeout: 0 }, { XDomainRequest: true });
  old.es.addEventListener('message', (e) => origins.push(e.origin));
  old.xhrs[0].respond();
  old.xhrs[0].push('data: 3\n\n');
  assert.deepEqual(origins.slice(2), ['http://c.test:81']);
});

// A stream cut after a dispatch, and what the log shows then.
function overCap(options, ...chunks) {
  const { es, xhrs, log, timers } = setup('http://a.test/sse', { heartbeatTimeout: 0, ...options });
  xhrs[0].respond();
  const states = chunks.map((chunk) => (xhrs[0].push(chunk), es.readyState));
  xhrs[0].push('\n\ndata: late\n\n');
  return { log, states, timers: timers.size, aborted: xhrs[0].aborted, requests: xhrs.length };
}

test('a line over maxLineSize fails the connection, after the events completed before it', () => {
  const failed = { log: ['open', 'message a', 'error 2'], timers: 0, aborted: true, requests: 1 };
  // Growing across chunks: 100 characters pass, the 101st fails.
  assert.deepEqual(overCap({ maxLineSize: 100 }, `data: a\n\ndata: ${'x'.repeat(94)}`, 'x'), { ...failed, states: [1, 2] });
  // Whole in one chunk (a comment counts too); what follows it is not read.
  assert.deepEqual(overCap({ maxLineSize: 100 }, `data: a\n\n:${'c'.repeat(100)}\ndata: b\n\n`), { ...failed, states: [2] });
  // At the cap, or with an Infinity cap, nothing fails.
  const ok = overCap({ maxLineSize: 100 }, `data: a\n\n:${'c'.repeat(99)}\ndata: ${'x'.repeat(94)}\n\n`);
  assert.deepEqual(ok.log, ['open', 'message a', `message ${'x'.repeat(94)}`, 'message late']);
  assert.deepEqual(overCap({ maxLineSize: Infinity }, `data: ${'x'.repeat(5e6)}`).states, [1]);
});

test('an event over maxEventSize characters of data (each line counts its LF) fails the connection', () => {
  const line = `data: ${'x'.repeat(49)}\n`; // 50 characters of data
  const failed = overCap({ maxEventSize: 100 }, `data: a\n\n${line}${line}`, 'data\n');
  assert.deepEqual(failed, { log: ['open', 'message a', 'error 2'], states: [1, 2], timers: 0, aborted: true, requests: 1 });
  // The cap is per event.
  const ok = overCap({ maxEventSize: 100 }, `${line}${line}\n${line}${line}\n`);
  assert.deepEqual(ok.log, ['open', `message ${'x'.repeat(49)}\n${'x'.repeat(49)}`, `message ${'x'.repeat(49)}\n${'x'.repeat(49)}`, 'message late']);
});

test('the default caps are 4 MiB characters for a line and for an event', () => {
  const M4 = 4 * 1024 * 1024;
  assert.deepEqual(overCap({}, `data: ${'x'.repeat(M4 - 6)}`, 'x').states, [1, 2]);
  const half = `data:${'y'.repeat(M4 / 2 - 1)}\n`; // M4 / 2 characters of data
  assert.deepEqual(overCap({}, half + half, 'data\n').states, [1, 2]);
});

test('a listener that closes the source before a line over the cap sees no error event', () => {
  const { es, xhrs, log } = setup('http://a.test/sse', { heartbeatTimeout: 0, maxLineSize: 10 });
  es.addEventListener('message', () => es.close());
  xhrs[0].respond();
  xhrs[0].push(`data: a\n\n${'x'.repeat(20)}`);
  assert.deepEqual(log, ['open', 'message a']);
  assert.equal(es.readyState, 2);
});

test('the parser reports a cap after the same events however the stream is split', () => {
  const { window } = setup();
  const Parser = window.EventSourcePolyfill._Parser;
  const streams = [
    `data: a\n\nid: 1\ndata: b\n\n:${'c'.repeat(40)}\ndata: after\n\n`, // a comment over the line cap
    `data: a\n\ndata: ${'x'.repeat(30)}\r\ndata: ${'y'.repeat(30)}\rdata: z\n\n`, // data over the event cap
  ];
  for (const stream of streams) {
    const outcomes = new Set();
    for (const size of [stream.length, 1, 2, 3, 7, 16]) {
      const got = [];
      const p = new Parser((type, data, id) => got.push(type === undefined ? 'over' : `${type} ${data} ${id}`), 32, 64);
      for (let i = 0; i < stream.length && !got.includes('over'); i += size) p.feed(stream.slice(i, i + size));
      outcomes.add(JSON.stringify(got.slice(0, got.indexOf('over') + 1)));
    }
    assert.equal(outcomes.size, 1, [...outcomes].join(' | '));
    assert.ok([...outcomes][0].endsWith('"over"]'));
  }
});
