// The page of `secsync demo --web`: an unmodified secsync-react-yjs app. useYjsSync encrypts,
// signs and syncs the Yjs document (update format v2) through the secsync gateway at /ws; the
// document id and its key come from the URL fragment, which browsers never send to a server.
import sodium from "libsodium-wrappers";
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import { useYjsSync } from "secsync-react-yjs";
import * as Y from "yjs";

const NAMES = ["Ada", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Alan", "Radia"];
const COLORS = ["#b4005a", "#006e9c", "#7a5a00", "#2d7d2d", "#6b3fa0", "#a33f00"];

function fragmentParams() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  return {
    docId: params.get("doc"),
    key: params.get("key"),
    name: params.get("name") || NAMES[Math.floor(Math.random() * NAMES.length)],
  };
}

function shortKey(publicKey) {
  return publicKey ? `${publicKey.slice(0, 8)}…` : "?";
}

// Replaces the text of `ytext` by `next` with one delete and one insert around the common
// prefix and suffix: what a textarea's input event amounts to.
function applyInput(ydoc, ytext, previous, next) {
  let start = 0;
  while (start < previous.length && start < next.length && previous[start] === next[start]) start++;
  let endPrevious = previous.length;
  let endNext = next.length;
  while (endPrevious > start && endNext > start && previous[endPrevious - 1] === next[endNext - 1]) {
    endPrevious--;
    endNext--;
  }
  ydoc.transact(() => {
    if (endPrevious > start) ytext.delete(start, endPrevious - start);
    if (endNext > start) ytext.insert(start, next.slice(start, endNext));
  });
}

// Where a caret at `index` moves to under a remote change (a Yjs text delta).
function shiftIndex(index, delta) {
  let position = 0;
  let result = index;
  for (const op of delta) {
    if (op.retain !== undefined) position += op.retain;
    else if (op.insert !== undefined) {
      const length = typeof op.insert === "string" ? op.insert.length : 1;
      if (position <= result) result += length;
      position += length;
    } else if (op.delete !== undefined) {
      if (position < result) result -= Math.min(op.delete, result - position);
    }
  }
  return result;
}

function Editor({ ydoc, ytext, awareness, me }) {
  const area = useRef(null);
  const [text, setText] = useState(ytext.toString());
  const shown = useRef(text);
  // The caret as the user left it, moved by every remote change as it arrives: read from the
  // DOM instead, it would be wherever the last re-render put it, not where the user was.
  const caret = useRef([text.length, text.length]);
  const lastTyped = useRef(0);

  useEffect(() => {
    const onChange = (event, transaction) => {
      if (!transaction.local) {
        const [start, end] = caret.current;
        caret.current = [shiftIndex(start, event.delta), shiftIndex(end, event.delta)];
      }
      shown.current = ytext.toString();
      setText(shown.current);
    };
    ytext.observe(onChange);
    return () => ytext.unobserve(onChange);
  }, [ytext]);

  useLayoutEffect(() => {
    const element = area.current;
    if (element && document.activeElement === element) {
      element.setSelectionRange(caret.current[0], caret.current[1]);
    }
  }, [text]);

  const remember = (event) => {
    caret.current = [event.target.selectionStart, event.target.selectionEnd];
  };

  const onInput = (event) => {
    const next = event.target.value;
    remember(event);
    applyInput(ydoc, ytext, shown.current, next);
    shown.current = next;
    setText(next);
    const now = Date.now();
    if (now - lastTyped.current > 1000) {
      // presence says "typing" at most once a second, not once a keystroke
      lastTyped.current = now;
      awareness.setLocalStateField("user", { ...me, typedAt: now });
    }
  };

  return (
    <textarea
      id="editor"
      ref={area}
      value={text}
      onChange={onInput}
      onSelect={remember}
      spellCheck={false}
      placeholder="Type here: every keystroke is encrypted in this tab before it leaves."
    />
  );
}

function People({ awareness, myClientId }) {
  const [states, setStates] = useState([]);
  useEffect(() => {
    const refresh = () => setStates([...awareness.getStates().entries()]);
    refresh();
    awareness.on("change", refresh);
    const timer = setInterval(refresh, 1000); // "typing" fades without a new message
    return () => {
      awareness.off("change", refresh);
      clearInterval(timer);
    };
  }, [awareness]);
  return (
    <ul id="people">
      {states
        .filter(([, state]) => state.user)
        .map(([clientId, state]) => {
          const user = state.user;
          const typing = user.typedAt && Date.now() - user.typedAt < 2000;
          return (
            <li key={clientId} data-name={user.name || ""}>
              <span className="dot" style={{ background: user.color || "#888" }} />
              <b>{user.name || "anonymous"}</b>
              {clientId === myClientId ? " (you)" : ""}
              <code title={user.publicKey}>{shortKey(user.publicKey)}</code>
              {typing ? <em> typing…</em> : null}
            </li>
          );
        })}
    </ul>
  );
}

function Stored() {
  const [stored, setStored] = useState(null);
  useEffect(() => {
    let stop = false;
    const poll = async () => {
      try {
        const response = await fetch("api/stored");
        if (response.ok && !stop) setStored(await response.json());
      } catch {
        // the demo server went away; keep the last view
      }
      if (!stop) setTimeout(poll, 1500);
    };
    poll();
    return () => {
      stop = true;
    };
  }, []);
  if (stored === null) return <p>Reading the broker's stream…</p>;
  return (
    <div id="stored">
      <p>
        The broker's stream holds <b id="stored-count">{stored.total}</b> messages of this
        document. Text of the document found in them:{" "}
        <b id="plaintext-found" className={stored.plaintextFound ? "bad" : "good"}>
          {stored.plaintextFound ? "yes" : "none"}
        </b>{" "}
        (checked: {stored.checkedWords} words of the current text).
      </p>
      <table>
        <thead>
          <tr>
            <th>seq</th>
            <th>kind</th>
            <th>bytes</th>
            <th>author</th>
            <th>ciphertext (first bytes)</th>
          </tr>
        </thead>
        <tbody>
          {stored.messages.map((message) => (
            <tr key={message.sequence}>
              <td>{message.sequence}</td>
              <td>{message.kind}</td>
              <td>{message.size}</td>
              <td>
                <code title={message.author}>{shortKey(message.author)}</code>
              </td>
              <td>
                <code>{message.head}</code>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function App({ params }) {
  const ydoc = useMemo(() => new Y.Doc(), []);
  const ytext = useMemo(() => ydoc.getText("text"), [ydoc]);
  const key = useMemo(() => sodium.from_base64(params.key), [params.key]);
  const signatureKeyPair = useMemo(() => {
    const pair = sodium.crypto_sign_keypair();
    return { publicKey: pair.publicKey, privateKey: pair.privateKey, keyType: "ed25519" };
  }, []);
  const websocketEndpoint = `${window.location.protocol === "https:" ? "wss" : "ws"}://${window.location.host}${window.location.pathname.replace(/\/[^/]*$/, "")}/ws`;

  const [state, , , awareness] = useYjsSync({
    yDoc: ydoc,
    documentId: params.docId,
    signatureKeyPair,
    websocketEndpoint,
    websocketSessionKey: "demo",
    sodium,
    logging: "error",
    getSnapshotKey: () => key,
    getNewSnapshotData: () => ({ data: Y.encodeStateAsUpdateV2(ydoc), key, publicData: {} }),
    shouldSendSnapshot: ({ snapshotUpdatesCount }) => snapshotUpdatesCount >= 50,
    isValidClient: async () => true,
  });

  const me = useMemo(
    () => ({
      publicKey: sodium.to_base64(signatureKeyPair.publicKey),
      name: params.name,
      color: COLORS[Math.floor(Math.random() * COLORS.length)],
    }),
    [signatureKeyPair, params.name],
  );
  useEffect(() => {
    awareness.setLocalStateField("user", me);
  }, [awareness, me]);

  const status = typeof state.value === "string" ? state.value : Object.keys(state.value)[0];
  const loaded = state.context._documentDecryptionState === "complete";
  window.secsyncContext = state.context; // for a debugger (and the browser test)
  return (
    <main>
      <header>
        <h1>secsync: one encrypted document, a browser and a Python backend</h1>
        <p>
          You are <b id="my-name">{params.name}</b>, key <code>{me.publicKey.slice(0, 8)}…</code>.
          Connection: <b id="status" data-loaded={loaded ? "yes" : "no"}>{status}</b>
          {loaded ? "" : " (loading)"}.
        </p>
      </header>
      <section>
        <h2>The document</h2>
        <Editor ydoc={ydoc} ytext={ytext} awareness={awareness} me={me} />
      </section>
      <section>
        <h2>Who is here</h2>
        <People awareness={awareness} myClientId={ydoc.clientID} />
      </section>
      <section>
        <h2>What the broker stores</h2>
        <Stored />
      </section>
    </main>
  );
}

async function main() {
  await sodium.ready;
  const params = fragmentParams();
  const root = createRoot(document.getElementById("root"));
  if (!params.docId || !params.key) {
    root.render(<p>Open the link `secsync demo --web` prints: it carries the document and its key.</p>);
    return;
  }
  root.render(<App params={params} />);
}

main();
