// Shared helpers for the JS interop harness (see ../README.md).
//
// Import this module FIRST in every script, before bittorrent-tracker or p2pt: it patches the
// WebRTC implementation those libraries use (section 3.2 of
// ../shared/reference/js-interop.md).
//
// Two kinds of processes use it:
//   - the orchestrator (one per test script): starts the tracker, spawns one child process per
//     peer, drives them step by step over stdin/stdout, asserts, prints a summary;
//   - the peer children: one WebTorrent client each. One process per peer because two clients in
//     one process share one WebSocket (bittorrent-tracker pools sockets by announce URL), and the
//     reference tracker then sometimes loses one of two same-tick announces (js-interop.md 3.2).
//
// Wire protocol between them (newline-delimited JSON, one object per line):
//   child -> orchestrator, on the child's stdout: {"ev": "<name>", ...fields}
//   orchestrator -> child, on the child's stdin:  {"cmd": "<name>", ...fields}
// Any stdout line that is not such an object (a library's console.log) is forwarded to stderr.

import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { RTCPeerConnection } from 'webrtc-polyfill'
import { initLogger } from 'node-datachannel'

// INTEROP_RTC_LOG=Verbose|Debug|Info|Warning|Error: libdatachannel's own log, on stderr.
if (process.env.INTEROP_RTC_LOG) {
  initLogger(process.env.INTEROP_RTC_LOG, (level, message) => process.stderr.write(`[libdatachannel ${level}] ${message}\n`))
}

// ---------------------------------------------------------------------------------------------
// 1. End-of-candidates patch.
//
// bittorrent-tracker and P2PT run @thaunknown/simple-peer with trickle:false, so a peer only emits
// its offer/answer after the end-of-candidates event (an `icecandidate` event with
// `candidate: null`). webrtc-polyfill (node-datachannel) never dispatches that event, so
// simple-peer falls back to its 5 s iceCompleteTimeout - twice (offer and answer), i.e. ~10 s per
// connection. Dispatch it ourselves once ICE gathering reaches `complete`.
// Patching the prototype is enough whatever the import order, as long as it happens before the
// first RTCPeerConnection is created (simple-peer imports the very same class).
if (!RTCPeerConnection.prototype.__interopEndOfCandidatesPatch) {
  const origDispatch = RTCPeerConnection.prototype.dispatchEvent
  RTCPeerConnection.prototype.dispatchEvent = function (event) {
    const result = origDispatch.call(this, event)
    if (event.type === 'icegatheringstatechange' && this.iceGatheringState === 'complete') {
      this.onicecandidate?.({ candidate: null })
    }
    return result
  }
  RTCPeerConnection.prototype.__interopEndOfCandidatesPatch = true
}

// ---------------------------------------------------------------------------------------------
// 1b. Offers are sent without ICE candidates (disable with INTEROP_OFFER_CANDIDATES=keep).
//
// Why: with the end-of-candidates patch the answerer starts ICE checks (and then DTLS) towards
// the candidate in the offer as soon as it has made its answer - a millisecond or two later, over
// loopback UDP, while the answer still travels through the tracker. So the offerer usually gets
// the answerer's ICE checks and DTLS packets *before* it has the answer. libdatachannel 0.24.5
// handles that badly:
//   - often an early DTLS packet is dropped and only retransmitted ~1 s later (the bimodal
//     ~1 s connect time of js-interop.md 3.2; 20-40 % of runs here), and
//   - sometimes it starts DTLS before the answer is applied, rejects the peer's certificate
//     ("DTLS alert: unknown CA"), closes the connection, and applying the answer then throws "Got
//     a remote candidate without ICE transport": the client emits a 'warning', the test fails
//     (7 of 100 runs against ghostmesh-tracker, ~5 of 80 against the reference tracker).
// Without a candidate in the offer the answerer cannot send anything first: the offerer starts
// ICE once it has applied the answer, the answerer learns the offerer's address from those checks
// (a peer-reflexive candidate, standard ICE) and answers them. Nothing arrives early, and every
// connection then takes ~55 ms (one libjuice check interval) instead of 5 ms / 1 s / failed.
// What the tracker sees is unchanged in structure (SDP is opaque to it: the offer is the same
// JSON object with a shorter `sdp` string); answers are untouched.
// Mechanism: simple-peer sends `pc.localDescription` as its offer, so only that getter changes;
// the native side keeps its full description.
if (process.env.INTEROP_OFFER_CANDIDATES !== 'keep' && !RTCPeerConnection.prototype.__interopOfferPatch) {
  const desc = Object.getOwnPropertyDescriptor(RTCPeerConnection.prototype, 'localDescription')
  Object.defineProperty(RTCPeerConnection.prototype, 'localDescription', {
    ...desc,
    get () {
      const d = desc.get.call(this)
      if (!d || d.type !== 'offer') return d
      // simple-peer only reads { type, sdp } from it.
      return { type: d.type, sdp: d.sdp.replace(/^a=(candidate:.*|end-of-candidates)\r?\n/gm, '') }
    }
  })
  RTCPeerConnection.prototype.__interopOfferPatch = true
}

// ---------------------------------------------------------------------------------------------
// 2. RTCConfiguration for every peer connection.
//
// No ICE servers (no STUN/TURN traffic leaves the box), and bind libdatachannel to 127.0.0.1:
// inside the loopback-only namespace (run.sh) libjuice gathers no host candidate at all without
// `bindAddress`, and the connection never forms.
export const rtcConfig = Object.freeze({ iceServers: [], bindAddress: '127.0.0.1' })

// ---------------------------------------------------------------------------------------------
// 3. Bounded waits.

/** Default bound for a single step; every wait in the harness has one. */
export const STEP_TIMEOUT_MS = Number(process.env.INTEROP_STEP_TIMEOUT_MS) || 30_000

/** An Error whose message names the step that failed. */
export class StepError extends Error {
  constructor (step, message) {
    super(`${step}: ${message}`)
    this.step = step
  }
}

/**
 * Resolves/rejects like `promise`, but rejects with a StepError naming `step` if it has not
 * settled after `ms`.
 */
export function withTimeout (promise, step, ms = STEP_TIMEOUT_MS) {
  let timer
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new StepError(step, `timed out after ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Throws a StepError naming `step` unless `cond` holds. */
export function check (cond, step, message) {
  if (!cond) throw new StepError(step, message)
}

/** Strict equality check with both values in the message. */
export function checkEqual (actual, expected, step, what) {
  const a = JSON.stringify(actual)
  const e = JSON.stringify(expected)
  if (a !== e) throw new StepError(step, `${what}: expected ${e}, got ${a}`)
}

/** Milliseconds since `t0` (performance.now based), rounded. */
export function since (t0) {
  return Math.round(performance.now() - t0)
}

// ---------------------------------------------------------------------------------------------
// 4. The tracker under test.

const LISTEN_LINE = /^ghostmesh-tracker listening on (ws:\/\/127\.0\.0\.1:\d+)\s*$/

/**
 * Starts the tracker selected by env TRACKER_CMD and resolves to
 * `{ kind, url, stop(): Promise<void> }`.
 *
 * - TRACKER_CMD unset or `reference`: the reference JS tracker (bittorrent-tracker's Server),
 *   in this process, WebSocket only, on 127.0.0.1 and a free port.
 * - otherwise: TRACKER_CMD is the path of an executable (ghostmesh-tracker), started as
 *   `TRACKER_CMD --listen 127.0.0.1:0 --log-level warn`; it must print
 *   `ghostmesh-tracker listening on ws://127.0.0.1:PORT` on stdout. `stop()` sends SIGTERM and
 *   requires exit code 0.
 */
export async function startTracker () {
  const cmd = process.env.TRACKER_CMD
  if (!cmd || cmd === 'reference') return startReferenceTracker()
  return startTrackerProcess(cmd)
}

async function startReferenceTracker () {
  const { Server } = await import('bittorrent-tracker')
  const server = new Server({ udp: false, http: false, ws: true, stats: false })
  // The reference server reports protocol problems (e.g. an answer for an unknown peer) as
  // 'warning'; they are not failures of the clients, but worth seeing.
  server.on('warning', err => log(`[reference tracker] warning: ${err.message}`))
  let fatal = null
  server.on('error', err => {
    fatal = err
    log(`[reference tracker] error: ${err.message}`)
  })
  await withTimeout(new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  }), 'start reference tracker')
  const url = `ws://127.0.0.1:${server.ws.address().port}`
  return {
    kind: 'reference (bittorrent-tracker Server, in-process)',
    url,
    async stop () {
      await withTimeout(new Promise(resolve => server.close(() => resolve())), 'stop reference tracker', 10_000)
      if (fatal) throw new StepError('reference tracker', `emitted 'error': ${fatal.message}`)
    }
  }
}

async function startTrackerProcess (cmd) {
  const child = spawn(cmd, ['--listen', '127.0.0.1:0', '--log-level', 'warn'], {
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const stderrTail = []
  const exited = new Promise(resolve => {
    child.once('exit', (code, signal) => resolve({ code, signal }))
  })
  let spawnError = null
  child.once('error', err => { spawnError = err })

  // Tracker logs (warn and above) are shown, prefixed, and the tail is kept for error messages.
  createInterface({ input: child.stderr }).on('line', line => {
    stderrTail.push(line)
    if (stderrTail.length > 40) stderrTail.shift()
    log(`[tracker] ${line}`)
  })

  const step = `start tracker (${cmd})`
  const url = await withTimeout(new Promise((resolve, reject) => {
    const rl = createInterface({ input: child.stdout })
    rl.on('line', line => {
      const m = LISTEN_LINE.exec(line)
      if (m) resolve(m[1])
      else log(`[tracker stdout] ${line}`)
    })
    child.once('error', err => reject(new StepError(step, `cannot spawn: ${err.message}`)))
    exited.then(({ code, signal }) => reject(new StepError(step,
      `exited (code ${code}, signal ${signal}) before printing ` +
      `"ghostmesh-tracker listening on ws://127.0.0.1:PORT"; stderr: ` +
      (stderrTail.length ? `\n${stderrTail.join('\n')}` : '(empty)'))))
  }), step).catch(err => {
    child.kill('SIGKILL')
    throw err
  })

  return {
    kind: `process ${cmd}`,
    url,
    pid: child.pid,
    async stop () {
      if (spawnError) throw new StepError('stop tracker', spawnError.message)
      child.kill('SIGTERM')
      let result
      try {
        result = await withTimeout(exited, 'stop tracker (SIGTERM -> exit)', 10_000)
      } catch (err) {
        child.kill('SIGKILL')
        throw err
      }
      if (result.code !== 0) {
        throw new StepError('stop tracker',
          `expected exit code 0 after SIGTERM, got code ${result.code} signal ${result.signal}`)
      }
    },
    kill () { child.kill('SIGKILL') }
  }
}

// ---------------------------------------------------------------------------------------------
// 5. Orchestrator side: one child node process per peer.

/** Writes a diagnostic line to stderr (stdout is reserved for results). */
export function log (line) {
  process.stderr.write(line.endsWith('\n') ? line : line + '\n')
}

/**
 * A peer running in its own node process (`node script --child ROLE`), speaking the JSON-lines
 * protocol above. Events are queued, so an event that arrives before anyone waits for it is not
 * lost; `next()` takes them in order of arrival, one name at a time.
 */
export class PeerProcess {
  /**
   * @param {string} script  path of the script to run (its child mode)
   * @param {string} role    a name, also used as log prefix
   * @param {object} env     extra environment variables
   */
  constructor (script, role, env = {}, onFailure = () => {}) {
    this.role = role
    this.events = [] // received, not yet consumed
    this.waiters = [] // { name, resolve, reject }
    this.failure = null
    this.finishing = false
    this.onFailure = onFailure
    this.child = spawn(process.execPath, [script, '--child', role], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...env }
    })
    this.exited = new Promise(resolve => {
      this.child.once('exit', (code, signal) => {
        this.exitStatus = { code, signal }
        resolve(this.exitStatus)
        // Exiting before the orchestrator asked for it is a failure of whatever step runs now.
        if (!this.finishing) {
          this._fail(new StepError(`${role} process`, `exited unexpectedly (code ${code}, signal ${signal})`))
        }
      })
    })
    this.child.once('error', err => this._fail(new StepError(`${role} process`, `spawn failed: ${err.message}`)))
    this.child.stdin.on('error', () => {}) // EPIPE after the child exits is reported via 'exit'
    createInterface({ input: this.child.stderr }).on('line', line => log(`[${role}] ${line}`))
    createInterface({ input: this.child.stdout }).on('line', line => this._onLine(line))
  }

  _onLine (line) {
    let msg = null
    try { msg = JSON.parse(line) } catch {}
    if (!msg || typeof msg !== 'object' || typeof msg.ev !== 'string') {
      log(`[${this.role} stdout] ${line}`)
      return
    }
    if (msg.ev === 'fail') {
      this._fail(new StepError(`${this.role}: ${msg.step}`, msg.message))
      return
    }
    const i = this.waiters.findIndex(w => w.name === msg.ev)
    if (i >= 0) this.waiters.splice(i, 1)[0].resolve(msg)
    else this.events.push(msg)
  }

  // A child's failure fails the whole test at once (via onFailure), even if the orchestrator is
  // busy waiting for the other peer, and rejects anything waiting on this child.
  _fail (err) {
    if (this.failure) return
    this.failure = err
    for (const w of this.waiters.splice(0)) w.reject(err)
    this.onFailure(err)
  }

  /** Sends a command object to the child. */
  send (cmd, fields = {}) {
    this.child.stdin.write(JSON.stringify({ cmd, ...fields }) + '\n')
  }

  /**
   * Waits (bounded) for the next event named `name`. `step` names the step in error messages.
   * Fails at once if the child has reported a failure or exited.
   */
  next (name, step, ms = STEP_TIMEOUT_MS) {
    const i = this.events.findIndex(e => e.ev === name)
    if (i >= 0) return Promise.resolve(this.events.splice(i, 1)[0])
    if (this.failure) return Promise.reject(this.failure)
    const p = new Promise((resolve, reject) => this.waiters.push({ name, resolve, reject }))
    return withTimeout(p, `${this.role}: ${step} (waiting for "${name}")`, ms).catch(err => {
      this.waiters = this.waiters.filter(w => w.name !== name)
      throw err
    })
  }

  /** Removes and returns the queued (unconsumed) events named `name`. */
  drain (name) {
    const out = this.events.filter(e => e.ev === name)
    this.events = this.events.filter(e => e.ev !== name)
    return out
  }

  /** Events still queued, for diagnostics. */
  pending () {
    return this.events.map(e => e.ev)
  }

  /** Asks the child to exit and requires exit code 0 within the bound. */
  async finish (step = 'exit') {
    if (this.failure) throw this.failure
    this.finishing = true
    this.send('exit')
    this.child.stdin.end()
    const { code, signal } = await withTimeout(this.exited, `${this.role}: ${step}`, 10_000)
    if (this.failure && code !== 0) throw this.failure
    check(code === 0, `${this.role}: ${step}`, `exit code ${code}, signal ${signal}`)
  }

  kill () {
    if (this.exitStatus === undefined) this.child.kill('SIGKILL')
  }
}

/**
 * Runs `body(ctx)` as the orchestrator of one test: starts the tracker, records step timings,
 * prints the summary, cleans up, and sets the exit code (0 = pass). `ctx` holds:
 *   tracker            the object from startTracker()
 *   step(name, fn)     runs an async step, timing it; a thrown error fails the test, named
 *   spawnPeer(role, env)  a PeerProcess for `script`'s child mode, killed on failure
 */
export async function runOrchestrator (title, script, body) {
  const t0 = performance.now()
  const steps = []
  const peers = []
  let tracker = null
  let current = 'start'
  // Overall bound, below the Rust test's 90 s kill, so a hang still ends with a named step.
  const overallMs = Number(process.env.INTEROP_OVERALL_TIMEOUT_MS) || 75_000
  const overall = setTimeout(() => {
    finishFail(new StepError(current, `overall deadline of ${overallMs} ms exceeded`))
  }, overallMs)

  let done = false
  function cleanup () {
    for (const p of peers) p.kill()
    tracker?.kill?.()
  }
  function finishFail (err) {
    if (done) return
    done = true
    clearTimeout(overall)
    cleanup()
    const msg = err instanceof StepError ? err.message : `${current}: ${err?.stack || err}`
    printSteps(steps)
    process.stdout.write(`FAIL ${title} (tracker: ${tracker?.kind ?? 'not started'}) after ${since(t0)} ms\n`)
    process.stdout.write(`  failing step: ${msg}\n`)
    process.stdout.write(`  orchestrator step in progress: ${current}\n`)
    for (const p of peers) {
      const pend = p.pending()
      if (pend.length) process.stdout.write(`  unconsumed events from ${p.role}: ${pend.join(', ')}\n`)
    }
    log(`FAIL ${title}: ${msg}`)
    process.exitCode = 1
    process.stdout.write('', () => process.exit(1))
  }

  process.on('SIGTERM', () => finishFail(new StepError(current, 'orchestrator got SIGTERM')))
  process.on('SIGINT', () => finishFail(new StepError(current, 'orchestrator got SIGINT')))
  process.on('unhandledRejection', err => finishFail(err))
  process.on('uncaughtException', err => finishFail(err))

  const ctx = {
    get tracker () { return tracker },
    async step (name, fn) {
      current = name
      const s = performance.now()
      const result = await fn()
      steps.push({ name, ms: since(s), at: since(t0) })
      return result
    },
    spawnPeer (role, env = {}) {
      const p = new PeerProcess(script, role, { ...env, INTEROP_TRACKER_URL: tracker.url }, finishFail)
      peers.push(p)
      return p
    }
  }

  try {
    tracker = await ctx.step('start tracker', () => startTracker())
    log(`tracker: ${tracker.kind} at ${tracker.url}`)
    const extra = await body(ctx)
    for (const p of peers) await ctx.step(`${p.role} process exits with code 0`, () => p.finish())
    await ctx.step('stop tracker', () => tracker.stop())
    if (done) return
    done = true
    clearTimeout(overall)
    printSteps(steps)
    if (extra) for (const line of extra) process.stdout.write(`  ${line}\n`)
    process.stdout.write(`PASS ${title} (tracker: ${tracker.kind}) in ${since(t0)} ms\n`)
    // Exit explicitly once stdout is flushed: the native WebRTC module loaded by this process
    // must not be able to keep it alive.
    process.exitCode = 0
    process.stdout.write('', () => process.exit(0))
  } catch (err) {
    finishFail(err)
  }
}

function printSteps (steps) {
  if (!steps.length) return
  const w = Math.max(...steps.map(s => s.name.length))
  process.stdout.write(`  ${'step'.padEnd(w)}  took ms  at ms\n`)
  for (const s of steps) {
    process.stdout.write(`  ${s.name.padEnd(w)}  ${String(s.ms).padStart(7)}  ${String(s.at).padStart(5)}\n`)
  }
}

// ---------------------------------------------------------------------------------------------
// 6. Child side.

/** Reports an event to the orchestrator (one JSON line on stdout). */
export function report (ev, fields = {}) {
  process.stdout.write(JSON.stringify({ ev, ...fields }) + '\n')
}

/**
 * Reports a failure naming `step` and exits non-zero. Used for every unexpected event in a child
 * (a client 'warning'/'error', a thrown exception, the orchestrator going away).
 */
let childFailed = false
export function childFail (step, err) {
  if (childFailed) return // the first failure is the one that matters
  childFailed = true
  const message = err instanceof Error ? (err.message || String(err)) : String(err)
  report('fail', { step, message })
  log(`FAIL ${step}: ${err instanceof Error && err.stack ? err.stack : message}`)
  setTimeout(() => process.exit(1), 50)
}

/**
 * Child main loop: reads commands from stdin and passes each to `onCommand(cmd)`. The `exit`
 * command (sent by PeerProcess.finish) calls `onExit()` then exits 0. If stdin closes first, the
 * orchestrator is gone: exit 1 rather than linger. Exceptions in handlers fail the child.
 * A watchdog bounds the child's whole life as well.
 */
export function childMain (role, { onCommand, onExit }) {
  const lifeMs = Number(process.env.INTEROP_CHILD_LIFETIME_MS) || 80_000
  setTimeout(() => childFail(`${role} lifetime`, `still running after ${lifeMs} ms`), lifeMs).unref()
  process.on('uncaughtException', err => childFail(`${role} uncaught exception`, err))
  process.on('unhandledRejection', err => childFail(`${role} unhandled rejection`, err))

  let exiting = false
  const rl = createInterface({ input: process.stdin })
  rl.on('line', async line => {
    let msg
    try { msg = JSON.parse(line) } catch { return childFail(`${role} command`, `bad command line: ${line}`) }
    try {
      if (msg.cmd === 'exit') {
        exiting = true
        await withTimeout(Promise.resolve(onExit?.()), `${role} shutdown`, 10_000)
        // Give stdout a moment, then exit 0 explicitly: libdatachannel threads may otherwise
        // keep the process alive for a while after the last peer connection is closed.
        process.stdout.write('', () => process.exit(0))
        return
      }
      await onCommand(msg)
    } catch (err) {
      childFail(`${role} ${msg.cmd}`, err)
    }
  })
  rl.on('close', () => {
    if (!exiting) childFail(`${role} stdin`, 'orchestrator closed stdin before sending "exit"')
  })
}

/** Parses `--child ROLE` from argv; null in the orchestrator. */
export function childRole () {
  const i = process.argv.indexOf('--child')
  return i >= 0 ? process.argv[i + 1] : null
}
