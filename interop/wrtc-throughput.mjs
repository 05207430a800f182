// The JavaScript baseline of the transfer benchmark (issue 9, bench/transfer-vs-node.sh):
// two @roamhq/wrtc (libwebrtc) peers, one reliable ordered data channel, connect time and MB/s
// with 16 KiB and 64 KiB messages. It mirrors mesh/benches/webrtc_throughput.rs (two webrtc-rs
// peers in one process) case for case:
//
//   - connect: from creating the offerer's RTCPeerConnection to both channels open, with
//     non-trickle signalling (each side waits for ICE gathering to complete and hands over one
//     complete description), as P2PT/simple-peer (trickle: false) and the Rust link do;
//   - throughput: a fresh connection per case; MB/s (10^6 bytes/s) from the first send to the
//     receiver holding the last byte; every message carries its index in its first 8 bytes,
//     checked on receipt (ordered, nothing lost); the sender keeps `bufferedAmount` under a
//     high-water mark and resumes below a low one (wrtc has no `bufferedamountlow` event, so
//     it polls: a 0 ms timer while above the low mark).
//
// Both peers run in one process by default, as the Rust bench does; `--two-processes` puts the
// answerer in a child process (signalling and results over Node's IPC), so each peer has its
// own JavaScript thread.
//
// Run it in a loopback-only network namespace (wrtc otherwise also runs ICE checks towards the
// machine's other interfaces):
//
//   unshare -n sh -c 'ip link set lo up && exec node interop/wrtc-throughput.mjs [MiB] [rounds] [--two-processes]'
//
// Defaults: 64 MiB per case, 3 rounds (each runs every case once), 5 connects per round.
// Environment: WRTC_HIGH_WATER / WRTC_LOW_WATER (bytes; default 4 MiB / 1 MiB: 16 MiB made
// libwebrtc close the channel, 1 MiB / 256 KiB was no faster), WRTC_BENCH_TIMEOUT_S (default
// 600: the whole run is bounded). Prints progress on stderr and one machine-readable line on
// stdout (`node2` instead of `node` with --two-processes):
//
//   node connect_ms=<median> mbs_16k=.. mbs_64k=.. cpu_16k=.. cpu_64k=.. connect_all=a,b,.. mbs_16k_all=.. ...
//
// cpu_* = MB per CPU-second of both peers' processes (process.cpuUsage(): every thread, user +
// system), which depends less on what else runs on the machine.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const wrtc = require('@roamhq/wrtc')
const { RTCPeerConnection } = wrtc

const args = process.argv.slice(2).filter((a) => !a.startsWith('-')).map(Number)
const MIB = args[0] > 0 ? args[0] : 64
const ROUNDS = args[1] > 0 ? args[1] : 3
const CONNECTS = 5
const HIGH = Number(process.env.WRTC_HIGH_WATER || 4 * 1024 * 1024)
const LOW = Number(process.env.WRTC_LOW_WATER || 1024 * 1024)
const TIMEOUT_S = Number(process.env.WRTC_BENCH_TIMEOUT_S || 600)

const overall = setTimeout(() => {
  console.error(`wrtc-throughput: gave up after ${TIMEOUT_S} s`)
  process.exit(1)
}, TIMEOUT_S * 1000)
overall.unref()

const log = (...a) => console.error(...a)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolves with the complete local description once ICE gathering is complete (5 s at most). */
function gathered (pc) {
  return new Promise((resolve) => {
    const done = () => resolve(pc.localDescription)
    if (pc.iceGatheringState === 'complete') return done()
    const timer = setTimeout(done, 5000)
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') {
        clearTimeout(timer)
        done()
      }
    })
  })
}

function opened (dc) {
  return new Promise((resolve, reject) => {
    if (dc.readyState === 'open') return resolve(dc)
    dc.onopen = () => resolve(dc)
    dc.onerror = (e) => reject(new Error(`channel error: ${e?.error?.message ?? e}`))
  })
}

const config = { iceServers: [] }

/** Counts `n` messages on `ch` (checking their order): resolves with { bytes, cpu } (cpu: this
 *  process's CPU seconds while receiving, counted only when the receiver has its own process). */
function receive (ch, n, ownProcess) {
  return new Promise((resolve, reject) => {
    if (n === 0) return resolve({ bytes: 0, cpu: 0 })
    let received = 0
    let bytes = 0
    let cpu0 = null
    ch.onmessage = (e) => {
      if (cpu0 === null) cpu0 = process.cpuUsage()
      const index = Number(new DataView(e.data).getBigUint64(0))
      if (index !== received) return reject(new Error(`message ${received}: got index ${index}`))
      received++
      bytes += e.data.byteLength
      if (received === n) {
        const c = process.cpuUsage(cpu0)
        resolve({ bytes, cpu: ownProcess ? (c.user + c.system) / 1e6 : 0 })
      }
    }
    ch.onclose = () => received < n && reject(new Error('channel closed mid-transfer'))
  })
}

/** The answering peer in this process. */
function localAnswerer (ownProcess = false) {
  let pc
  return {
    async answer (offer, n) {
      pc = new RTCPeerConnection(config)
      // Attach before negotiating: on loopback the channel can open before an await returns.
      const remote = new Promise((resolve) => { pc.ondatachannel = (e) => resolve(opened(e.channel)) })
      await pc.setRemoteDescription(offer)
      await pc.setLocalDescription(await pc.createAnswer())
      const answer = await gathered(pc)
      this.opened = remote.then((ch) => { ch.binaryType = 'arraybuffer'; return ch })
      this.done = this.opened.then((ch) => receive(ch, n, ownProcess))
      return { type: answer.type, sdp: answer.sdp }
    },
    async close () { pc?.close() }
  }
}

/** The answering peer in a child process (`--two-processes`), driven over Node's IPC. */
function childAnswerer (child) {
  const waiters = new Map()
  const next = (ev) => new Promise((resolve, reject) => waiters.set(ev, { resolve, reject }))
  child.on('message', (m) => {
    const w = waiters.get(m.ev)
    if (!w) return
    waiters.delete(m.ev)
    if (m.error) w.reject(new Error(`child: ${m.error}`))
    else w.resolve(m)
  })
  return {
    async answer (offer, n) {
      const answered = next('answer')
      this.opened = next('open')
      this.done = next('done')
      child.send({ cmd: 'offer', offer, n })
      return (await answered).answer
    },
    async close () {
      const closed = next('closed')
      child.send({ cmd: 'close' })
      await closed
    }
  }
}

/** The child process of `--two-processes`: one answerer per `offer` command. */
function runChild () {
  let peer = null
  process.on('message', async (m) => {
    try {
      if (m.cmd === 'offer') {
        peer = localAnswerer(true)
        const answer = await peer.answer(m.offer, m.n)
        process.send({ ev: 'answer', answer })
        await peer.opened
        process.send({ ev: 'open' })
        const { bytes, cpu } = await peer.done
        process.send({ ev: 'done', bytes, cpu })
      } else if (m.cmd === 'close') {
        await peer?.close()
        process.send({ ev: 'closed' })
      } else if (m.cmd === 'exit') {
        process.exit(0)
      }
    } catch (e) {
      process.send({ ev: m.cmd === 'offer' ? 'done' : 'closed', error: String(e) })
    }
  })
}

/** Two connected peers: { a, peer, pc, ms } (a: the offerer's channel). */
async function connect (peer, n = 0) {
  const t0 = performance.now()
  const pc = new RTCPeerConnection(config)
  const local = opened(pc.createDataChannel('bench')) // ordered, reliable
  await pc.setLocalDescription(await pc.createOffer())
  const offer = await gathered(pc)
  const answer = await peer.answer({ type: offer.type, sdp: offer.sdp }, n)
  await pc.setRemoteDescription(answer)
  const [a] = await Promise.all([local, peer.opened])
  a.binaryType = 'arraybuffer'
  return { a, peer, pc, ms: performance.now() - t0 }
}

async function close ({ a, peer, pc }) {
  a.close()
  pc.close()
  await peer.close()
  await sleep(20)
}

async function throughput (peer, msg, total) {
  const n = Math.floor(total / msg)
  const link = await connect(peer, n)
  const { a } = link
  a.onclose = () => console.error('sender channel closed')
  const payload = new Uint8Array(msg)
  const view = new DataView(payload.buffer)
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  for (let i = 0; i < n; i++) {
    if (a.bufferedAmount > HIGH) {
      while (a.bufferedAmount > LOW) await sleep(0)
    }
    view.setBigUint64(0, BigInt(i))
    a.send(payload)
  }
  const { bytes, cpu: childCpu } = await peer.done
  const secs = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  const cpuSecs = Math.max((cpu.user + cpu.system) / 1e6 + childCpu, 0.01)
  await close(link)
  return [bytes / secs / 1e6, bytes / cpuSecs / 1e6]
}

const median = (v) => {
  const s = [...v].sort((x, y) => x - y)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const fmt = (v) => v.map((x) => x.toFixed(1)).join(',')

if (process.argv.includes('--child')) {
  runChild()
} else {
  const two = process.argv.includes('--two-processes')
  let child = null
  let peer
  if (two) {
    const { fork } = await import('node:child_process')
    child = fork(new URL(import.meta.url).pathname, ['--child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    peer = childAnswerer(child)
  } else {
    peer = localAnswerer()
  }
  const connects = []
  const mbs16 = []
  const mbs64 = []
  const cpu16 = []
  const cpu64 = []
  log(`wrtc ${require('@roamhq/wrtc/package.json').version}: ${MIB} MiB per case, ${ROUNDS} round(s), ` +
    `${two ? 'one process per peer' : 'both peers in one process'}, bufferedAmount high/low ${HIGH}/${LOW}`)
  for (let r = 0; r < ROUNDS; r++) {
    for (let i = 0; i < CONNECTS; i++) {
      const link = await connect(peer)
      connects.push(link.ms)
      await close(link)
    }
    const [m16, c16] = await throughput(peer, 16 * 1024, MIB * 1024 * 1024)
    const [m64, c64] = await throughput(peer, 64 * 1024, MIB * 1024 * 1024)
    mbs16.push(m16)
    mbs64.push(m64)
    cpu16.push(c16)
    cpu64.push(c64)
    log(`round ${r + 1}: connect ${fmt(connects.slice(-CONNECTS))} ms, 16 KiB ${m16.toFixed(1)} MB/s, ` +
      `64 KiB ${m64.toFixed(1)} MB/s`)
  }
  console.log(`${two ? 'node2' : 'node'} connect_ms=${median(connects).toFixed(1)} mbs_16k=${median(mbs16).toFixed(1)} ` +
    `mbs_64k=${median(mbs64).toFixed(1)} cpu_16k=${median(cpu16).toFixed(1)} cpu_64k=${median(cpu64).toFixed(1)} ` +
    `connect_all=${fmt(connects)} mbs_16k_all=${fmt(mbs16)} mbs_64k_all=${fmt(mbs64)} ` +
    `cpu_16k_all=${fmt(cpu16)} cpu_64k_all=${fmt(cpu64)}`)
  child?.send({ cmd: 'exit' })
  process.exit(0)
}
