// Shared by generate.mjs and verify.mjs: the fixed test identity and small helpers.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import canonicalize from "canonicalize";
import sodium from "libsodium-wrappers";
import {
  decryptAead,
  generateId,
  hash,
  parseEphemeralMessage,
  parseSnapshotWithClientData,
  parseUpdate,
  verifyAndDecryptEphemeralMessage,
  verifyAndDecryptSnapshot,
  verifyAndDecryptUpdate,
  verifySignature,
} from "secsync";

await sodium.ready;

export { sodium };

const here = dirname(fileURLToPath(import.meta.url));
export const FIXTURES_DIR = resolve(here, "../../tests/interop/fixtures");

// The fixed key pair and document key of the secsync JS test suite.
export const SIGNING_SECRET_KEY =
  "g3dtwb9XzhSzZGkxTfg11t1KEIb4D8rO7K54R6dnxArvgg_OzZ2GgREtG7F5LvNp3MS8p9vsio4r6Mq7SZDEgw";
export const SIGNING_PUBLIC_KEY = "74IPzs2dhoERLRuxeS7zadzEvKfb7IqOK-jKu0mQxIM";
export const DOCUMENT_KEY_HEX =
  "724b092810ec86d7e35c9d067702b31ef90bc43a7b598626749914d6a3e033ed";

export const signatureKeyPair = {
  privateKey: sodium.from_base64(SIGNING_SECRET_KEY),
  publicKey: sodium.from_base64(SIGNING_PUBLIC_KEY),
  keyType: "ed25519",
};
export const documentKey = sodium.from_hex(DOCUMENT_KEY_HEX);
export const documentKeyB64 = sodium.to_base64(documentKey);

export const messageTypeCodes = { initialize: 1, proofAndRequestProof: 2, proof: 3, message: 4 };

/** The 29-byte ephemeral header followed by the payload, as secsync JS lays it out. */
export function ephemeralPlaintext(type, sessionId, counter, payload) {
  const header = new Uint8Array(29);
  header[0] = messageTypeCodes[type];
  header.set(sodium.from_base64(sessionId), 1);
  new DataView(header.buffer).setUint32(25, counter, true);
  const out = new Uint8Array(29 + payload.length);
  out.set(header);
  out.set(payload, 29);
  return out;
}

export function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function readJson(path) {
  return JSON.parse(readFileSync(path, "utf8"));
}

export function writeJson(path, value) {
  writeFileSync(path, JSON.stringify(value, null, 2) + "\n", "utf8");
}

// --- verification of one fixture case with the real secsync JS functions ----------------------

const PROTOCOL_FIELDS = {
  snapshot: new Set([
    "docId",
    "pubKey",
    "snapshotId",
    "parentSnapshotId",
    "parentSnapshotProof",
    "parentSnapshotUpdateClocks",
  ]),
  update: new Set(["docId", "pubKey", "refSnapshotId", "clock"]),
  ephemeral: new Set(["docId", "pubKey"]),
};

// secsync's parse* helpers strip unknown public fields unless the application whitelists them
// (additionalAuthenticationDataValidations); this stands in for the application's zod schema.
function extrasValidation(kind, publicData) {
  const extras = Object.keys(publicData).filter((k) => !PROTOCOL_FIELDS[kind].has(k));
  if (extras.length === 0) return undefined;
  return {
    parse(data) {
      return Object.fromEntries(extras.map((k) => [k, data[k]]));
    },
  };
}

function fromBase64(text, what) {
  try {
    return sodium.from_base64(text);
  } catch {
    throw new Error(`case field ${what} is not base64url`);
  }
}

function flipFirstChar(text) {
  return (text[0] === "A" ? "B" : "A") + text.slice(1);
}

function otherKey(key) {
  const k = new Uint8Array(key);
  k[0] ^= 1;
  return k;
}

function errorCode(result) {
  return result && result.error ? result.error.message : "no error";
}

function check(condition, what) {
  if (!condition) throw new Error(what);
}

/**
 * Verify and decrypt one case with secsync JS; throw with a reason on any mismatch.
 * `byName` maps case names to cases (for parent snapshots).
 */
export function verifyCase(c, byName) {
  const key = fromBase64(c.key, "key");
  const expected = fromBase64(c.plaintext, "plaintext");
  const publicKey = fromBase64(c.signingPublicKey, "signingPublicKey");
  const raw = c.message;
  check(raw.publicData.pubKey === c.signingPublicKey, "publicData.pubKey is not the signing key");
  const notes = [];

  if (c.kind === "snapshot") {
    const snapshot = parseSnapshotWithClientData(raw, extrasValidation("snapshot", raw.publicData));
    let parentInfo;
    if (c.parent) {
      const parent = byName.get(c.parent);
      check(parent !== undefined, `unknown parent case ${c.parent}`);
      parentInfo = {
        snapshotId: parent.message.publicData.snapshotId,
        snapshotCiphertextHash: hash(parent.message.ciphertext, sodium),
        parentSnapshotProof: parent.message.publicData.parentSnapshotProof,
      };
      notes.push("proof chain ok");
    } else {
      // An initial snapshot: the proof over three empty strings, parentSnapshotId "".
      parentInfo = { snapshotId: "", snapshotCiphertextHash: "", parentSnapshotProof: "" };
      notes.push("initial proof ok");
    }
    const ownClock = snapshot.publicData.parentSnapshotUpdateClocks[c.signingPublicKey];
    const args = [key, snapshot.publicData.docId, publicKey, sodium, parentInfo, ownClock, "off"];
    const result = verifyAndDecryptSnapshot(snapshot, ...args);
    check(!result.error, `verifyAndDecryptSnapshot: ${errorCode(result)}`);
    check(bytesEqual(result.content, expected), "plaintext differs");
    const badSig = verifyAndDecryptSnapshot(
      { ...snapshot, signature: flipFirstChar(snapshot.signature) },
      ...args,
    );
    check(errorCode(badSig) === "SECSYNC_ERROR_111", `tampered signature: ${errorCode(badSig)}`);
    const badKey = verifyAndDecryptSnapshot(snapshot, otherKey(key), ...args.slice(1));
    check(errorCode(badKey) === "SECSYNC_ERROR_101", `wrong key: ${errorCode(badKey)}`);
  } else if (c.kind === "update") {
    const update = parseUpdate(raw, extrasValidation("update", raw.publicData));
    let activeSnapshotId = update.publicData.refSnapshotId;
    if (c.parent) {
      const parent = byName.get(c.parent);
      check(parent !== undefined, `unknown parent case ${c.parent}`);
      activeSnapshotId = parent.message.publicData.snapshotId;
    }
    const clock = update.publicData.clock;
    const result = verifyAndDecryptUpdate(update, key, activeSnapshotId, clock - 1, sodium, "off");
    check(!result.error, `verifyAndDecryptUpdate: ${errorCode(result)}`);
    check(result.clock === clock, "clock differs");
    check(bytesEqual(result.content, expected), "plaintext differs");
    const badSig = verifyAndDecryptUpdate(
      { ...update, signature: flipFirstChar(update.signature) },
      key,
      activeSnapshotId,
      clock - 1,
      sodium,
      "off",
    );
    check(errorCode(badSig) === "SECSYNC_ERROR_212", `tampered signature: ${errorCode(badSig)}`);
    const badKey = verifyAndDecryptUpdate(
      update,
      otherKey(key),
      activeSnapshotId,
      clock - 1,
      sodium,
      "off",
    );
    check(errorCode(badKey) === "SECSYNC_ERROR_201", `wrong key: ${errorCode(badKey)}`);
  } else if (c.kind === "ephemeral") {
    const message = parseEphemeralMessage(raw, extrasValidation("ephemeral", raw.publicData));
    // Low level: the signature and the full plaintext, header included.
    const aad = sodium.to_base64(canonicalize(message.publicData));
    const signed = { nonce: message.nonce, ciphertext: message.ciphertext, publicData: aad };
    check(
      verifySignature(signed, "secsync_ephemeral_message", message.signature, publicKey, sodium),
      "verifySignature failed",
    );
    const plaintext = decryptAead(
      sodium.from_base64(message.ciphertext),
      aad,
      key,
      message.nonce,
      sodium,
    );
    check(bytesEqual(plaintext, expected), "plaintext (with header) differs");
    // Session level: the header as verifyAndDecryptEphemeralMessage reads it.
    check(plaintext.length >= 29, "plaintext shorter than the 29-byte header");
    const type = plaintext[0];
    const sessionId = sodium.to_base64(plaintext.slice(1, 25));
    const counter = new DataView(plaintext.buffer, plaintext.byteOffset).getUint32(25, true);
    const payload = plaintext.slice(29);
    if (c.ephemeral) {
      check(messageTypeCodes[c.ephemeral.type] === type, "header type differs from the case");
      check(c.ephemeral.sessionId === sessionId, "header session id differs from the case");
      check(c.ephemeral.counter === counter, "header counter differs from the case");
    }
    const session = { id: generateId(sodium), counter: 0, validSessions: {} };
    const verify = (msg, k, s) =>
      verifyAndDecryptEphemeralMessage(
        msg,
        k,
        msg.publicData.docId,
        s,
        signatureKeyPair,
        sodium,
        "off",
      );
    if (type === messageTypeCodes.initialize) {
      const result = verify(message, key, session);
      check(!result.error, `verifyAndDecryptEphemeralMessage: ${errorCode(result)}`);
      check(result.requestProof === true && result.proof?.length === 64, "no proof requested");
      notes.push("initialize answered with a proof");
    } else if (type === messageTypeCodes.message) {
      session.validSessions[c.signingPublicKey] = { sessionId, sessionCounter: counter - 1 };
      const result = verify(message, key, session);
      check(!result.error, `verifyAndDecryptEphemeralMessage: ${errorCode(result)}`);
      check(bytesEqual(result.content, payload), "session-level content differs");
      notes.push("delivered by the session");
    } else {
      check(c.ephemeral?.receiverSessionId, "a proof case needs ephemeral.receiverSessionId");
      session.id = c.ephemeral.receiverSessionId;
      const result = verify(message, key, session);
      check(!result.error, `verifyAndDecryptEphemeralMessage: ${errorCode(result)}`);
      const valid = result.validSessions?.[c.signingPublicKey];
      check(valid?.sessionId === sessionId, "session proof not accepted");
      check(valid.sessionCounter === counter, "session counter not taken over");
      if (type === messageTypeCodes.proofAndRequestProof) {
        check(result.proof?.length === 64, "no proof returned for proofAndRequestProof");
      }
      notes.push("session proof accepted");
    }
    const badSig = verify({ ...message, signature: flipFirstChar(message.signature) }, key, session);
    check(errorCode(badSig) === "SECSYNC_ERROR_308", `tampered signature: ${errorCode(badSig)}`);
    const badKey = verify(message, otherKey(key), session);
    check(errorCode(badKey) === "SECSYNC_ERROR_301", `wrong key: ${errorCode(badKey)}`);
  } else {
    throw new Error(`unknown kind ${c.kind}`);
  }
  notes.push("tampering rejected");
  return notes.join(", ");
}
