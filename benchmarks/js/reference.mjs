// The secsync 0.5.0 JavaScript reference on the benchmark's own trace slices.
//
//   node reference.mjs INPUT.json > OUTPUT.json
//
// INPUT (written by benchmarks/js_reference.py; binary values base64url):
//   docId, updates (Yjs v1 updates, one per transaction), updatesText (the text after them),
//   state (the final Yjs state), stateText, reps, snapshotReps,
//   calibration: {seed, key, nonce, aad, signInputs, aeadPlaintexts}
// OUTPUT: µs per update (updates), ms (snapshot) and µs per call (calibration), medians of
// `reps` timed passes after one untimed pass.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

import sodium from "libsodium-wrappers";
import {
  createSnapshot,
  createUpdate,
  deserializeUint8ArrayUpdates,
  generateId,
  parseSnapshotWithClientData,
  parseUpdate,
  serializeUint8ArrayUpdates,
  verifyAndDecryptSnapshot,
  verifyAndDecryptUpdate,
} from "secsync";
import * as Y from "yjs";

await sodium.ready;

const input = JSON.parse(readFileSync(process.argv[2], "utf8"));
const b64 = (text) => sodium.from_base64(text);

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Median ms of `run(setup())` over `reps` passes after one warm-up; setup is not timed. */
function timed(reps, run, setup = () => undefined) {
  const times = [];
  for (let i = 0; i <= reps; i++) {
    const state = setup();
    const start = performance.now();
    run(state);
    const elapsed = performance.now() - start;
    if (i > 0) times.push(elapsed);
  }
  return median(times);
}

const docId = input.docId;
const key = sodium.crypto_aead_xchacha20poly1305_ietf_keygen();
const author = sodium.crypto_sign_keypair();
const signatureKeyPair = { ...author, keyType: "ed25519" };
const pubKey = sodium.to_base64(author.publicKey);
const reader = sodium.crypto_sign_keypair();
const refSnapshotId = generateId(sodium);
const changes = input.updates.map(b64);
const n = changes.length;
const reps = input.reps;

// --- updates: create (createUpdate + JSON.stringify) and load (parse, verify, decrypt, apply) ---

let wire = [];
const createMs = timed(reps, () => {
  const out = new Array(n);
  for (let clock = 0; clock < n; clock++) {
    const content = serializeUint8ArrayUpdates([changes[clock]], sodium);
    const update = createUpdate(
      content,
      { docId, pubKey, refSnapshotId },
      key,
      signatureKeyPair,
      clock,
      sodium,
    );
    out[clock] = JSON.stringify(update);
  }
  wire = out;
});

function openUpdate(update, clock) {
  const result = verifyAndDecryptUpdate(update, key, refSnapshotId, clock - 1, sodium, "off");
  if (result.error) throw new Error(`update ${clock}: ${result.error.message}`);
  return result.content;
}

function applyAll(doc, plaintexts) {
  for (const plaintext of plaintexts) {
    for (const change of deserializeUint8ArrayUpdates(sodium.to_string(plaintext), sodium)) {
      Y.applyUpdate(doc, change);
    }
  }
}

let loadedText = "";
const loadMs = timed(
  reps,
  (doc) => {
    for (let clock = 0; clock < n; clock++) {
      const plaintext = openUpdate(parseUpdate(JSON.parse(wire[clock])), clock);
      applyAll(doc, [plaintext]);
    }
    loadedText = doc.getText("text").toString();
  },
  () => new Y.Doc(),
);
if (loadedText !== input.updatesText) throw new Error("the loaded updates differ from the trace");

// The load's stages in separate loops, as §1 times the Python ones.
const parsed = wire.map((w) => parseUpdate(JSON.parse(w)));
const plaintexts = parsed.map(openUpdate);
const loadStagesMs = {
  decode: timed(reps, () => wire.map((w) => parseUpdate(JSON.parse(w)))),
  verify_decrypt: timed(reps, () => parsed.map(openUpdate)),
  apply: timed(reps, (doc) => applyAll(doc, plaintexts), () => new Y.Doc()),
};
const wireBytes = wire.reduce((sum, w) => sum + Buffer.byteLength(w), 0) / n;

// --- the final state as one snapshot --------------------------------------------------------

const source = new Y.Doc();
Y.applyUpdate(source, b64(input.state));
let snapshotWire = "";
const snapshotCreateMs = timed(input.snapshotReps, () => {
  const state = Y.encodeStateAsUpdate(source);
  const snapshot = createSnapshot(
    state,
    {
      docId,
      pubKey,
      snapshotId: generateId(sodium),
      parentSnapshotId: "",
      parentSnapshotUpdateClocks: {},
    },
    key,
    signatureKeyPair,
    "",
    "",
    sodium,
  );
  snapshotWire = JSON.stringify(snapshot);
});
const noParent = { snapshotId: "", snapshotCiphertextHash: "", parentSnapshotProof: "" };
let snapshotText = "";
const snapshotLoadMs = timed(input.snapshotReps, () => {
  const snapshot = parseSnapshotWithClientData(JSON.parse(snapshotWire));
  const result = verifyAndDecryptSnapshot(
    snapshot,
    key,
    docId,
    reader.publicKey,
    sodium,
    noParent,
    undefined,
    "off",
  );
  if (result.error) throw new Error(`snapshot: ${result.error.message}`);
  const doc = new Y.Doc();
  Y.applyUpdate(doc, result.content);
  snapshotText = doc.getText("text").toString();
});
if (snapshotText !== input.stateText) throw new Error("the loaded snapshot differs from the trace");

// --- calibration: the raw libsodium calls on the bytes the Python side uses -----------------

const cal = input.calibration;
const seeded = sodium.crypto_sign_seed_keypair(b64(cal.seed));
const calKey = b64(cal.key);
const calNonce = b64(cal.nonce);
const calAad = b64(cal.aad);
const signInputs = cal.signInputs.map(b64);
const aeadPlaintexts = cal.aeadPlaintexts.map(b64);
const signedMessages = signInputs.map((m) => sodium.crypto_sign(m, seeded.privateKey));
const sealed = aeadPlaintexts.map((p) =>
  sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(p, calAad, null, calNonce, calKey),
);
const perCallUs = (ms, count) => (ms / count) * 1000;
const calibration = {
  sign: perCallUs(
    timed(reps, () => signInputs.map((m) => sodium.crypto_sign(m, seeded.privateKey))),
    signInputs.length,
  ),
  verify: perCallUs(
    timed(reps, () => signedMessages.map((sm) => sodium.crypto_sign_open(sm, seeded.publicKey))),
    signedMessages.length,
  ),
  seal: perCallUs(
    timed(reps, () =>
      aeadPlaintexts.map((p) =>
        sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(p, calAad, null, calNonce, calKey),
      ),
    ),
    aeadPlaintexts.length,
  ),
  open: perCallUs(
    timed(reps, () =>
      sealed.map((c) =>
        sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, c, calAad, calNonce, calKey),
      ),
    ),
    sealed.length,
  ),
};

const usPerUpdate = (ms) => (ms / n) * 1000;
const versions = JSON.parse(readFileSync(new URL("./package-lock.json", import.meta.url), "utf8"));
const version = (name) => versions.packages[`node_modules/${name}`]?.version ?? "unknown";
process.stdout.write(
  JSON.stringify({
    node: process.version,
    versions: {
      secsync: version("secsync"),
      "libsodium-wrappers": version("libsodium-wrappers"),
      libsodium: version("libsodium"),
      yjs: version("yjs"),
    },
    updates: n,
    create_us: usPerUpdate(createMs),
    load_us: usPerUpdate(loadMs),
    load_stages_us: Object.fromEntries(
      Object.entries(loadStagesMs).map(([name, ms]) => [name, usPerUpdate(ms)]),
    ),
    wire_bytes_mean: wireBytes,
    snapshot: {
      create_ms: snapshotCreateMs,
      load_ms: snapshotLoadMs,
      wire_bytes: Buffer.byteLength(snapshotWire),
    },
    calibration_us: calibration,
  }) + "\n",
);
