// The browser side of tests/test_polyfill_browser.py, served by tests/apps/polyfill_app.py.
// Each scenario drives one EventSource (native or the polyfill, whichever window.EventSource
// is on this page) against the sseproto server and answers what it saw; the test runs the
// same scenarios on a page with the native EventSource and compares. Every wait is bounded.
'use strict';

const MODE = window.MODE || 'native';
const OTHER = window.OTHER; // the same server on another port: cross-origin, same-site

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Server calls go over XMLHttpRequest: the legacy pages have no fetch.
function call(method, path, params) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    x.open(method, path + '?' + new URLSearchParams(params || {}));
    x.onload = () => resolve(JSON.parse(x.responseText));
    x.onerror = () => reject(new Error(`${method} ${path} failed`));
    x.send();
  });
}

// One EventSource and a log of what it did: ['open'|'error', readyState] for the
// connection's own events, [type, readyState, data, lastEventId, origin] for stream events.
class Recorder {
  constructor(url, init, types) {
    this.log = [];
    this.waiters = [];
    const es = (this.es = new EventSource(url, init));
    const record = (e) => {
      this.log.push(e.data === undefined ? [e.type, es.readyState] : [e.type, es.readyState, e.data, e.lastEventId, e.origin]);
      if (this.onerrorClose && e.type === 'error' && e.data === undefined) es.close();
      this.waiters = this.waiters.filter((w) => !w());
    };
    es.onopen = es.onmessage = es.onerror = record;
    for (const type of types || ['tick', 'done']) es.addEventListener(type, record);
  }

  // Resolves true once test(this) holds (checked after each event), false after ms.
  wait(test, ms = 5000) {
    if (test(this)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        resolve(false);
      }, ms);
      const check = () => test(this) && (clearTimeout(timer), resolve(true), true);
      this.waiters.push(check);
    });
  }

  count(type) {
    return this.log.filter((e) => e[0] === type && e.length === 2).length;
  }

  has(type, data) {
    return this.log.some((e) => e[0] === type && e.length === 5 && (data === undefined || e[2] === data));
  }

  // Stream events as [type, data, lastEventId].
  messages() {
    return this.log.filter((e) => e.length === 5).map((e) => [e[0], e[2], e[3]]);
  }

  close() {
    this.es.close();
    return this.es.readyState;
  }
}

// What one scenario needs: its own channel and request key, so that scenarios and pages
// running at once never see each other's events.
class Scenario {
  constructor(name) {
    this.name = name;
    this.channel = `${name}-${MODE}`;
  }

  url(path, channel, base = '') {
    const sep = path.includes('?') ? '&' : '?';
    return `${base}${path}${sep}channel=${encodeURIComponent(channel || this.channel)}&k=${channel || this.channel}`;
  }

  open(path, init, types, channel, base) {
    return new Recorder(this.url(path, channel, base), init, types);
  }

  publish(data, extra, channel) {
    return call('POST', '/publish', { channel: channel || this.channel, data, ...extra });
  }

  drop(channel) {
    return call('POST', '/drop', { channel: channel || this.channel });
  }

  requests(channel) {
    return call('GET', '/log', { k: channel || this.channel });
  }

  // Polls the server's subscriber count of a channel until it is n (bounded).
  async subscribers(n, channel, ms = 5000) {
    const deadline = Date.now() + ms;
    let got;
    while ((got = (await call('GET', '/count', { channel: channel || this.channel })).subscribers) !== n && Date.now() < deadline) {
      await sleep(50);
    }
    return got;
  }
}

const isOpen = (n = 1) => (r) => r.count('open') >= n;
const isError = (n = 1) => (r) => r.count('error') >= n;
const hasEvent = (type, data) => (r) => r.has(type, data);

const SCENARIOS = {
  // Types, ids (the broker's and one of our own), multi-line and empty data, an event named
  // "error" (a message to onerror, not a failure), attributes and constants.
  async events(t) {
    const r = t.open('/sse/stream', undefined, ['tick', 'done']);
    const before = r.es.readyState;
    const opened = await r.wait(isOpen());
    const ids = [];
    for (const [data, extra] of [
      ['one', {}],
      ['two\nlines', { event: 'tick' }],
      ['', {}],
      ['é ☃ 😀', { id: 'own-id 7' }],
      ['after own id', {}],
      ['not a failure', { event: 'error' }],
      ['end', { event: 'done' }],
    ]) {
      ids.push((await t.publish(data, extra)).id);
    }
    const done = await r.wait(hasEvent('done'));
    const es = r.es;
    const attributes = {
      url: es.url,
      withCredentials: es.withCredentials,
      constants: [EventSource.CONNECTING, EventSource.OPEN, EventSource.CLOSED, es.CONNECTING, es.OPEN, es.CLOSED],
      before,
      after: r.close(),
    };
    return { opened, done, ids, log: r.log, attributes, requests: await t.requests() };
  },

  // The server ends the stream; an event published meanwhile arrives after the
  // reconnection, which carried the last event id.
  async drop(t) {
    const r = t.open('/sse/stream');
    await r.wait(isOpen());
    const ids = [(await t.publish('a')).id, (await t.publish('b')).id];
    await r.wait(hasEvent('message', 'b'));
    await t.drop();
    const errored = await r.wait(isError());
    const state = r.es.readyState;
    ids.push((await t.publish('while away')).id);
    const reopened = await r.wait(isOpen(2));
    ids.push((await t.publish('end', { event: 'done' })).id);
    const done = await r.wait(hasEvent('done'));
    r.close();
    return { errored, state, reopened, done, ids, log: r.log, requests: await t.requests() };
  },

  // retry: 50 reconnects; retry: 600000 keeps the client CONNECTING (the server's own
  // retry: 200 and the default 3000 would have reconnected within the wait).
  async retry(t) {
    const r = t.open('/sse/stream');
    await r.wait(isOpen());
    const ids = [(await t.publish('short', { retry: 50 })).id];
    await r.wait(hasEvent('message', 'short'));
    await t.drop();
    const reopened = await r.wait(isOpen(2));
    ids.push((await t.publish('long', { retry: 600000 })).id);
    await r.wait(hasEvent('message', 'long'));
    await t.drop();
    await r.wait(isError(2));
    await sleep(1500);
    const state = r.es.readyState;
    const requests = (await t.requests()).length;
    r.close();
    return { reopened, state, requests, ids, log: r.log };
  },

  // Each response that must fail the connection: error, CLOSED, no second request.
  async bad(t) {
    const paths = {
      204: '/status/204',
      500: '/status/500',
      'text/plain': '/wrongtype',
      'sseproto 400': '/sse/stream?bad=1',
      'sseproto 403': '/sse/stream?x=1',
    };
    const channels = { 'sseproto 400': 'bad channel!', 'sseproto 403': 'forbidden' };
    const out = {};
    await Promise.all(
      Object.entries(paths).map(async ([name, path]) => {
        const key = `${t.channel}-${name.replace(/\W/g, '')}`;
        const url = `${path}${path.includes('?') ? '&' : '?'}channel=${encodeURIComponent(channels[name] || key)}&k=${key}`;
        const r = new Recorder(url);
        await r.wait(isError());
        await sleep(300);
        out[name] = { log: r.log, state: r.es.readyState, requests: (await t.requests(key)).length };
        r.close();
      }),
    );
    return out;
  },

  // Cross-origin (the same server on another port): events carry the stream's origin, the
  // reconnection resumes, cookies go only withCredentials.
  async cors(t) {
    const r = t.open('/sse/stream', { withCredentials: true }, undefined, undefined, OTHER);
    const opened = await r.wait(isOpen());
    const ids = [(await t.publish('a')).id];
    await r.wait(hasEvent('message', 'a'));
    await t.drop();
    await r.wait(isError());
    ids.push((await t.publish('while away')).id);
    await r.wait(isOpen(2));
    ids.push((await t.publish('end', { event: 'done' })).id);
    const done = await r.wait(hasEvent('done'));
    const withCredentials = r.es.withCredentials;
    r.close();
    const plain = t.open('/sse/stream', undefined, undefined, `${t.channel}-plain`, OTHER);
    await plain.wait(isOpen());
    plain.close();
    return {
      opened,
      done,
      ids,
      withCredentials,
      origin: OTHER,
      log: r.log,
      requests: await t.requests(),
      plain: { log: plain.log, requests: await t.requests(`${t.channel}-plain`) },
    };
  },

  // The server ends each stream past 300 bytes (max_bytes); every reconnection resumes
  // where the last one ended.
  async capped(t) {
    const r = t.open('/capped');
    await r.wait(isOpen());
    const ids = (await t.publish('x'.repeat(80), { repeat: 20 })).ids;
    ids.push((await t.publish('end', { event: 'done' })).id);
    const done = await r.wait(hasEvent('done'), 15000);
    r.close();
    return { done, ids, log: r.log, requests: await t.requests() };
  },

  // A stream that falls silent: the polyfill's heartbeatTimeout reconnects it, resuming;
  // the native EventSource (which has no such timeout) keeps waiting on the same one.
  async heartbeat(t) {
    const r = t.open('/quiet', { heartbeatTimeout: 1000 });
    await r.wait(isOpen());
    const ids = [(await t.publish('a')).id];
    await r.wait(hasEvent('message', 'a'));
    const timedOut = await r.wait(isError(), 2500);
    if (timedOut) await r.wait(isOpen(2));
    ids.push((await t.publish('end', { event: 'done' })).id);
    const done = await r.wait(hasEvent('done'));
    r.close();
    return { timedOut, done, ids, log: r.log, requests: await t.requests() };
  },

  // close() while open, while connecting, and from onerror.
  async close(t) {
    const r = t.open('/sse/stream');
    await r.wait(isOpen());
    const ids = [(await t.publish('a')).id];
    await r.wait(hasEvent('message', 'a'));
    const state = r.close();
    await t.publish('after close');
    await sleep(300);
    const left = await t.subscribers(0);

    const early = t.open('/sse/stream', undefined, undefined, `${t.channel}-early`);
    const earlyState = early.close();
    await t.publish('too late', {}, `${t.channel}-early`);
    await sleep(300);

    const inError = t.open('/sse/stream', undefined, undefined, `${t.channel}-onerror`);
    inError.onerrorClose = true;
    await inError.wait(isOpen());
    await t.drop(`${t.channel}-onerror`);
    await inError.wait(isError());
    await sleep(500); // the stream's retry is 200 ms
    return {
      ids,
      state,
      left,
      log: r.log,
      earlyState,
      earlyLog: early.log,
      onerror: { log: inError.log, state: inError.es.readyState, requests: (await t.requests(`${t.channel}-onerror`)).length },
    };
  },

  // Listener order, de-duplication, handleEvent, once, removal and addition during a
  // dispatch, a throwing listener, this and target, dispatchEvent, handlers set to null.
  async listeners(t) {
    const r = t.open('/sse/stream', undefined, ['done']);
    const calls = [];
    listeners(r.es, calls);
    await r.wait(isOpen());
    await t.publish('one');
    await t.publish('two');
    await t.publish('end', { event: 'done' });
    const done = await r.wait(hasEvent('done'));
    r.close();
    return { done, calls };
  },

  // Client-side cap (bufferLimit): over XMLHttpRequest the response text would grow
  // without end, so the polyfill starts fresh requests between events, resuming.
  async buffer(t) {
    const r = t.open('/sse/stream', { bufferLimit: 1000 });
    await r.wait(isOpen());
    const ids = [];
    for (let batch = 0; batch < 3; batch++) {
      ids.push(...(await t.publish(`${batch} ${'y'.repeat(90)}`, { repeat: 10 })).ids);
      await r.wait((r) => r.messages().length === ids.length);
    }
    ids.push((await t.publish('end', { event: 'done' })).id);
    const done = await r.wait(hasEvent('done'));
    r.close();
    return { done, ids, log: r.log, requests: await t.requests() };
  },
};

function listeners(es, calls) {
  const f = (e) => calls.push('f:' + e.data);
  const obj = { handleEvent(e) { calls.push('obj:' + e.data + ':' + (this === obj)); } };
  const victim = (e) => calls.push('victim:' + e.data);
  es.addEventListener('message', f);
  es.addEventListener('message', f);
  es.onmessage = (e) => calls.push('on:' + e.data);
  es.addEventListener('message', obj);
  es.addEventListener('message', f, true);
  es.addEventListener('message', f, { capture: true });
  es.addEventListener('message', (e) => calls.push('once:' + e.data), { once: true });
  es.addEventListener('message', function () {
    calls.push('remover');
    es.removeEventListener('message', victim);
    es.addEventListener('message', (e) => calls.push('late:' + e.data));
  });
  es.addEventListener('message', victim);
  es.addEventListener('message', () => {
    throw new Error('listener error');
  });
  es.addEventListener('message', function (e) {
    calls.push('this:' + (this === es) + (e.target === es) + (e.currentTarget === es) + e.type);
  });
  es.addEventListener('done', () => calls.push('done-first'));
  es.addEventListener('open', () => calls.push('open-listener'));
  const onopen = es.onopen;
  es.onopen = (e) => {
    calls.push('onopen');
    onopen(e);
  };
  // A handler set to null loses its place; set again, it goes last.
  es.onerror = () => calls.push('onerror 1');
  es.addEventListener('error', () => calls.push('error g'));
  es.onerror = null;
  es.addEventListener('error', () => calls.push('error k'));
  es.onerror = () => calls.push('onerror 2');
  es.dispatchEvent(new Event('error'));
  const custom = function (e) {
    calls.push('dispatched:' + e.type + ':' + (this === es));
  };
  es.addEventListener('synthetic', custom);
  calls.push('dispatchEvent:' + es.dispatchEvent(new Event('synthetic')));
  es.removeEventListener('synthetic', custom);
  es.dispatchEvent(new Event('synthetic'));
}

// Runs the named scenarios one after another (a page holds few connections per host),
// answering {name: result or {error}}.
window.runScenarios = async function (names) {
  const out = {};
  for (const name of names) {
    try {
      out[name] = await SCENARIOS[name](new Scenario(name));
    } catch (e) {
      out[name] = { error: String(e && e.stack || e) };
    }
  }
  return out;
};
