// The Rust side of the Rust-against-JS interop scripts (rust-p2pt.mjs, chromium-rust.mjs): the
// ghostmesh crate's `chat` example in its `--json` machine mode (RustPeer), and `exchange()`, the
// sequence both scripts run once both peers are up. Import common.mjs before this module in a
// script that loads P2PT in node (it installs the WebRTC patches).
//
// The JS peer handed to exchange() speaks the P2PT child protocol (lib/p2pt-child.mjs), whether
// it is a child process (PeerProcess) or a page in Chromium: commands `send('start')`,
// `send('send', { to, msg })`, `send('teardown')`; events `ready {peerId, infoHash}`,
// `trackerconnect`, `peerconnect {peerId}`, `msg {from, msg}`, `response {from, response}`,
// `teardown-ok {peers}`, each taken with `next(name, step)`. Both sides answer every message with
// the message itself.

import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { createHash } from 'node:crypto'
import { isDeepStrictEqual } from 'node:util'
import { check, checkEqual, withTimeout, StepError, STEP_TIMEOUT_MS } from './common.mjs'

/** info_hash (hex) of a P2PT identifier: SHA-1 of its UTF-8 bytes. */
export function infoHashOf (identifier) {
  return createHash('sha1').update(identifier, 'utf8').digest('hex')
}

/** 100,000 code points; an emoji (2 UTF-16 units) starts at unit 16000k - 1 for every k. */
export function bigString (tag) {
  const fill = `${tag} h\u00e9llo w\u00f6rld \u2192 `
  let s = ''
  let chars = 0
  let i = 0
  while (chars < 100_000) {
    if ((s.length + 1) % 16_000 === 0) s += '\u{1F44B}' // straddles the chunk boundary
    else s += fill[i++ % fill.length]
    chars++
  }
  return s
}

/**
 * Like checkEqual, but object key order does not matter: serde_json (without its
 * `preserve_order` feature) keeps object keys sorted, so the Rust peer delivers and echoes
 * `{"n":1,"from":..}` as `{"from":..,"n":1}` - the same JSON value, a different text.
 */
export function checkSameValue (actual, expected, step, what) {
  if (!isDeepStrictEqual(actual, expected)) checkEqual(actual, expected, step, what)
}

/**
 * Events from one peer (objects with an `event` name), consumed in order by name, every wait
 * bounded. A failure rejects every waiter and, by default, fails the whole test at once (like a
 * failing P2PT child does), even while the orchestrator waits on the other peer.
 */
export class Events {
  constructor (role, onFailure = err => process.emit('uncaughtException', err)) {
    this.role = role
    this.events = []
    this.waiters = []
    this.failure = null
    this.onFailure = onFailure
  }

  push (msg) {
    const i = this.waiters.findIndex(w => w.names.includes(msg.event))
    if (i >= 0) this.waiters.splice(i, 1)[0].resolve(msg)
    else this.events.push(msg)
  }

  fail (err) {
    if (this.failure) return
    this.failure = err
    for (const w of this.waiters.splice(0)) w.reject(err)
    this.onFailure(err)
  }

  /** Waits (bounded) for the next event whose name is in `names` (a string or an array). */
  next (names, step, ms = STEP_TIMEOUT_MS) {
    const want = [].concat(names)
    const i = this.events.findIndex(e => want.includes(e.event))
    if (i >= 0) return Promise.resolve(this.events.splice(i, 1)[0])
    if (this.failure) return Promise.reject(this.failure)
    const waiter = { names: want }
    const p = new Promise((resolve, reject) => Object.assign(waiter, { resolve, reject }))
    this.waiters.push(waiter)
    return withTimeout(p, `${this.role}: ${step} (waiting for ${want.map(n => `"${n}"`).join(' or ')})`, ms).catch(err => {
      this.waiters = this.waiters.filter(w => w !== waiter)
      throw err
    })
  }
}

/** The Rust peer: `cmd --json ...`, one JSON event per stdout line, commands on stdin. */
export class RustPeer extends Events {
  constructor (cmd, url, identifier) {
    super('Rust')
    this.finishing = false
    const args = ['--tracker', url, '--identifier', identifier, '--bind', '127.0.0.1', '--json',
      '--reply', 'echo', '--request-timeout', String(Math.round(STEP_TIMEOUT_MS / 1000))]
    this.child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    // runOrchestrator only kills its own node children: make sure this one dies with us.
    process.on('exit', () => this.kill())
    this.exited = new Promise(resolve => {
      this.child.once('exit', (code, signal) => {
        this.exitStatus = { code, signal }
        resolve(this.exitStatus)
        if (!this.finishing) this.fail(new StepError('Rust process', `exited unexpectedly (code ${code}, signal ${signal})`))
      })
    })
    this.child.once('error', err => this.fail(new StepError('Rust process', `spawn of ${cmd} failed: ${err.message}`)))
    this.child.stdin.on('error', () => {})
    createInterface({ input: this.child.stderr }).on('line', line => process.stderr.write(`[Rust] ${line}\n`))
    createInterface({ input: this.child.stdout }).on('line', line => {
      let msg = null
      try { msg = JSON.parse(line) } catch {}
      if (!msg || typeof msg.event !== 'string') return process.stderr.write(`[Rust stdout] ${line}\n`)
      if (msg.event === 'warning') return this.fail(new StepError('Rust: tracker warning', `${msg.url}: ${msg.message}`))
      if (msg.event === 'closed' && !this.finishing) return this.fail(new StepError('Rust: peer connection', `peer ${msg.id} closed before teardown`))
      this.push(msg)
    })
  }

  send (obj) { this.child.stdin.write(JSON.stringify(obj) + '\n') }

  /** A send's outcome: the `response` event; an `error` event (e.g. a timeout) fails the step. */
  async response (step) {
    const r = await this.next(['response', 'error'], step)
    if (r.event === 'error') throw new StepError(`Rust: ${step}`, `send failed: ${r.error}`)
    return r
  }

  /** End of stdin: the chat example stops the mesh, prints `stopped` and exits 0. */
  async finish () {
    if (this.failure) throw this.failure
    this.finishing = true
    this.child.stdin.end()
    await this.next('stopped', 'stop() after end of input', 15_000)
    const { code, signal } = await withTimeout(this.exited, 'Rust: exit', 10_000)
    check(code === 0, 'Rust: exit', `exit code ${code}, signal ${signal}`)
  }

  kill () {
    if (this.exitStatus === undefined) this.child.kill('SIGKILL')
  }
}

/**
 * Starts the Rust peer (RUST_PEER_CMD) and the JS peer in `order`, then runs the common steps:
 * WebRTC connection, a JSON message each way with its response, a 100,000-character string each
 * way echoed back, teardown (the JS peer saw exactly one remote peer), Rust peer stops.
 *
 * - `name`: the JS peer's display name in step names ("P2PT", "Chromium");
 * - `order`: `rust-first` (the JS peer offers, Rust answers) or anything else (the JS peer
 *   announces first: Rust offers, the JS peer answers); each peer starts only after the first
 *   one's announce was answered (the reference tracker loses one of two same-tick announces for a
 *   new info_hash; js-interop.md 3.2);
 * - `start`: how the JS peer starts, `{ step, launch, wait, who }`: in step `step`, `launch()`
 *   starts it and returns its handle (speaking the protocol above), which must then report
 *   `ready` (waited for as `wait`) with the info_hash of `identifier` (checked as `who`); then
 *   it announces (`start`) and must get a response.
 *
 * Resolves to the summary line (order, info_hash, both peer ids, big string length).
 */
export async function exchange (ctx, { identifier, name, order, start }) {
  const cmd = process.env.RUST_PEER_CMD
  check(cmd, 'configuration', 'RUST_PEER_CMD must name the chat example binary (target/debug/examples/chat)')
  // The namespace's `lo` has no multicast route: this works only because ghostmesh's
  // WebRtcConfig turns webrtc-rs's mDNS socket off by default (it fails with ENODEV otherwise).
  let rust = null
  let idR = null
  let peer = null
  let idP = null
  const startRust = async () => {
    rust = new RustPeer(cmd, ctx.tracker.url, identifier)
    idR = await ctx.step('Rust peer ready', async () => (await rust.next('ready', 'process start')).id)
    await ctx.step('Rust peer announces and gets a response', () => rust.next('tracker', 'announce response'))
  }
  const startJs = async () => {
    idP = await ctx.step(start.step, async () => {
      peer = start.launch()
      const r = await peer.next('ready', start.wait)
      checkEqual(r.infoHash, infoHashOf(identifier), start.who, 'info_hash = SHA-1(identifier)')
      return r.peerId
    })
    await ctx.step(`${name} peer announces and gets a response`, async () => {
      peer.send('start')
      await peer.next('trackerconnect', 'announce response')
    })
  }
  const rustFirst = order === 'rust-first'
  if (rustFirst) { await startRust(); await startJs() } else { await startJs(); await startRust() }

  await ctx.step(`WebRTC connection (${rustFirst ? `Rust answers ${name}` : `${name} answers Rust`}): connected on both sides`, async () => {
    const [r, p] = await Promise.all([
      rust.next('peer', 'peer connected'),
      peer.next('peerconnect', 'peerconnect')
    ])
    checkEqual(r.id, idP, 'Rust peer connected', 'remote peer id (hex)')
    checkEqual(p.peerId, idR, `${name} peerconnect`, 'remote peer id (hex)')
  })

  await ctx.step(`${name} -> Rust JSON message, Rust responds, ${name} gets the response`, async () => {
    const msg = { n: 1, from: name, text: `ping from ${name} \u00fc \u{1F600}`, list: [1, 2.5, null, true] }
    peer.send('send', { to: idR, msg })
    const got = await rust.next('msg', `message from ${name}`)
    checkEqual(got.from, idP, 'Rust receives', 'sender id')
    checkSameValue(got.payload, msg, 'Rust receives', 'message')
    const r = await peer.next('response', 'response from Rust')
    checkSameValue(r.response, msg, `${name} gets response`, 'response (echo)')
  })

  await ctx.step(`Rust -> ${name} JSON message, ${name} responds, Rust gets the response`, async () => {
    const msg = { n: 2, from: 'Rust', text: 'ping from Rust \u2192 \u{1F680}', nested: { a: [] } }
    rust.send({ send: { to: idP, payload: msg } })
    const got = await peer.next('msg', 'message from Rust')
    checkEqual(got.from, idR, `${name} receives`, 'sender id')
    checkSameValue(got.msg, msg, `${name} receives`, 'message')
    const r = await rust.response(`response from ${name}`)
    checkEqual(r.to, idP, 'Rust gets response', 'responder')
    checkSameValue(r.payload, msg, 'Rust gets response', 'response (echo)')
  })

  const bigP = bigString(name)
  await ctx.step(`${name} -> Rust 100,000-char string (emoji across chunk boundaries), echoed back`, async () => {
    peer.send('send', { to: idR, msg: bigP })
    const got = await rust.next('msg', `big message from ${name}`)
    check(got.payload === bigP, 'Rust receives big string', `differs (got ${typeof got.payload} of length ${got.payload?.length}, expected ${bigP.length})`)
    const r = await peer.next('response', 'response from Rust')
    check(r.response === bigP, `${name} gets big response`, `differs (length ${r.response?.length}, expected ${bigP.length})`)
  })

  const bigR = bigString('Rust')
  await ctx.step(`Rust -> ${name} 100,000-char string (emoji across chunk boundaries), echoed back`, async () => {
    rust.send({ send: { to: idP, payload: bigR } })
    const got = await peer.next('msg', 'big message from Rust')
    check(got.msg === bigR, `${name} receives big string`, `differs (got ${typeof got.msg} of length ${got.msg?.length}, expected ${bigR.length})`)
    const r = await rust.response(`big response from ${name}`)
    check(r.payload === bigR, 'Rust gets big response', `differs (length ${r.payload?.length}, expected ${bigR.length})`)
  })

  await ctx.step(`teardown: ${name} saw exactly one remote peer`, async () => {
    peer.send('teardown')
    const t = await peer.next('teardown-ok', 'teardown')
    checkEqual(t.peers, 1, 'teardown', `${name} remote peers`)
  })
  await ctx.step('Rust peer stops (end of input) and exits with code 0', () => rust.finish())
  return `order ${order}, info_hash ${infoHashOf(identifier)}, Rust ${idR}, ${name} ${idP}, big strings ${bigP.length} UTF-16 units`
}
