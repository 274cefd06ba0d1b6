// Random Yjs documents for the Python v1/v2 codec tests, made and read by the real Yjs.
//
//   node yjs_cases.mjs generate SEED COUNT   -> JSON cases on stdout
//   node yjs_cases.mjs apply < items.json     -> what Yjs reads from each update, on stdout
//   node yjs_cases.mjs fixtures PATH          -> the committed fixture file (seed 1, 100 cases, gzip)
//
// A case holds one document's state in both formats, each transaction's update in both
// formats, merged updates with gaps (Skip structs) and a diff update, the content in a
// canonical JSON form and the state vector.
import * as Y from 'yjs'
import * as prng from 'lib0/prng'
import { readFileSync, writeFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'

const hex = (u8) => Buffer.from(u8).toString('hex')
const unhex = (s) => new Uint8Array(Buffer.from(s, 'hex'))

const PIECES = ['a', 'b', 'hello', ' ', 'é', 'ß', '中文', '😀', '𝄞', '👩‍👩‍👧', '\n', 'x'.repeat(25), '"q"', '\\']
const KEYS = ['a', 'b', 'title', 'k1', 'ключ', '😀', '1', '10']
const ATTRS = [
  { bold: true }, { bold: null }, { italic: true }, { color: '#ff0000' }, { size: 12 },
  { size: 1.5 }, { link: { href: 'https://example.org', n: [1, 2] } }, { big: 2 ** 40 }, { neg: -7 }
]

const str = (g) => {
  let s = ''
  const n = prng.int32(g, 1, 4)
  for (let i = 0; i < n; i++) s += prng.oneOf(g, PIECES)
  return s
}

const anyValue = (g, depth = 0) => {
  switch (prng.int32(g, 0, depth > 2 ? 6 : 9)) {
    case 0: return prng.int32(g, -1000, 1000)
    case 1: return prng.real53(g) * 1e6 - 5e5
    case 2: return str(g)
    case 3: return prng.bool(g)
    case 4: return null
    case 5: return prng.oneOf(g, [2 ** 31, -(2 ** 33), 2 ** 53 - 1, 0.1, 1e21, 1e-7, 0.5])
    case 6: return prng.uint53(g, 0, 2 ** 53 - 1)
    case 7: return [anyValue(g, depth + 1), anyValue(g, depth + 1)]
    case 8: return { [prng.oneOf(g, KEYS)]: anyValue(g, depth + 1), z: anyValue(g, depth + 1) }
    default: return new Uint8Array([1, 2, prng.int32(g, 0, 255)])
  }
}

const sharedValue = (g, state) => {
  switch (prng.int32(g, 0, 12)) {
    case 0: { const m = new Y.Map(); m.set('x', anyValue(g)); return m }
    case 1: return Y.Array.from([anyValue(g)])
    case 2: return new Y.Text(str(g))
    case 3: { state.subdocs++; return new Y.Doc({ guid: `sub-${state.subdocs}-${prng.uint32(g, 0, 1e9)}` }) }
    case 4: return new Uint8Array([prng.int32(g, 0, 255), 7])
    default: return anyValue(g)
  }
}

// every shared type of a document, found by walking it (the roots first)
const types = (doc) => {
  const out = []
  const walk = (t) => {
    out.push(t)
    if (t instanceof Y.Map) for (const v of t.values()) if (v instanceof Y.AbstractType) walk(v)
    if (t instanceof Y.Array || t instanceof Y.XmlFragment || t instanceof Y.XmlElement) {
      for (const v of t.toArray()) if (v instanceof Y.AbstractType) walk(v)
    }
  }
  for (const name of ['text', 'map', 'array', 'xml']) walk(doc.get(name, { text: Y.Text, map: Y.Map, array: Y.Array, xml: Y.XmlFragment }[name]))
  return out
}

const edit = (g, doc, state) => {
  const all = types(doc)
  const t = prng.int32(g, 0, 3) === 0 ? prng.oneOf(g, all) : all[prng.int32(g, 0, 3)]
  if (t instanceof Y.Text) { // Y.XmlText too
    const len = t.length
    const op = prng.int32(g, 0, 5)
    if (op <= 1 || len === 0) t.insert(prng.int32(g, 0, len), str(g), prng.bool(g) ? prng.oneOf(g, ATTRS) : undefined)
    else if (op === 2) { const i = prng.int32(g, 0, len - 1); t.delete(i, prng.int32(g, 1, Math.min(4, len - i))) }
    else if (op === 3) { const i = prng.int32(g, 0, len - 1); t.format(i, prng.int32(g, 1, len - i), prng.oneOf(g, ATTRS)) }
    else if (op === 4) t.insertEmbed(prng.int32(g, 0, len), { image: str(g), w: prng.oneOf(g, [1, 1.5, 2 ** 35]) }, prng.bool(g) ? { alt: 'x' } : {})
    else t.insert(prng.int32(g, 0, len), prng.oneOf(g, ['😀', '𝄞x', 'ab']))
  } else if (t instanceof Y.Map) {
    const keys = [...t.keys()]
    if (keys.length && prng.int32(g, 0, 3) === 0) t.delete(prng.oneOf(g, keys))
    else t.set(prng.oneOf(g, KEYS), sharedValue(g, state))
  } else if (t instanceof Y.Array) {
    const len = t.length
    if (len && prng.int32(g, 0, 3) === 0) { const i = prng.int32(g, 0, len - 1); t.delete(i, prng.int32(g, 1, Math.min(3, len - i))) }
    else {
      const n = prng.int32(g, 1, 3)
      const values = []
      for (let i = 0; i < n; i++) values.push(sharedValue(g, state))
      t.insert(prng.int32(g, 0, len), values)
    }
  } else { // XmlFragment or XmlElement
    const len = t.length
    const op = prng.int32(g, 0, 5)
    if (op === 0 && t instanceof Y.XmlElement) t.setAttribute(prng.oneOf(g, ['class', 'id', 'data-x']), str(g))
    else if (op === 1 && len) { const i = prng.int32(g, 0, len - 1); t.delete(i, 1) }
    else if (op === 2 && state.hooks) t.insert(prng.int32(g, 0, len), [new Y.XmlHook('hook')])
    else if (op === 3) { const x = new Y.XmlText(); x.insert(0, str(g), prng.bool(g) ? { bold: true } : {}); t.insert(prng.int32(g, 0, len), [x]) }
    else {
      const e = new Y.XmlElement(prng.oneOf(g, ['p', 'h1', 'span', 'ul']))
      e.setAttribute('class', prng.oneOf(g, ['a', 'b c']))
      e.insert(0, [new Y.XmlText(str(g))])
      t.insert(prng.int32(g, 0, len), [e])
    }
  }
}

export const canon = (v) => {
  if (v instanceof Y.XmlText || v instanceof Y.Text) {
    return { $text: v.toDelta().map((op) => [canon(op.insert), canon(op.attributes ?? {})]) }
  }
  if (v instanceof Y.XmlElement) {
    return { $xml: v.nodeName, attrs: canon(v.getAttributes()), children: v.toArray().map(canon) }
  }
  if (v instanceof Y.XmlHook) return { $hook: v.hookName, map: canon(Object.fromEntries(v.entries())) }
  if (v instanceof Y.XmlFragment) return { $frag: v.toArray().map(canon) }
  if (v instanceof Y.Map) return { $map: canon(Object.fromEntries(v.entries())) }
  if (v instanceof Y.Array) return { $array: v.toArray().map(canon) }
  if (v instanceof Y.Doc) return { $doc: v.guid }
  if (v instanceof Uint8Array) return { $bytes: hex(v) }
  if (Array.isArray(v)) return v.map(canon)
  if (v !== null && typeof v === 'object') {
    const out = {}
    for (const k of Object.keys(v).sort()) out[k] = canon(v[k])
    return out
  }
  return v
}

const content = (doc) => ({
  text: canon(doc.getText('text')),
  map: canon(doc.getMap('map')),
  array: canon(doc.getArray('array')),
  xml: canon(doc.getXmlFragment('xml'))
})

const stateVector = (doc) => Object.fromEntries([...Y.decodeStateVector(Y.encodeStateVector(doc))].map(([c, k]) => [String(c), k]))

const makeCase = (seed) => {
  const g = prng.create(seed)
  const state = { subdocs: 0, hooks: prng.int32(g, 0, 4) === 0 }
  const gc = prng.int32(g, 0, 3) !== 0
  const docs = []
  for (let i = 0, n = prng.int32(g, 1, 3); i < n; i++) {
    const doc = new Y.Doc({ gc })
    doc.clientID = prng.oneOf(g, [i + 1, 1000 + i, 2 ** 31 + i, 2 ** 53 - 1 - i, prng.uint32(g, 0, 2 ** 32 - 1)])
    docs.push(doc)
  }
  const v1 = []
  const v2 = []
  docs[0].on('update', (u) => v1.push(hex(u)))
  docs[0].on('updateV2', (u) => v2.push(hex(u)))
  let middle = null
  const steps = prng.int32(g, 1, 40)
  for (let s = 0; s < steps; s++) {
    const doc = prng.oneOf(g, docs)
    if (prng.int32(g, 0, 2) === 0) doc.transact(() => { edit(g, doc, state); edit(g, doc, state) })
    else edit(g, doc, state)
    if (docs.length > 1 && prng.int32(g, 0, 4) === 0) { // a concurrent merge between two clients
      const [a, b] = [prng.oneOf(g, docs), prng.oneOf(g, docs)]
      Y.applyUpdateV2(b, Y.encodeStateAsUpdateV2(a, Y.encodeStateVector(b)))
    }
    if (s === steps >> 1) middle = Y.encodeStateVector(docs[0])
  }
  for (const a of docs) for (const b of docs) if (a !== b) Y.applyUpdate(b, Y.encodeStateAsUpdate(a, Y.encodeStateVector(b)))
  const doc = docs[0]
  // updates with gaps: merging them leaves Skip structs
  const pick = v1.map((_, i) => i).filter(() => prng.bool(g))
  return {
    seed,
    hooks: state.hooks,
    v1: hex(Y.encodeStateAsUpdate(doc)),
    v2: hex(Y.encodeStateAsUpdateV2(doc)),
    updates: v1.map((u, i) => [u, v2[i]]),
    merged: [hex(Y.mergeUpdates(pick.map((i) => unhex(v1[i])))), hex(Y.mergeUpdatesV2(pick.map((i) => unhex(v2[i]))))],
    diff: [hex(Y.encodeStateAsUpdate(doc, middle ?? undefined)), hex(Y.encodeStateAsUpdateV2(doc, middle ?? undefined))],
    content: content(doc),
    stateVector: stateVector(doc)
  }
}

const generate = (seed, count) => ({
  yjs: JSON.parse(readFileSync(new URL('./node_modules/yjs/package.json', import.meta.url))).version,
  cases: Array.from({ length: count }, (_, i) => makeCase(seed * 100003 + i))
})

const apply = (items) => items.map(({ update, format }) => {
  const doc = new Y.Doc()
  try {
    if (format === 'v2') Y.applyUpdateV2(doc, unhex(update))
    else Y.applyUpdate(doc, unhex(update))
    return { content: content(doc), stateVector: stateVector(doc) }
  } catch (e) {
    return { error: String(e) }
  }
})

const [command, ...args] = process.argv.slice(2)
if (command === 'generate') {
  process.stdout.write(JSON.stringify(generate(Number(args[0]), Number(args[1]))))
} else if (command === 'apply') {
  process.stdout.write(JSON.stringify(apply(JSON.parse(readFileSync(0, 'utf8')))))
} else if (command === 'fixtures') {
  writeFileSync(args[0], gzipSync(JSON.stringify(generate(1, 100)) + '\n', { level: 9 }))
} else {
  process.stderr.write('usage: yjs_cases.mjs generate SEED COUNT | apply | fixtures PATH\n')
  process.exit(2)
}
