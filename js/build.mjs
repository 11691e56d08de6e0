// Builds sseproto/static/eventsource.js (the source, verbatim) and eventsource.min.js.
// `node build.mjs --check` builds in memory and exits 1 when the copies are stale.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { minify } from 'terser';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'sseproto', 'static');
const source = readFileSync(join(here, 'eventsource.js'), 'utf8');

export async function build() {
  const result = await minify(source, {
    ecma: 5,
    ie8: true, // keeps the output valid ES3: no reserved words as bare property names
    compress: { passes: 2 },
    // Internal properties start with "_" and a lowercase letter; _Parser and _Utf8 stay.
    mangle: { properties: { regex: /^_[a-z]/ } },
    format: { comments: /^!/, ascii_only: true },
  });
  return { 'eventsource.js': source, 'eventsource.min.js': result.code + '\n' };
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
