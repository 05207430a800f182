// A Rust GhostMesh peer (the `chat` example of the ghostmesh crate, in its `--json` machine mode)
// and a P2PT peer (p2pt 1.6.2, in a child node process) with one identifier meet through the
// tracker under test and talk over WebRTC:
//
//   one peer starts and announces, then the other (order: INTEROP_ORDER, below)
//   both see each other connect (byte-exact peer ids)
//   P2PT sends JSON to Rust, Rust responds (echo), P2PT gets the response
//   Rust sends JSON to P2PT, P2PT responds (echo), Rust gets the response
//   a 100,000-character string with an emoji across every 16000-unit chunk boundary, each way,
//   with the response (the same string) back
//
// Any tracker warning seen by either peer fails the test.
//
// Run (see README.md):
//   cargo build -p ghostmesh --example chat -p ghostmesh-tracker
//   RUST_PEER_CMD=target/debug/examples/chat TRACKER_CMD=target/debug/ghostmesh-tracker \
//     interop/run.sh interop/rust-p2pt.mjs
//   RUST_PEER_CMD=target/debug/examples/chat TRACKER_CMD=reference interop/run.sh interop/rust-p2pt.mjs
//
// INTEROP_ORDER=p2pt-first (default): P2PT announces first, so the Rust peer's offers are relayed
// to P2PT, P2PT (libdatachannel) answers and the Rust peer is the offerer. INTEROP_ORDER=rust-first:
// the other way round (Rust answers P2PT's offer).
//
// Exit code 0 = pass; otherwise the failing step is printed.

import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { createHash } from 'node:crypto'
import { isDeepStrictEqual } from 'node:util'
import {
  runOrchestrator, childRole, childFail, check, checkEqual, withTimeout, StepError, STEP_TIMEOUT_MS
} from './lib/common.mjs' // first: installs the WebRTC patches
import { runP2ptChild } from './lib/p2pt-child.mjs'

const IDENTIFIER = 'ghostmesh-interop rust+p2pt \u2713'
const INFO_HASH = createHash('sha1').update(IDENTIFIER, 'utf8').digest('hex')
const ORDER = process.env.INTEROP_ORDER || 'p2pt-first'

/** 100,000 code points; an emoji (2 UTF-16 units) starts at unit 16000k - 1 for every k. */
function bigString (tag) {
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
function checkSameValue (actual, expected, step, what) {
  if (!isDeepStrictEqual(actual, expected)) checkEqual(actual, expected, step, what)
}

// ---------------------------------------------------------------------------------------------
// Child: one P2PT instance (as in p2pt-pair.mjs), answering every message with itself.

// ---------------------------------------------------------------------------------------------
// The Rust peer: `RUST_PEER_CMD --json ...`, one JSON event per stdout line, commands on stdin.

class RustPeer {
  constructor (cmd, url, onFailure) {
    this.role = 'Rust'
    this.events = []
    this.waiters = []
    this.failure = null
    this.finishing = false
    this.onFailure = onFailure
    const args = ['--tracker', url, '--identifier', IDENTIFIER, '--bind', '127.0.0.1', '--json',
      '--reply', 'echo', '--request-timeout', String(Math.round(STEP_TIMEOUT_MS / 1000))]
    this.child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    // runOrchestrator only kills its own node children: make sure this one dies with us.
    process.on('exit', () => this.kill())
    this.exited = new Promise(resolve => {
      this.child.once('exit', (code, signal) => {
        this.exitStatus = { code, signal }
        resolve(this.exitStatus)
        if (!this.finishing) this._fail(new StepError('Rust process', `exited unexpectedly (code ${code}, signal ${signal})`))
      })
    })
    this.child.once('error', err => this._fail(new StepError('Rust process', `spawn of ${cmd} failed: ${err.message}`)))
    this.child.stdin.on('error', () => {})
    createInterface({ input: this.child.stderr }).on('line', line => process.stderr.write(`[Rust] ${line}\n`))
    createInterface({ input: this.child.stdout }).on('line', line => this._onLine(line))
  }

  _onLine (line) {
    let msg = null
    try { msg = JSON.parse(line) } catch {}
    if (!msg || typeof msg.event !== 'string') {
      process.stderr.write(`[Rust stdout] ${line}\n`)
      return
    }
    if (msg.event === 'warning') {
      this._fail(new StepError('Rust: tracker warning', `${msg.url}: ${msg.message}`))
      return
    }
    if (msg.event === 'closed' && !this.finishing) {
      this._fail(new StepError('Rust: peer connection', `peer ${msg.id} closed before teardown`))
      return
    }
    const i = this.waiters.findIndex(w => w.names.includes(msg.event))
    if (i >= 0) this.waiters.splice(i, 1)[0].resolve(msg)
    else this.events.push(msg)
  }

  _fail (err) {
    if (this.failure) return
    this.failure = err
    for (const w of this.waiters.splice(0)) w.reject(err)
    this.onFailure(err)
  }

  send (obj) { this.child.stdin.write(JSON.stringify(obj) + '\n') }

  /** Waits (bounded) for the next event whose name is in `names` (a string or an array). */
  next (names, step, ms = STEP_TIMEOUT_MS) {
    const want = [].concat(names)
    const i = this.events.findIndex(e => want.includes(e.event))
    if (i >= 0) return Promise.resolve(this.events.splice(i, 1)[0])
    if (this.failure) return Promise.reject(this.failure)
    const waiter = { names: want }
    const p = new Promise((resolve, reject) => Object.assign(waiter, { resolve, reject }))
    this.waiters.push(waiter)
    return withTimeout(p, `Rust: ${step} (waiting for ${want.map(n => `"${n}"`).join(' or ')})`, ms).catch(err => {
      this.waiters = this.waiters.filter(w => w !== waiter)
      throw err
    })
  }

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

// ---------------------------------------------------------------------------------------------
// Orchestrator.

async function orchestrate (ctx) {
  const cmd = process.env.RUST_PEER_CMD
  check(cmd, 'configuration', 'RUST_PEER_CMD must name the chat example binary (target/debug/examples/chat)')
  // The namespace's `lo` has no multicast route: this works only because ghostmesh's
  // WebRtcConfig turns webrtc-rs's mDNS socket off by default (it fails with ENODEV otherwise).
  let rust = null
  let p2pt = null
  let idR = null
  let idP = null

  const startRust = async () => {
    rust = new RustPeer(cmd, ctx.tracker.url, err => {
      // Fail the whole test at once, like a P2PT child failure does.
      process.emit('uncaughtException', err)
    })
    idR = await ctx.step('Rust peer ready', async () => (await rust.next('ready', 'process start')).id)
    await ctx.step('Rust peer announces and gets a response', () => rust.next('tracker', 'announce response'))
  }
  const startP2pt = async () => {
    p2pt = ctx.spawnPeer('P2PT')
    idP = await ctx.step('P2PT peer process ready', async () => {
      const r = await p2pt.next('ready', 'process start')
      checkEqual(r.infoHash, INFO_HASH, 'P2PT peer', 'info_hash = SHA-1(identifier)')
      return r.peerId
    })
    await ctx.step('P2PT peer announces and gets a response', async () => {
      p2pt.send('start')
      await p2pt.next('trackerconnect', 'announce response')
    })
  }
  // The second peer starts only after the first one's announce was answered (the reference
  // tracker loses one of two same-tick announces for a new info_hash; js-interop.md 3.2).
  if (ORDER === 'rust-first') { await startRust(); await startP2pt() } else { await startP2pt(); await startRust() }

  await ctx.step(`WebRTC connection (${ORDER === 'rust-first' ? 'Rust answers P2PT' : 'P2PT answers Rust'}): connected on both sides`, async () => {
    const [r, p] = await Promise.all([
      rust.next('peer', 'peer connected'),
      p2pt.next('peerconnect', 'peerconnect')
    ])
    checkEqual(r.id, idP, 'Rust peer connected', 'remote peer id (hex)')
    checkEqual(p.peerId, idR, 'P2PT peerconnect', 'remote peer id (hex)')
  })

  await ctx.step('P2PT -> Rust JSON message, Rust responds, P2PT gets the response', async () => {
    const msg = { n: 1, from: 'P2PT', text: 'ping from P2PT \u00fc \u{1F600}', list: [1, 2.5, null, true] }
    p2pt.send('send', { to: idR, msg })
    const got = await rust.next('msg', 'message from P2PT')
    checkEqual(got.from, idP, 'Rust receives', 'sender id')
    checkSameValue(got.payload, msg, 'Rust receives', 'message')
    const r = await p2pt.next('response', 'response from Rust')
    checkSameValue(r.response, msg, 'P2PT gets response', 'response (echo)')
  })

  await ctx.step('Rust -> P2PT JSON message, P2PT responds, Rust gets the response', async () => {
    const msg = { n: 2, from: 'Rust', text: 'ping from Rust \u2192 \u{1F680}', nested: { a: [] } }
    rust.send({ send: { to: idP, payload: msg } })
    const got = await p2pt.next('msg', 'message from Rust')
    checkEqual(got.from, idR, 'P2PT receives', 'sender id')
    checkSameValue(got.msg, msg, 'P2PT receives', 'message')
    const r = await rust.response('response from P2PT')
    checkEqual(r.to, idP, 'Rust gets response', 'responder')
    checkSameValue(r.payload, msg, 'Rust gets response', 'response (echo)')
  })

  const bigP = bigString('P2PT')
  await ctx.step('P2PT -> Rust 100,000-char string (emoji across chunk boundaries), echoed back', async () => {
    p2pt.send('send', { to: idR, msg: bigP })
    const got = await rust.next('msg', 'big message from P2PT')
    check(got.payload === bigP, 'Rust receives big string', `differs (got ${typeof got.payload} of length ${got.payload?.length}, expected ${bigP.length})`)
    const r = await p2pt.next('response', 'response from Rust')
    check(r.response === bigP, 'P2PT gets big response', `differs (length ${r.response?.length}, expected ${bigP.length})`)
  })

  const bigR = bigString('Rust')
  await ctx.step('Rust -> P2PT 100,000-char string (emoji across chunk boundaries), echoed back', async () => {
    rust.send({ send: { to: idP, payload: bigR } })
    const got = await p2pt.next('msg', 'big message from Rust')
    check(got.msg === bigR, 'P2PT receives big string', `differs (got ${typeof got.msg} of length ${got.msg?.length}, expected ${bigR.length})`)
    const r = await rust.response('big response from P2PT')
    check(r.payload === bigR, 'Rust gets big response', `differs (length ${r.payload?.length}, expected ${bigR.length})`)
  })

  await ctx.step('teardown: P2PT saw exactly one remote peer', async () => {
    p2pt.send('teardown')
    const t = await p2pt.next('teardown-ok', 'teardown')
    checkEqual(t.peers, 1, 'teardown', 'P2PT remote peers')
  })
  await ctx.step('Rust peer stops (end of input) and exits with code 0', () => rust.finish())
  return [`order ${ORDER}, info_hash ${INFO_HASH}, Rust ${idR}, P2PT ${idP}, big strings ${bigP.length} UTF-16 units`]
}

const role = childRole()
// The P2PT child echoes every message back as its response.
if (role) runP2ptChild(role, IDENTIFIER, msg => msg).catch(err => childFail(`${role} setup`, err))
else runOrchestrator('rust-p2pt', new URL(import.meta.url).pathname, orchestrate)
