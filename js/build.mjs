// Builds sseproto/static/eventsource.js (the source, verbatim) and eventsource.min.js, and
// the shared mode: eventsource-shared.js (a prelude, the polyfill, eventsource-shared.js)
// and eventsource-shared.min.js, that bundle minified.
// `node build.mjs --check` builds in memory and exits 1 when the copies are stale.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { minify } from 'terser';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'sseproto', 'static');
const source = readFileSync(join(here, 'eventsource.js'), 'utf8');
// The bundle runs as the SharedWorker too, where there is no window: the polyfill's UMD
// then exports to the worker's global scope.
const PRELUDE = "if (typeof window == 'undefined' && typeof self != 'undefined') self.window = self;\n";
const shared = PRELUDE + source + readFileSync(join(here, 'eventsource-shared.js'), 'utf8');

const options = {
  ecma: 5,
  ie8: true, // keeps the output valid ES3: no reserved words as bare property names
  compress: { passes: 2 },
  // Internal properties start with "_" and a lowercase letter; _Parser and _Utf8 stay.
  mangle: { properties: { regex: /^_[a-z]/ } },
  format: { comments: /^!/, ascii_only: true },
};

export async function build() {
  const result = await minify(source, options);
  const sharedMin = await minify(shared, options);
  return {
    'eventsource.js': source,
    'eventsource.min.js': result.code + '\n',
    'eventsource-shared.js': shared,
    'eventsource-shared.min.js': sharedMin.code + '\n',
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const files = await build();
  if (process.argv.includes('--check')) {
    const stale = Object.keys(files).filter((name) => {
      try {
        return readFileSync(join(out, name), 'utf8') !== files[name];
      } catch {
        return true;
      }
    });
    if (stale.length) {
      console.error(`stale: ${stale.map((n) => 'sseproto/static/' + n).join(', ')}; run: node js/build.mjs`);
      process.exit(1);
    }
    console.log('sseproto/static is up to date');
  } else {
    mkdirSync(out, { recursive: true });
    for (const [name, text] of Object.entries(files)) writeFileSync(join(out, name), text);
    console.log(`built ${Object.keys(files).map((n) => 'sseproto/static/' + n).join(', ')}`);
  }
}
