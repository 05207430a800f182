// A Rust GhostMesh peer (the ghostmesh crate's `chat` example, `--json` mode) and P2PT 1.6.2
// running in headless Chromium (its own browser bundle, `p2pt/dist/p2pt.iife.js`, on Chromium's
// libwebrtc) meet through the tracker under test and talk over WebRTC:
//
//   one peer starts and announces, then the other (INTEROP_ORDER, as in rust-p2pt.mjs)
//   both see each other connect (byte-exact peer ids)
//   Chromium sends JSON to Rust, Rust responds (echo), Chromium gets the response
//   Rust sends JSON to Chromium, Chromium responds (echo), Rust gets the response
//   a 100,000-character string (an emoji across every 16000-unit chunk boundary) each way
//
// The page is served by this process on 127.0.0.1 and driven through two endpoints: it
// long-polls GET /cmd for commands (start, send, teardown) and POSTs its events to /event.
// Chromium needs media permission and --allow-loopback-in-peer-connection to offer 127.0.0.1
// host candidates at all (js-interop.md section 5): the fake-media flags grant the page's
// getUserMedia() call without a prompt.
//
// Run (see README.md): needs `chromium` in PATH (Debian: apt-get install chromium) or CHROMIUM.
//   cargo build -p ghostmesh --example chat -p ghostmesh-tracker
//   RUST_PEER_CMD=target/debug/examples/chat TRACKER_CMD=target/debug/ghostmesh-tracker \
//     interop/run.sh interop/chromium-rust.mjs
//
// INTEROP_ORDER=chromium-first (default: Chromium announces first, the Rust peer offers and
// Chromium answers) or rust-first (Chromium offers, Rust answers). Exit code 0 = pass.

import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import { createInterface } from 'node:readline'
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import { runOrchestrator, check, checkEqual, withTimeout, StepError, STEP_TIMEOUT_MS } from './lib/common.mjs'

const IDENTIFIER = 'ghostmesh-interop rust+chromium \u2713'
const INFO_HASH = createHash('sha1').update(IDENTIFIER, 'utf8').digest('hex')
const ORDER = process.env.INTEROP_ORDER || 'chromium-first'
const CHROMIUM = process.env.CHROMIUM || 'chromium'
const P2PT_BUNDLE = new URL('./node_modules/p2pt/dist/p2pt.iife.js', import.meta.url)

/** 100,000 code points; an emoji (2 UTF-16 units) starts at unit 16000k - 1 for every k. */
function bigString (tag) {
  const fill = `${tag} h\u00e9llo w\u00f6rld \u2192 `
  let s = ''
  let chars = 0
  let i = 0
  while (chars < 100_000) {
    if ((s.length + 1) % 16_000 === 0) s += '\u{1F44B}'
    else s += fill[i++ % fill.length]
    chars++
  }
  return s
}

/** Deep equality (serde_json sorts object keys, so the Rust echo has another key order). */
function checkSameValue (actual, expected, step, what) {
  if (!isDeepStrictEqual(actual, expected)) checkEqual(actual, expected, step, what)
}

/** Events from one peer, consumed in order by name, every wait bounded. */
class Events {
  constructor (role) {
    this.role = role
    this.events = []
    this.waiters = []
    this.failure = null
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
    process.emit('uncaughtException', err)
  }

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

// ---------------------------------------------------------------------------------------------
// The Rust peer: `RUST_PEER_CMD --json ...`, one JSON event per stdout line, commands on stdin.

class RustPeer extends Events {
  constructor (cmd, url) {
    super('Rust')
    this.finishing = false
    const args = ['--tracker', url, '--identifier', IDENTIFIER, '--bind', '127.0.0.1', '--json',
      '--reply', 'echo', '--request-timeout', String(Math.round(STEP_TIMEOUT_MS / 1000))]
    this.child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] })
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

  async response (step) {
    const r = await this.next(['response', 'error'], step)
    if (r.event === 'error') throw new StepError(`Rust: ${step}`, `send failed: ${r.error}`)
    return r
  }

  async finish () {
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
// The page (runs in Chromium). Commands arrive by long-polling /cmd; events go to /event.

const PAGE = `<!doctype html><meta charset="utf-8"><title>ghostmesh interop</title>
<script src="/p2pt.js"></script>
<script>
const post = (event, fields = {}) => fetch('/event', { method: 'POST', body: JSON.stringify({ event, ...fields }) })
window.onerror = (m, s, l, c, e) => { post('page-error', { message: String(e && e.stack || m) }) }
window.onunhandledrejection = e => { post('page-error', { message: String(e.reason && e.reason.stack || e.reason) }) }
;(async () => {
  const q = new URLSearchParams(location.search)
  // Media permission makes Chromium offer its 127.0.0.1 host candidate (with the loopback flag).
  const media = await navigator.mediaDevices.getUserMedia({ audio: true })
  media.getTracks().forEach(t => t.stop())
  const p2pt = new P2PT([q.get('tracker')], q.get('identifier'))
  p2pt._rtcConfig = { iceServers: [] }
  const peers = new Map()
  let teardown = false
  p2pt.on('trackerconnect', (t, stats) => post('trackerconnect', { connected: stats.connected }))
  p2pt.on('trackerwarning', err => post('page-error', { message: 'trackerwarning: ' + (err && err.message || err) }))
  p2pt.on('peerconnect', peer => {
    // P2PT's browser bundle can emit peerconnect twice for one channel: report it once.
    if (peers.has(peer.id)) return
    peers.set(peer.id, peer)
    post('peerconnect', { peerId: peer.id, count: peers.size })
  })
  p2pt.on('peerclose', peer => { if (!teardown) post('page-error', { message: 'peer ' + peer.id + ' closed before teardown' }) })
  p2pt.on('msg', (peer, msg) => { post('msg', { from: peer.id, msg }); peer.respond(msg) })
  await post('ready', { peerId: p2pt._peerId, infoHash: await p2pt.infoHash })
  for (;;) {
    const r = await fetch('/cmd')
    if (r.status !== 200) continue
    const { cmd, to, msg } = await r.json()
    if (cmd === 'start') p2pt.start()
    else if (cmd === 'send') {
      const [, response] = await p2pt.send(peers.get(to), msg)
      post('response', { from: to, response })
    } else if (cmd === 'teardown') {
      teardown = true
      post('teardown-ok', { peers: peers.size })
    }
  }
})()
</script>`

class BrowserPeer extends Events {
  constructor () {
    super('Chromium')
    this.commands = []
    this.polls = []
  }

  /** Serves the page, the P2PT bundle and the two endpoints on 127.0.0.1; resolves to the origin. */
  async listen () {
    const bundle = readFileSync(P2PT_BUNDLE)
    this.server = createServer((req, res) => {
      if (req.method === 'GET' && req.url.startsWith('/?')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(PAGE)
      } else if (req.method === 'GET' && req.url === '/p2pt.js') {
        res.writeHead(200, { 'content-type': 'text/javascript' }).end(bundle)
      } else if (req.method === 'GET' && req.url === '/cmd') {
        const cmd = this.commands.shift()
        if (cmd) return res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(cmd))
        const poll = { res, timer: setTimeout(() => { this.polls = this.polls.filter(p => p !== poll); res.writeHead(204).end() }, 20_000) }
        this.polls.push(poll)
      } else if (req.method === 'POST' && req.url === '/event') {
        let body = ''
        req.setEncoding('utf8')
        req.on('data', d => { body += d })
        req.on('end', () => {
          res.writeHead(204).end()
          let msg = null
          try { msg = JSON.parse(body) } catch {}
          if (!msg) return this.fail(new StepError('Chromium page', `bad event ${body.slice(0, 200)}`))
          if (msg.event === 'page-error') return this.fail(new StepError('Chromium page', msg.message))
          this.push(msg)
        })
      } else {
        res.writeHead(404).end()
      }
    })
    await new Promise(resolve => this.server.listen(0, '127.0.0.1', resolve))
    return `http://127.0.0.1:${this.server.address().port}`
  }

  send (cmd, fields = {}) {
    const poll = this.polls.shift()
    const body = { cmd, ...fields }
    if (!poll) return this.commands.push(body)
    clearTimeout(poll.timer)
    poll.res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body))
  }

  launch (origin, trackerUrl) {
    this.profile = mkdtempSync(join(tmpdir(), 'ghostmesh-chromium-'))
    const url = `${origin}/?tracker=${encodeURIComponent(trackerUrl)}&identifier=${encodeURIComponent(IDENTIFIER)}`
    const args = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--allow-loopback-in-peer-connection', '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream', `--user-data-dir=${this.profile}`, url]
    // Same process group as this script, so the Rust runner's timeout kill reaches it too.
    // (Debian's `chromium` wrapper execs the real binary; its helper processes die with it.)
    this.child = spawn(CHROMIUM, args, { stdio: ['ignore', 'ignore', 'pipe'] })
    this.child.once('error', err => this.fail(new StepError('Chromium', `spawn of ${CHROMIUM} failed: ${err.message}`)))
    this.child.once('exit', (code, signal) => {
      this.exitStatus = { code, signal }
      if (!this.closing) this.fail(new StepError('Chromium', `exited unexpectedly (code ${code}, signal ${signal})`))
    })
    this.stderr = []
    createInterface({ input: this.child.stderr }).on('line', line => {
      this.stderr.push(line)
      if (process.env.INTEROP_CHROMIUM_LOG) process.stderr.write(`[chromium] ${line}\n`)
    })
    process.on('exit', () => this.kill())
  }

  kill () {
    this.closing = true
    if (this.child && this.exitStatus === undefined) {
      this.child.kill('SIGKILL')
    }
    if (this.profile) {
      try { rmSync(this.profile, { recursive: true, force: true }) } catch {}
      this.profile = null
    }
    this.server?.close()
    for (const p of this.polls.splice(0)) { clearTimeout(p.timer); p.res.destroy() }
  }
}

// ---------------------------------------------------------------------------------------------
// Orchestrator.

async function orchestrate (ctx) {
  const cmd = process.env.RUST_PEER_CMD
  check(cmd, 'configuration', 'RUST_PEER_CMD must name the chat example binary (target/debug/examples/chat)')
  let rust = null
  let idR = null
  let idB = null
  const browser = new BrowserPeer()
  const origin = await ctx.step('page server listening', () => browser.listen())

  const startRust = async () => {
    rust = new RustPeer(cmd, ctx.tracker.url)
    idR = await ctx.step('Rust peer ready', async () => (await rust.next('ready', 'process start')).id)
    await ctx.step('Rust peer announces and gets a response', () => rust.next('tracker', 'announce response'))
  }
  const startBrowser = async () => {
    idB = await ctx.step('Chromium starts, page ready (media permission, P2PT loaded)', async () => {
      browser.launch(origin, ctx.tracker.url)
      const r = await browser.next('ready', 'page start')
      checkEqual(r.infoHash, INFO_HASH, 'Chromium page', 'info_hash = SHA-1(identifier)')
      return r.peerId
    })
    await ctx.step('Chromium peer announces and gets a response', async () => {
      browser.send('start')
      await browser.next('trackerconnect', 'announce response')
    })
  }
  if (ORDER === 'rust-first') { await startRust(); await startBrowser() } else { await startBrowser(); await startRust() }

  await ctx.step(`WebRTC connection (${ORDER === 'rust-first' ? 'Rust answers Chromium' : 'Chromium answers Rust'}): connected on both sides`, async () => {
    const [r, b] = await Promise.all([
      rust.next('peer', 'peer connected'),
      browser.next('peerconnect', 'peerconnect')
    ])
    checkEqual(r.id, idB, 'Rust peer connected', 'remote peer id (hex)')
    checkEqual(b.peerId, idR, 'Chromium peerconnect', 'remote peer id (hex)')
  })

  await ctx.step('Chromium -> Rust JSON message, Rust responds, Chromium gets the response', async () => {
    const msg = { n: 1, from: 'Chromium', text: 'ping from Chromium \u00fc \u{1F600}', list: [1, 2.5, null, true] }
    browser.send('send', { to: idR, msg })
    const got = await rust.next('msg', 'message from Chromium')
    checkEqual(got.from, idB, 'Rust receives', 'sender id')
    checkSameValue(got.payload, msg, 'Rust receives', 'message')
    const r = await browser.next('response', 'response from Rust')
    checkSameValue(r.response, msg, 'Chromium gets response', 'response (echo)')
  })

  await ctx.step('Rust -> Chromium JSON message, Chromium responds, Rust gets the response', async () => {
    const msg = { n: 2, from: 'Rust', text: 'ping from Rust \u2192 \u{1F680}', nested: { a: [] } }
    rust.send({ send: { to: idB, payload: msg } })
    const got = await browser.next('msg', 'message from Rust')
    checkEqual(got.from, idR, 'Chromium receives', 'sender id')
    checkSameValue(got.msg, msg, 'Chromium receives', 'message')
    const r = await rust.response('response from Chromium')
    checkEqual(r.to, idB, 'Rust gets response', 'responder')
    checkSameValue(r.payload, msg, 'Rust gets response', 'response (echo)')
  })

  const bigB = bigString('Chromium')
  await ctx.step('Chromium -> Rust 100,000-char string, echoed back', async () => {
    browser.send('send', { to: idR, msg: bigB })
    const got = await rust.next('msg', 'big message from Chromium')
    check(got.payload === bigB, 'Rust receives big string', `differs (length ${got.payload?.length}, expected ${bigB.length})`)
    const r = await browser.next('response', 'response from Rust')
    check(r.response === bigB, 'Chromium gets big response', `differs (length ${r.response?.length}, expected ${bigB.length})`)
  })

  const bigR = bigString('Rust')
  await ctx.step('Rust -> Chromium 100,000-char string, echoed back', async () => {
    rust.send({ send: { to: idB, payload: bigR } })
    const got = await browser.next('msg', 'big message from Rust')
    check(got.msg === bigR, 'Chromium receives big string', `differs (length ${got.msg?.length}, expected ${bigR.length})`)
    const r = await rust.response('big response from Chromium')
    check(r.payload === bigR, 'Rust gets big response', `differs (length ${r.payload?.length}, expected ${bigR.length})`)
  })

  await ctx.step('teardown: Chromium saw exactly one remote peer', async () => {
    browser.send('teardown')
    const t = await browser.next('teardown-ok', 'teardown')
    checkEqual(t.peers, 1, 'teardown', 'Chromium remote peers')
  })
  await ctx.step('Rust peer stops (end of input) and exits with code 0', () => rust.finish())
  await ctx.step('Chromium closed', () => browser.kill())
  return [`order ${ORDER}, info_hash ${INFO_HASH}, Rust ${idR}, Chromium ${idB}, big strings ${bigB.length} UTF-16 units`]
}

runOrchestrator('chromium-rust', new URL(import.meta.url).pathname, orchestrate)
