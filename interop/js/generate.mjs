// Seal messages with the real secsync JS functions and write them as fixtures for the Python side.
//
//   node generate.mjs [output]   (default: ../../tests/interop/fixtures/js_sealed.json)
//
// Every case is verified with secsync JS itself before it is written.
import { resolve } from "node:path";

import {
  createEphemeralMessage,
  createSnapshot,
  createUpdate,
  generateId,
  hash,
  serializeUint8ArrayUpdates,
  verifyAndDecryptEphemeralMessage,
} from "secsync";

import {
  FIXTURES_DIR,
  SIGNING_PUBLIC_KEY,
  documentKey,
  documentKeyB64,
  ephemeralPlaintext,
  signatureKeyPair,
  sodium,
  verifyCase,
  writeJson,
} from "./common.mjs";

const output = resolve(process.argv[2] ?? `${FIXTURES_DIR}/js_sealed.json`);

const DOC_ID = "6e46c006-5541-11ec-bf63-0242ac130002";
const NON_ASCII_DOC_ID = "dök-ü-😀";
const pubKey = SIGNING_PUBLIC_KEY;
const otherAuthor = sodium.to_base64(sodium.randombytes_buf(32));

const cases = [];
const byName = new Map();

function contentBytes(content) {
  return typeof content === "string" ? sodium.from_string(content) : content;
}

function add(c) {
  const full = { name: c.name, kind: c.kind, key: documentKeyB64, signingPublicKey: pubKey, ...c };
  full.plaintext = sodium.to_base64(c.plaintext);
  cases.push(full);
  byName.set(full.name, full);
  return full;
}

function snapshotCase(name, content, publicData, parentName) {
  let parentHash = "";
  let grandParentProof = "";
  if (parentName) {
    const parent = byName.get(parentName).message;
    parentHash = hash(parent.ciphertext, sodium);
    grandParentProof = parent.publicData.parentSnapshotProof;
  }
  const message = createSnapshot(
    content,
    publicData,
    documentKey,
    signatureKeyPair,
    parentHash,
    grandParentProof,
    sodium,
  );
  return add({
    name,
    kind: "snapshot",
    ...(parentName ? { parent: parentName } : {}),
    message,
    plaintext: contentBytes(content),
  });
}

function updateCase(name, content, publicData, clock, snapshotName) {
  const message = createUpdate(content, publicData, documentKey, signatureKeyPair, clock, sodium);
  return add({
    name,
    kind: "update",
    parent: snapshotName,
    message,
    plaintext: contentBytes(content),
  });
}

function ephemeralCase(name, payload, type, docId, sessionId, counter, receiverSessionId) {
  const message = createEphemeralMessage(
    payload,
    type,
    { docId, pubKey },
    documentKey,
    signatureKeyPair,
    sessionId,
    counter,
    sodium,
  );
  const ephemeral = { type, sessionId, counter };
  if (receiverSessionId) ephemeral.receiverSessionId = receiverSessionId;
  return add({
    name,
    kind: "ephemeral",
    ephemeral,
    message,
    plaintext: ephemeralPlaintext(type, sessionId, counter, payload),
  });
}

// --- snapshots ------------------------------------------------------------------------------

const initial = snapshotCase("snapshot-initial", "Hello World", {
  docId: DOC_ID,
  pubKey,
  snapshotId: generateId(sodium),
  parentSnapshotId: "",
  parentSnapshotUpdateClocks: {},
});

const child = snapshotCase(
  "snapshot-child",
  sodium.randombytes_buf(200),
  {
    docId: DOC_ID,
    pubKey,
    snapshotId: generateId(sodium),
    parentSnapshotId: initial.message.publicData.snapshotId,
    parentSnapshotUpdateClocks: { [pubKey]: 7 },
  },
  "snapshot-initial",
);

snapshotCase(
  "snapshot-grandchild",
  "Grüße aus dem Enkel 👋",
  {
    docId: DOC_ID,
    pubKey,
    snapshotId: generateId(sodium),
    parentSnapshotId: child.message.publicData.snapshotId,
    parentSnapshotUpdateClocks: { [otherAuthor]: 3, [pubKey]: 0 },
  },
  "snapshot-child",
);

// Extra public data, authenticated like the protocol fields. Keys exercise canonical ordering
// (UTF-16 code units: the astral "😀" sorts before the fullwidth "ｚ"), string escaping and
// integer limits.
snapshotCase("snapshot-extra-public-data", "snapshot with key derivation trace", {
  keyDerivationTrace: {
    workspaceKeyId: "wk_0123456789",
    trace: [
      { entryId: "e1", subkeyId: 0, parentId: null, context: "doc_ctx" },
      {
        entryId: "e2",
        subkeyId: 9007199254740991,
        parentId: "e1",
        context: "ünïcödé ✓",
        negative: -42,
        flag: true,
      },
    ],
    ｚ: "fullwidth z",
    "😀": "astral key",
    Z: 1,
    a: [],
    escapes: 'quote " backslash \\ newline \n tab \t ctrl \u0001 del \u007f ls \u2028 /',
  },
  docId: DOC_ID,
  pubKey,
  snapshotId: generateId(sodium),
  parentSnapshotId: "",
  parentSnapshotUpdateClocks: {},
});

snapshotCase("snapshot-non-ascii-docid", sodium.from_string("ä"), {
  docId: NON_ASCII_DOC_ID,
  pubKey,
  snapshotId: generateId(sodium),
  parentSnapshotId: "",
  parentSnapshotUpdateClocks: {},
});

// A docId full of characters that JSON escaping treats specially.
const ESCAPES_DOC_ID = 'doc "q" \\ \n\t\u0001\u007f\u2028 ü😀';
snapshotCase("snapshot-docid-escapes", "escapes", {
  docId: ESCAPES_DOC_ID,
  pubKey,
  snapshotId: generateId(sodium),
  parentSnapshotId: "",
  parentSnapshotUpdateClocks: {},
});

// --- updates ---------------------------------------------------------------------------------

const refSnapshotId = initial.message.publicData.snapshotId;
updateCase(
  "update-clock-0",
  serializeUint8ArrayUpdates([sodium.randombytes_buf(17), new Uint8Array([0, 255, 128])], sodium),
  { docId: DOC_ID, pubKey, refSnapshotId },
  0,
  "snapshot-initial",
);
updateCase(
  "update-clock-7",
  sodium.randombytes_buf(64),
  { docId: DOC_ID, pubKey, refSnapshotId },
  7,
  "snapshot-initial",
);
updateCase(
  "update-empty-content",
  new Uint8Array(0),
  { docId: DOC_ID, pubKey, refSnapshotId },
  1,
  "snapshot-initial",
);
updateCase(
  "update-extra-public-data",
  "update with extras",
  { docId: DOC_ID, pubKey, refSnapshotId, origin: { app: "ünï", build: 12 } },
  2,
  "snapshot-initial",
);
updateCase(
  "update-non-ascii-docid",
  "ö",
  {
    docId: NON_ASCII_DOC_ID,
    pubKey,
    refSnapshotId: byName.get("snapshot-non-ascii-docid").message.publicData.snapshotId,
  },
  0,
  "snapshot-non-ascii-docid",
);

updateCase(
  "update-docid-escapes",
  "escapes",
  {
    docId: ESCAPES_DOC_ID,
    pubKey,
    refSnapshotId: byName.get("snapshot-docid-escapes").message.publicData.snapshotId,
  },
  0,
  "snapshot-docid-escapes",
);

// --- ephemeral messages ----------------------------------------------------------------------

const sessionA = generateId(sodium);
const sessionB = generateId(sodium);
const initialize = ephemeralCase(
  "ephemeral-initialize",
  new Uint8Array(0),
  "initialize",
  DOC_ID,
  sessionA,
  1234567,
);
ephemeralCase(
  "ephemeral-message",
  sodium.randombytes_buf(40),
  "message",
  DOC_ID,
  sessionA,
  1234568,
);
ephemeralCase(
  "ephemeral-message-non-ascii-docid",
  new Uint8Array([1, 2, 3, 0xff]),
  "message",
  NON_ASCII_DOC_ID,
  sessionA,
  4294967294,
);

// Session B answers A's initialize exactly as the sync machine does: the proof comes from
// verifyAndDecryptEphemeralMessage and travels in a proofAndRequestProof message.
const answer = verifyAndDecryptEphemeralMessage(
  initialize.message,
  documentKey,
  DOC_ID,
  { id: sessionB, counter: 100, validSessions: {} },
  signatureKeyPair,
  sodium,
  "off",
);
if (answer.error || !answer.proof) throw new Error(`initialize not answered: ${answer.error}`);
ephemeralCase(
  "ephemeral-proof-and-request-proof",
  answer.proof,
  "proofAndRequestProof",
  DOC_ID,
  sessionB,
  101,
  sessionA,
);

// --- self-check and write --------------------------------------------------------------------

for (const c of cases) {
  const notes = verifyCase(c, byName);
  console.log(`ok    ${c.kind.padEnd(9)} ${c.name} (${notes})`);
}
writeJson(output, cases);
console.log(`wrote ${cases.length} cases to ${output}`);
