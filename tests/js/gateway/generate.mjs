// Records the frames an unmodified secsync JS client sends to its server, with the package's own
// createSnapshot / createUpdate / createEphemeralMessage (what createSyncMachine calls), so
// that the gateway tests need no Node. Run: npm ci && node generate.mjs
//
// Content is what a createSyncMachine app built on Yjs update format v1 sends: a snapshot holds
// Y.encodeStateAsUpdate, an update the JSON array of base64url changes (serializeChanges).
import { writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import sodium from "libsodium-wrappers";
import { createEphemeralMessage, createSnapshot, createUpdate, generateId, hash } from "secsync";
import * as Y from "yjs";

await sodium.ready;

const here = dirname(fileURLToPath(import.meta.url));
const OUT = resolve(here, "../../gateway/fixtures/js_frames.json");

// A document id that a browser percent-encodes in the URL path.
const DOC_ID = "gateway doc/ü-1";
const DOCUMENT_KEY_HEX = "724b092810ec86d7e35c9d067702b31ef90bc43a7b598626749914d6a3e033ed";
const key = sodium.from_hex(DOCUMENT_KEY_HEX);

function author(seedByte) {
  const pair = sodium.crypto_sign_seed_keypair(new Uint8Array(32).fill(seedByte));
  return { privateKey: pair.privateKey, publicKey: pair.publicKey, keyType: "ed25519" };
}
const A = author(1);
const B = author(2);
const pubA = sodium.to_base64(A.publicKey);
const pubB = sodium.to_base64(B.publicKey);

// One Yjs document edited by both authors: every change is a real v1 update.
const ydoc = new Y.Doc();
const text = ydoc.getText("text");
function change(insert) {
  const before = Y.encodeStateVector(ydoc);
  text.insert(text.length, insert);
  return Y.encodeStateAsUpdate(ydoc, before);
}
const serializeChanges = (changes) => JSON.stringify(changes.map((c) => sodium.to_base64(c)));

const frames = {};

function snapshot(name, signer, parent, clocks, options = {}) {
  const snapshotId = generateId(sodium);
  const publicData = {
    snapshotId,
    docId: options.docId ?? DOC_ID,
    pubKey: sodium.to_base64(signer.publicKey),
    parentSnapshotId: parent ? parent.publicData.snapshotId : "",
    parentSnapshotUpdateClocks: clocks,
  };
  const message = createSnapshot(
    Y.encodeStateAsUpdate(ydoc),
    publicData,
    key,
    signer,
    options.parentHash ?? (parent ? hash(parent.ciphertext, sodium) : ""),
    parent ? parent.publicData.parentSnapshotProof : "",
    sodium,
  );
  // What the client sends: {...snapshot, additionalServerData} (unsigned, for the server).
  frames[name] = options.serverData ? { ...message, additionalServerData: options.serverData } : message;
  return message;
}

function update(name, signer, snapshotMessage, clock, changes, options = {}) {
  const publicData = {
    refSnapshotId: snapshotMessage.publicData.snapshotId,
    docId: options.docId ?? DOC_ID,
    pubKey: sodium.to_base64(signer.publicKey),
  };
  frames[name] = createUpdate(serializeChanges(changes), publicData, key, signer, clock, sodium);
  return frames[name];
}

function ephemeral(name, signer, type, payload, sessionId, counter) {
  frames[name] = createEphemeralMessage(
    payload,
    type,
    { docId: DOC_ID, pubKey: sodium.to_base64(signer.publicKey) },
    key,
    signer,
    sessionId,
    counter,
    sodium,
  );
}

change("hello");
const s1 = snapshot("s1", A, null, {}, { serverData: { reason: "first" } });
update("u1_a0", A, s1, 0, [change(" from")]);
update("u1_a1", A, s1, 1, [change(" A")]);
update("u1_b0", B, s1, 0, [change(", B")]);
update("u1_a0_other_doc", A, s1, 0, [new Uint8Array([0])], { docId: "another document" });
// A snapshot that misses B's update, and one whose proof names the wrong parent hash.
const stale = snapshot("s2_misses_b", B, s1, { [pubA]: 1 });
snapshot("s2_wrong_proof", B, s1, { [pubA]: 1, [pubB]: 0 }, { parentHash: hash("junk", sodium) });
const s2 = snapshot("s2", B, s1, { [pubA]: 1, [pubB]: 0 });
update("u2_a0", A, s2, 0, [change("!")]);
update("u2_b0", B, s2, 0, [change("?")]);
update("u2_a1", A, s2, 1, [change(".")]);
const s3 = snapshot("s3", A, s2, { [pubA]: 1, [pubB]: 0 });
update("u3_b0", B, s3, 0, [change(" end")]);
// An update on the superseded snapshot s2 (as a client that missed s3 would send it).
update("u2_b1_late", B, s2, 1, [new Uint8Array([0])]);
void stale;
void s3;

const sessionA = generateId(sodium);
ephemeral("eph_initialize", A, "initialize", new Uint8Array(), sessionA, 7);
ephemeral("eph_message", A, "message", new Uint8Array([1, 2, 3]), sessionA, 8);

writeFileSync(
  OUT,
  JSON.stringify(
    {
      generator: "tests/js/gateway/generate.mjs (secsync 0.5.0, yjs update format v1)",
      docId: DOC_ID,
      documentKeyHex: DOCUMENT_KEY_HEX,
      authors: { A: pubA, B: pubB },
      text: text.toString(),
      frames,
    },
    null,
    2,
  ) + "\n",
  "utf8",
);
console.log(`wrote ${Object.keys(frames).length} frames to ${OUT}`);
