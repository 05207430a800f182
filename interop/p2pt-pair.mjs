// Two P2PT peers (p2pt 1.6.2, a small WebTorrent-tracker-based P2P messaging library), each in
// its own node process, with one identifier, meet through the tracker under test:
//
//   A starts (announce without event/left, 5 offers)     -> tracker answers
//   B starts                                              -> tracker answers, relays B's offer to
//                                                            A and A's answer back to B
//   both get 'peerconnect' for each other (byte-exact peer ids)
//   A sends a JSON message, B receives it and responds, A gets the response
//   B sends a JSON message, A receives it and responds, B gets the response
//
// Any tracker warning or error reported by P2PT fails the test.
//
// Run: interop/run.sh interop/p2pt-pair.mjs   (TRACKER_CMD selects the tracker; see README.md).
// Exit code 0 = pass; otherwise the failing step is printed.

import { createHash } from 'node:crypto'
import {
  runOrchestrator, childRole, childFail, checkEqual
} from './lib/common.mjs' // first: installs the WebRTC end-of-candidates patch
import { runP2ptChild } from './lib/p2pt-child.mjs'

// P2PT's info_hash is SHA-1 of the identifier (UTF-8); its peer ids are 20 random bytes.
const IDENTIFIER = 'ghostmesh-interop p2pt pair \u2713'
const INFO_HASH = createHash('sha1').update(IDENTIFIER, 'utf8').digest('hex')

// ---------------------------------------------------------------------------------------------
// Child: one P2PT instance, driven by commands from the orchestrator.

// ---------------------------------------------------------------------------------------------
// Orchestrator.

async function orchestrate (ctx) {
  const a = ctx.spawnPeer('A')
  const idA = await ctx.step('peer A process ready', async () => {
    const r = await a.next('ready', 'process start')
    checkEqual(r.infoHash, INFO_HASH, 'peer A', 'info_hash = SHA-1(identifier)')
    return r.peerId
  })
  await ctx.step('peer A announces (no event, no left, 5 offers) and gets a response', async () => {
    a.send('start')
    await a.next('trackerconnect', 'announce response')
  })

  // B starts only after A's announce was answered: the reference tracker loses one of two
  // announces for a new info_hash that arrive in the same tick (js-interop.md 3.2).
  const b = ctx.spawnPeer('B')
  const idB = await ctx.step('peer B process ready', async () => (await b.next('ready', 'process start')).peerId)
  await ctx.step('peer B announces and gets a response', async () => {
    b.send('start')
    await b.next('trackerconnect', 'announce response')
  })

  await ctx.step('offer/answer relayed, data channel open: peerconnect on both sides', async () => {
    const [pa, pb] = await Promise.all([
      a.next('peerconnect', 'peerconnect (B\'s offer relayed to A, A\'s answer relayed to B)'),
      b.next('peerconnect', 'peerconnect (A\'s answer relayed to B)')
    ])
    checkEqual(pa.peerId, idB, 'A peerconnect', 'remote peer id (hex)')
    checkEqual(pb.peerId, idA, 'B peerconnect', 'remote peer id (hex)')
  })

  await ctx.step('A -> B JSON message, B responds, A gets the response', async () => {
    const msg = { n: 1, from: 'A', text: 'ping from A \u00fc' }
    a.send('send', { to: idB, msg })
    const got = await b.next('msg', 'message from A')
    checkEqual(got.from, idA, 'B receives', 'sender id')
    checkEqual(got.msg, msg, 'B receives', 'message')
    const r = await a.next('response', 'response from B')
    checkEqual(r.response, { re: 1, from: 'B', text: `B got ${JSON.stringify(msg.text)}` }, 'A gets response', 'response')
  })
  await ctx.step('B -> A JSON message, A responds, B gets the response', async () => {
    const msg = { n: 2, from: 'B', text: 'ping from B \u2192' }
    b.send('send', { to: idA, msg })
    const got = await a.next('msg', 'message from B')
    checkEqual(got.from, idB, 'A receives', 'sender id')
    checkEqual(got.msg, msg, 'A receives', 'message')
    const r = await b.next('response', 'response from A')
    checkEqual(r.response, { re: 2, from: 'A', text: `A got ${JSON.stringify(msg.text)}` }, 'B gets response', 'response')
  })

  await ctx.step('teardown: each peer saw exactly one remote peer', async () => {
    a.send('teardown')
    b.send('teardown')
    const [ta, tb] = await Promise.all([a.next('teardown-ok', 'teardown'), b.next('teardown-ok', 'teardown')])
    checkEqual([ta.peers, tb.peers], [1, 1], 'teardown', 'remote peers (A, B)')
  })
  return [`info_hash ${INFO_HASH}, peer A ${idA}, peer B ${idB}`]
}

const role = childRole()
if (role) {
  const reply = (msg, role) => ({ re: msg.n, from: role, text: `${role} got ${JSON.stringify(msg.text)}` })
  runP2ptChild(role, IDENTIFIER, reply).catch(err => childFail(`${role} setup`, err))
}
else runOrchestrator('p2pt-pair', new URL(import.meta.url).pathname, orchestrate)
