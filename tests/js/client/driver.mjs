// Runs unmodified secsync JS clients (createSyncMachine from the npm package, over `ws`) on Yjs
// documents, driven from Python by JSON lines: commands on stdin, replies and events on stdout.
// Diagnostics go to stderr. See tests/gateway/node_client.py for the protocol.
//
// The content is what an app built on createSyncMachine sends: a snapshot holds the whole Yjs
// state, an update the JSON array of base64url Yjs updates (one per local transaction), in Yjs
// update format v1 or v2 (format: "v2", as secsync-react-yjs).
import { createInterface } from "node:readline";

import sodium from "libsodium-wrappers";
import { createSyncMachine } from "secsync";
import { WebSocket } from "ws";
import { createActor } from "xstate";
import * as Y from "yjs";

globalThis.WebSocket = WebSocket;
await sodium.ready;

const REMOTE = Symbol("remote");
const clients = new Map();

function emit(event) {
  // epoch milliseconds, with the fraction (the benchmark compares them with Python's clock)
  process.stdout.write(JSON.stringify({ ...event, wall: performance.timeOrigin + performance.now() }) + "\n");
}

function errorText(error) {
  if (error === undefined || error === null) return String(error);
  return error.message ?? String(error);
}

function open(cmd) {
  const name = cmd.client;
  if (clients.has(name)) throw new Error(`client ${name} is open already`);
  const v2 = cmd.format === "v2";
  const encodeState = v2 ? Y.encodeStateAsUpdateV2 : Y.encodeStateAsUpdate;
  const applyUpdate = v2 ? Y.applyUpdateV2 : Y.applyUpdate;
  const ydoc = new Y.Doc();
  const ytext = ydoc.getText(cmd.textName ?? "text");
  const pair = sodium.crypto_sign_seed_keypair(sodium.from_hex(cmd.seedHex));
  const key = sodium.from_hex(cmd.keyHex);
  const client = {
    name,
    ydoc,
    ytext,
    v2,
    actor: null,
    forceSnapshot: false,
    snapshotEvery: cmd.snapshotEvery ?? 0,
    pending: 0,
    loaded: false,
    known: null,
    state: null,
    errors: 0,
  };
  clients.set(name, client);

  ytext.observe((_event, transaction) => {
    if (transaction.origin === REMOTE) emit({ type: "changed", client: name, text: ytext.toString() });
  });
  ydoc.on(v2 ? "updateV2" : "update", (update, origin) => {
    if (origin !== REMOTE) client.actor.send({ type: "ADD_CHANGES", data: [update] });
  });

  const input = {
    documentId: cmd.docId,
    signatureKeyPair: { publicKey: pair.publicKey, privateKey: pair.privateKey, keyType: "ed25519" },
    websocketEndpoint: cmd.url,
    websocketSessionKey: cmd.sessionKey,
    sodium,
    logging: "off",
    getSnapshotKey: () => key,
    getNewSnapshotData: () => {
      client.forceSnapshot = false;
      return { data: encodeState(ydoc), key, publicData: {} };
    },
    applySnapshot: (snapshot) => applyUpdate(ydoc, snapshot, REMOTE),
    applyChanges: (changes) => {
      Y.transact(ydoc, () => changes.forEach((change) => applyUpdate(ydoc, change, REMOTE)), REMOTE);
    },
    applyEphemeralMessage: (message, authorPublicKey) => {
      emit({ type: "ephemeral", client: name, data: sodium.to_string(message), author: authorPublicKey });
    },
    shouldSendSnapshot: ({ snapshotUpdatesCount }) =>
      client.forceSnapshot || (client.snapshotEvery > 0 && snapshotUpdatesCount >= client.snapshotEvery),
    isValidClient: async () => true,
    serializeChanges: (changes) => JSON.stringify(changes.map((change) => sodium.to_base64(change))),
    deserializeChanges: (text) => JSON.parse(text).map((change) => sodium.from_base64(change)),
    onDocumentUpdated: ({ type, knownSnapshotInfo }) => {
      client.known = knownSnapshotInfo;
      emit({ type: "document-updated", client: name, kind: type, known: knownSnapshotInfo });
    },
    onPendingChangesUpdated: (all) => {
      const before = client.pending;
      client.pending = all.length;
      if (before > 0 && all.length === 0) emit({ type: "acked", client: name });
    },
  };
  if (cmd.knownSnapshotInfo) {
    input.loadDocumentParams = { knownSnapshotInfo: cmd.knownSnapshotInfo, mode: cmd.mode ?? "delta" };
  }
  const actor = createActor(createSyncMachine(), { input });
  client.actor = actor;
  actor.subscribe({
    next: (snapshot) => {
      const context = snapshot.context;
      const value = typeof snapshot.value === "string" ? snapshot.value : Object.keys(snapshot.value)[0];
      if (value !== client.state) {
        client.state = value;
        emit({ type: "state", client: name, value });
      }
      if (!client.loaded && context._documentDecryptionState === "complete" && value === "connected") {
        client.loaded = true;
        emit({ type: "loaded", client: name, text: ytext.toString() });
      }
      const errors = context._snapshotAndUpdateErrors.length;
      if (errors > client.errors) {
        const fresh = context._snapshotAndUpdateErrors.slice(0, errors - client.errors).map(errorText);
        client.errors = errors;
        emit({ type: "error", client: name, errors: fresh, state: value });
      }
    },
    error: (error) => emit({ type: "error", client: name, errors: [errorText(error)], state: "crashed" }),
  });
  actor.start();
}

function get(name) {
  const client = clients.get(name);
  if (!client) throw new Error(`no client ${name}`);
  return client;
}

function withoutChanges(info) {
  const { changes: _changes, ...rest } = info;
  return rest;
}

function summary(client) {
  const context = client.actor.getSnapshot().context;
  const infos = context._snapshotInfosWithUpdateClocks;
  return {
    state: client.state,
    loaded: client.loaded,
    documentDecryptionState: context._documentDecryptionState,
    pending: client.pending,
    updatesInFlight: context._updatesInFlight.length,
    snapshotInFlight: context._snapshotInFlight !== null,
    errors: context._snapshotAndUpdateErrors.map(errorText),
    active: infos.length ? withoutChanges(infos[infos.length - 1]) : null,
    known: client.known,
    text: client.ytext.toString(),
  };
}

const commands = {
  open,
  insert(cmd) {
    const client = get(cmd.client);
    const at = cmd.index ?? client.ytext.length;
    client.ytext.insert(at, cmd.text);
  },
  text: (cmd) => ({ text: get(cmd.client).ytext.toString() }),
  async burst(cmd) {
    // one edit per turn of the event loop, as fast as the machine takes them; when each was made
    const client = get(cmd.client);
    const walls = [];
    for (const token of cmd.tokens) {
      client.ytext.insert(client.ytext.length, token);
      walls.push(performance.timeOrigin + performance.now());
      await new Promise((resolve) => setImmediate(resolve));
    }
    return { walls };
  },
  snapshot(cmd) {
    // the machine writes a snapshot when it next sends pending changes: give it one
    const client = get(cmd.client);
    client.forceSnapshot = true;
    client.ytext.insert(client.ytext.length, cmd.text ?? "");
    if (!cmd.text) {
      const encode = client.v2 ? Y.encodeStateAsUpdateV2 : Y.encodeStateAsUpdate;
      const empty = encode(client.ydoc, Y.encodeStateVector(client.ydoc));
      client.actor.send({ type: "ADD_CHANGES", data: [empty] });
    }
  },
  ephemeral(cmd) {
    get(cmd.client).actor.send({ type: "ADD_EPHEMERAL_MESSAGE", data: sodium.from_string(cmd.data) });
  },
  state: (cmd) => summary(get(cmd.client)),
  close(cmd) {
    const client = get(cmd.client);
    client.actor.send({ type: "DISCONNECT" });
    client.actor.stop();
    clients.delete(cmd.client);
  },
  quit() {
    for (const client of clients.values()) client.actor.stop();
    setImmediate(() => process.exit(0));
  },
};

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (error) {
    emit({ type: "failed", id: null, message: `not JSON: ${errorText(error)}` });
    return;
  }
  try {
    const handler = commands[cmd.cmd];
    if (!handler) throw new Error(`unknown command ${cmd.cmd}`);
    Promise.resolve(handler(cmd)).then(
      (result) => emit({ type: "ok", id: cmd.id ?? null, ...(result ?? {}) }),
      (error) => emit({ type: "failed", id: cmd.id ?? null, message: errorText(error) }),
    );
  } catch (error) {
    emit({ type: "failed", id: cmd.id ?? null, message: errorText(error) });
  }
});
lines.on("close", () => process.exit(0));
emit({ type: "ready" });
