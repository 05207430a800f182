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
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runOrchestrator, StepError } from './lib/common.mjs'
import { Events, exchange } from './lib/rust-peer.mjs'

const IDENTIFIER = 'ghostmesh-interop rust+chromium \u2713'
const ORDER = process.env.INTEROP_ORDER || 'chromium-first'
const CHROMIUM = process.env.CHROMIUM || 'chromium'
const P2PT_BUNDLE = new URL('./node_modules/p2pt/dist/p2pt.iife.js', import.meta.url)

// The Rust peer (RustPeer) and the steps after both peers are up: lib/rust-peer.mjs.

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
  const browser = new BrowserPeer()
  const origin = await ctx.step('page server listening', () => browser.listen())
  const summary = await exchange(ctx, {
    identifier: IDENTIFIER,
    name: 'Chromium',
    order: ORDER,
    start: {
      step: 'Chromium starts, page ready (media permission, P2PT loaded)',
      launch: () => { browser.launch(origin, ctx.tracker.url); return browser },
      wait: 'page start',
      who: 'Chromium page'
    }
  })
  await ctx.step('Chromium closed', () => browser.kill())
  return [summary]
}

runOrchestrator('chromium-rust', new URL(import.meta.url).pathname, orchestrate)
