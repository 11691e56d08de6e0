// Runs the spec vectors (spec/vectors/*.json, or the folders given) through the polyfill's
// parser, fed in several ways: whole, byte by byte and in random splits through its own
// UTF-8 decoder, per given chunk through TextDecoder, and as text one character at a time
// (as XMLHttpRequest's responseText delivers it). Exits 1 on any mismatch.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const ES = createRequire(import.meta.url)('../eventsource.js');
const { _Parser: Parser, _Utf8: utf8 } = ES;

function toBytes(chunk) {
  return typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : Buffer.from(chunk.hex, 'hex');
}

// A small seeded generator (mulberry32), so that a failure can be replayed.
function random(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function run(pieces, decode) {
  const events = [];
  const parser = new Parser((type, data, lastEventId) => events.push({ type, data, lastEventId }));
  for (const piece of pieces) parser.feed(decode(piece));
  parser.end();
  return { events, lastEventId: parser.lastEventId, retry: parser.retry };
}

function ways(chunks, seed) {
  const bytes = Buffer.concat(chunks);
  const rand = random(seed);
  const splits = [];
  for (let i = 0; i < bytes.length; ) {
    const n = 1 + Math.floor(rand() * 7);
    splits.push(bytes.subarray(i, i + n));
    i += n;
  }
  const text = new TextDecoder('utf-8', { ignoreBOM: true }).decode(bytes);
  const stream = () => {
    const td = new TextDecoder('utf-8', { ignoreBOM: true });
    return (b) => td.decode(b, { stream: true });
  };
  return {
    'given chunks, own decoder': () => run(chunks, utf8()),
    'whole, own decoder': () => run([bytes], utf8()),
    'byte by byte, own decoder': () => run([...bytes].map((b) => Uint8Array.of(b)), utf8()),
    'random splits, own decoder': () => run(splits, utf8()),
    'given chunks, TextDecoder': () => run(chunks, stream()),
    'text, one char at a time': () => run([...text.split('')], (s) => s),
  };
}

function files(paths) {
  const out = [];
  for (const p of paths) {
    if (statSync(p).isDirectory()) {
      for (const name of readdirSync(p).sort()) if (name.endsWith('.json')) out.push(join(p, name));
    } else out.push(p);
  }
  return out;
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

const paths = process.argv.length > 2 ? process.argv.slice(2) : [join(here, '..', '..', 'spec', 'vectors')];
let passed = 0;
let failed = 0;
let seed = 1;
for (const file of files(paths)) {
  const { vectors } = JSON.parse(readFileSync(file, 'utf8'));
  for (const v of vectors) {
    const expected = {
      events: v.events.map((e) => ({ type: e.type, data: e.data, lastEventId: e.lastEventId })),
      lastEventId: v.lastEventId,
      retry: v.retry === null || v.retry === undefined ? null : Number(v.retry),
    };
    let ok = true;
    for (const [how, fn] of Object.entries(ways(v.chunks.map(toBytes), seed++))) {
      let got;
      try {
        got = fn();
      } catch (e) {
        got = { error: String(e) };
      }
      if (!same(got, expected)) {
        ok = false;
        console.log(`FAIL ${file} ${v.name} (${how})\n  expected ${JSON.stringify(expected)}\n  got      ${JSON.stringify(got)}`);
      }
    }
    if (ok) passed++;
    else failed++;
  }
}
if (passed + failed === 0) {
  console.log(`no vectors found in ${paths.join(', ')}`);
  process.exit(1);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
