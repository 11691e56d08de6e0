// Parses each file given with acorn at ECMAScript 3 and 5: the polyfill must run in
// browsers that know nothing newer. At ES3, reserved words are refused as property names
// too, as old Internet Explorer does. Exits 1 when one does not parse.
import { readFileSync } from 'node:fs';
import { parse } from 'acorn';

let failed = 0;
for (const file of process.argv.slice(2)) {
  for (const ecmaVersion of [3, 5]) {
    try {
      const allowReserved = ecmaVersion === 3 ? 'never' : false;
      parse(readFileSync(file, 'utf8'), { ecmaVersion, allowReserved, sourceType: 'script' });
      console.log(`ok ES${ecmaVersion} ${file}`);
    } catch (e) {
      failed++;
      console.log(`FAIL ES${ecmaVersion} ${file}: ${e.message}`);
    }
  }
}
process.exit(failed ? 1 : 0);
