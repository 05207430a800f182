// One P2PT instance as a child process of an interop orchestrator (p2pt-pair.mjs,
// rust-p2pt.mjs): reports tracker and peer events, answers every incoming message with
// `reply(msg, role)`, and runs the orchestrator's start/send/teardown commands. Import
// common.mjs before this module (it installs the WebRTC patches before P2PT loads).
import { rtcConfig, childMain, childFail, report, check, withTimeout } from './common.mjs'
import P2PT from 'p2pt'

export async function runP2ptChild (role, identifier, reply) {
  const url = process.env.INTEROP_TRACKER_URL
  const p2pt = new P2PT([url], identifier)
  // No constructor option for this: no ICE servers, libdatachannel bound to 127.0.0.1.
  p2pt._rtcConfig = rtcConfig
  let teardown = false
  const peers = new Map() // peer id (hex) -> simple-peer

  // 'trackerconnect' = an announce response (P2PT's name for the client's 'update').
  p2pt.on('trackerconnect', (tracker, stats) => report('trackerconnect', { connected: stats.connected }))
  // Tracker failure reasons, frames without `action`, socket errors, failed offers all arrive
  // here (P2PT re-emits the tracker client's 'warning' as 'trackerwarning').
  p2pt.on('trackerwarning', err => childFail(`${role} P2PT emitted 'trackerwarning'`, err))
  p2pt.on('error', err => childFail(`${role} P2PT emitted 'error'`, err))

  p2pt.on('peerconnect', peer => {
    peers.set(peer.id, peer)
    report('peerconnect', { peerId: peer.id, count: peers.size })
  })
  p2pt.on('peerclose', peer => {
    if (!teardown) childFail(`${role} peer connection`, `peer ${peer.id} closed before teardown`)
  })

  // An incoming message (not a response to ours): report it and respond. The response is sent
  // with the message's id, so P2PT on the other side resolves that send() promise with it.
  p2pt.on('msg', (peer, msg) => {
    report('msg', { from: peer.id, msg })
    // respond() returns a promise for a response-to-the-response, which never comes: not awaited.
    peer.respond(reply(msg, role))
  })

  childMain(role, {
    async onCommand ({ cmd, to, msg }) {
      switch (cmd) {
        case 'start': p2pt.start(); break
        case 'send': {
          const peer = peers.get(to)
          check(peer, `${role} send`, `no connected peer ${to}`)
          const [, response] = await withTimeout(p2pt.send(peer, msg), `${role} send(): response from ${to}`)
          report('response', { from: to, response })
          break
        }
        case 'teardown':
          teardown = true
          report('teardown-ok', { peers: peers.size })
          break
        default: throw new Error(`unknown command ${cmd}`)
      }
    },
    async onExit () {
      teardown = true
      p2pt.destroy()
    }
  })

  await p2pt.infoHash // setIdentifier() hashes asynchronously
  report('ready', { peerId: p2pt._peerId, infoHash: await p2pt.infoHash })
}
