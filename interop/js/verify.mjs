// Verify messages sealed by the Python implementation with the real secsync JS functions.
//
//   node verify.mjs [input]   (default: ../../tests/interop/fixtures/python_sealed.json)
//
// Prints one line per case and "N passed, M failed"; exits 1 if any case fails.
import { resolve } from "node:path";

import { FIXTURES_DIR, readJson, verifyCase } from "./common.mjs";

const input = resolve(process.argv[2] ?? `${FIXTURES_DIR}/python_sealed.json`);
const cases = readJson(input);
if (!Array.isArray(cases) || cases.length === 0) {
  console.error(`${input}: expected a non-empty list of cases`);
  process.exit(2);
}

const byName = new Map(cases.map((c) => [c.name, c]));
let passed = 0;
let failed = 0;
for (const [index, c] of cases.entries()) {
  const label = `${String(c.kind).padEnd(9)} ${c.name ?? `#${index}`}`;
  try {
    const notes = verifyCase(c, byName);
    passed += 1;
    console.log(`PASS  ${label} (${notes})`);
  } catch (err) {
    failed += 1;
    console.log(`FAIL  ${label}: ${err.message}`);
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
