// Two bittorrent-tracker `Client`s (the WebTorrent tracker client used by WebTorrent itself),
// each in its own node process, meet through the tracker under test and then walk through the
// whole announce life cycle:
//
//   seeder  announce started (left 0, 5 offers)   -> response: 1 seeder, 0 leechers
//   leecher announce started (left 1000, 5 offers) -> response: 1 seeder, 1 leecher
//   tracker relays one leecher offer to the seeder, the seeder's answer back to the leecher
//   data channel opens; one message each way
//   leecher scrape                                 -> 1 seeder, 1 leecher
//   leecher announce completed                     -> 2 seeders, 0 leechers (and scrape agrees)
//   leecher announce stopped, then scrape          -> 1 seeder, 0 leechers
//   seeder scrape (other connection)               -> 1 seeder, 0 leechers
//   seeder announce stopped, then scrape           -> 0 seeders, 0 leechers
//
// Any 'warning' or 'error' from either client fails the test (the client reports tracker
// failures, bad frames and WebRTC errors that way).
//
// Run: interop/run.sh interop/bittorrent-tracker-clients.mjs   (TRACKER_CMD selects the tracker;
// see README.md). Exit code 0 = pass; otherwise the failing step is printed.

import {
  rtcConfig, runOrchestrator, childRole, childMain, childFail, report, check, checkEqual, withTimeout
} from './lib/common.mjs' // first: installs the WebRTC end-of-candidates patch
import Client from 'bittorrent-tracker'

// SHA-1("webtorrent-interop-fixture"): contains \n, other control bytes and many bytes >= 0x80,
// so it exercises the one-char-per-byte ("binary string") JSON encoding of ids.
const INFO_HASH = '6798c2890ae4850e42e37a0faabc217c7b9a157e'

// The same ids as the captured fixtures in ../shared/reference/frames/wt-frames.md:
// an ASCII one, and one with NUL, \n, DEL, '"', '\' and bytes >= 0x80.
const ROLES = {
  seeder: { peerId: '2d5757303230382d666972737470656572303031', left: 0 }, // "-WW0208-firstpeer001"
  leecher: { peerId: '2d5757303230382dc0ffee00ff0a7f22805c01e9', left: 1000 }
}

// Data-channel payloads: non-ASCII text checks the channel carries UTF-8 strings unchanged.
const MSG_TO_LEECHER = 'hello leecher, from the seeder \u00fc \u2192 \u2713'
const MSG_TO_SEEDER = 'hello seeder, from the leecher \u00e9 \u2190 \u2713'

// ---------------------------------------------------------------------------------------------
// Child: one Client, driven by commands from the orchestrator.

function runChild (role) {
  const me = ROLES[role]
  if (!me) throw new Error(`unknown role ${role}`)
  const url = process.env.INTEROP_TRACKER_URL
  let left = me.left
  let teardown = false // after this, peer close/error events are expected
  const peers = []

  const client = new Client({
    infoHash: INFO_HASH,
    peerId: me.peerId,
    announce: [url],
    port: 6881, // required by the constructor in Node; unused for ws trackers
    rtcConfig, // without it simple-peer would use public STUN servers
    getAnnounceOpts: () => ({ left }) // read at every announce, like WebTorrent does
  })

  // The client reports every tracker-side problem as 'warning' (failure reason, invalid frame,
  // frame without `action`, empty scrape, socket error, offer that failed) - all fatal here.
  client.on('warning', err => childFail(`${role} client emitted 'warning'`, err))
  client.on('error', err => childFail(`${role} client emitted 'error'`, err))

  // 'update' = an announce response carrying complete/incomplete.
  client.on('update', data => report('update', {
    complete: data.complete, incomplete: data.incomplete, infoHash: data.infoHash
  }))
  client.on('scrape', data => report('scrape', {
    complete: data.complete, incomplete: data.incomplete, downloaded: data.downloaded, infoHash: data.infoHash
  }))

  // 'peer' = a relayed offer (we answer) or a relayed answer matching one of our offer_ids.
  // peer.id is the hex of the `peer_id` the tracker put in the relayed frame.
  client.on('peer', peer => {
    peers.push(peer)
    report('peer', { peerId: peer.id, count: peers.length, initiator: peer.initiator })
    peer.on('connect', () => report('connect', { peerId: peer.id }))
    peer.on('data', data => report('data', {
      peerId: peer.id, text: typeof data === 'string' ? data : Buffer.from(data).toString('utf8')
    }))
    peer.on('error', err => { if (!teardown) childFail(`${role} peer connection error`, err) })
    peer.on('close', () => { if (!teardown) childFail(`${role} peer connection`, 'closed before teardown') })
  })

  childMain(role, {
    async onCommand ({ cmd, text }) {
      switch (cmd) {
        case 'start': client.start(); break // event=started + 5 offers
        case 'scrape': client.scrape(); break
        case 'complete': left = 0; client.complete(); break // as WebTorrent: left is 0 once done
        case 'stop': client.stop(); break
        case 'send': {
          const peer = peers.find(p => p.connected)
          check(peer, `${role} send`, 'no connected peer')
          peer.send(text)
          break
        }
        case 'teardown':
          teardown = true
          report('teardown-ok', { peers: peers.length, connected: peers.filter(p => p.connected).length })
          break
        default: throw new Error(`unknown command ${cmd}`)
      }
    },
    async onExit () {
      teardown = true
      for (const p of peers) p.destroy()
      await withTimeout(new Promise(resolve => client.destroy(resolve)), `${role} client.destroy()`, 5_000)
    }
  })
  report('ready', {})
}

// ---------------------------------------------------------------------------------------------
// Orchestrator.

async function orchestrate (ctx) {
  const counts = (ev) => ({ complete: ev.complete, incomplete: ev.incomplete })
  const notes = []

  const seeder = ctx.spawnPeer('seeder')
  await ctx.step('seeder process ready', () => seeder.next('ready', 'process start'))
  await ctx.step('seeder announces started (left 0, 5 offers): 1 seeder, 0 leechers', async () => {
    seeder.send('start')
    const u = await seeder.next('update', 'announce response')
    checkEqual(u.infoHash, INFO_HASH, 'seeder announce response', 'info_hash (hex)')
    checkEqual(counts(u), { complete: 1, incomplete: 0 }, 'seeder announce response', 'counts')
  })

  // The leecher starts only after the seeder's announce was answered: the reference tracker loses
  // one of two announces for a new info_hash that arrive in the same tick (js-interop.md 3.2).
  const leecher = ctx.spawnPeer('leecher')
  await ctx.step('leecher process ready', () => leecher.next('ready', 'process start'))
  await ctx.step('leecher announces started (left 1000, 5 offers): 1 seeder, 1 leecher', async () => {
    leecher.send('start')
    const u = await leecher.next('update', 'announce response')
    checkEqual(u.infoHash, INFO_HASH, 'leecher announce response', 'info_hash (hex)')
    checkEqual(counts(u), { complete: 1, incomplete: 1 }, 'leecher announce response', 'counts')
  })

  await ctx.step('tracker relays a leecher offer to the seeder (peer_id = leecher, byte-exact)', async () => {
    const p = await seeder.next('peer', 'relayed offer')
    checkEqual(p.peerId, ROLES.leecher.peerId, 'relayed offer', 'peer_id (hex)')
    check(!p.initiator, 'relayed offer', 'seeder should be the answerer')
  })
  await ctx.step('tracker relays the answer to the leecher (offer_id echoed, peer_id = seeder)', async () => {
    // The client only accepts an answer whose offer_id is one of its own: a wrong offer_id
    // shows up as a timeout here.
    const p = await leecher.next('peer', 'relayed answer')
    checkEqual(p.peerId, ROLES.seeder.peerId, 'relayed answer', 'peer_id (hex)')
  })
  await ctx.step('WebRTC data channel opens on both sides', async () => {
    const [s, l] = await Promise.all([
      seeder.next('connect', 'data channel open'),
      leecher.next('connect', 'data channel open')
    ])
    checkEqual(s.peerId, ROLES.leecher.peerId, 'seeder connect', 'remote peer id')
    checkEqual(l.peerId, ROLES.seeder.peerId, 'leecher connect', 'remote peer id')
  })

  await ctx.step('message seeder -> leecher over the data channel', async () => {
    seeder.send('send', { text: MSG_TO_LEECHER })
    const d = await leecher.next('data', 'message from seeder')
    checkEqual(d.text, MSG_TO_LEECHER, 'message seeder -> leecher', 'text')
  })
  await ctx.step('message leecher -> seeder over the data channel', async () => {
    leecher.send('send', { text: MSG_TO_SEEDER })
    const d = await seeder.next('data', 'message from leecher')
    checkEqual(d.text, MSG_TO_SEEDER, 'message leecher -> seeder', 'text')
  })

  await ctx.step('leecher scrapes: 1 seeder, 1 leecher', async () => {
    leecher.send('scrape')
    const s = await leecher.next('scrape', 'scrape response')
    checkEqual(s.infoHash, INFO_HASH, 'leecher scrape', 'files key (hex)')
    checkEqual(counts(s), { complete: 1, incomplete: 1 }, 'leecher scrape', 'counts')
    check(Number.isInteger(s.downloaded) && s.downloaded >= 0, 'leecher scrape', `downloaded not a count: ${s.downloaded}`)
    notes.push(`scrape 'downloaded' with 1 seeder + 1 leecher: ${s.downloaded}`)
  })

  await ctx.step('leecher announces completed: 2 seeders, 0 leechers', async () => {
    leecher.drain('update')
    leecher.send('complete')
    const u = await leecher.next('update', 'completed response')
    checkEqual(counts(u), { complete: 2, incomplete: 0 }, 'completed response', 'counts')
  })
  await ctx.step('leecher scrapes: 2 seeders, 0 leechers', async () => {
    leecher.send('scrape')
    const s = await leecher.next('scrape', 'scrape response')
    checkEqual(counts(s), { complete: 2, incomplete: 0 }, 'leecher scrape after completed', 'counts')
    notes.push(`scrape 'downloaded' after completed: ${s.downloaded}`)
  })

  // A tracker need not answer `stopped` (wt-tracker does not). The scrape that follows on the
  // same connection is answered after the stop was processed, so it checks the effect.
  await ctx.step('leecher announces stopped, then scrapes: 1 seeder, 0 leechers', async () => {
    leecher.drain('update')
    leecher.send('stop')
    leecher.send('scrape')
    const s = await leecher.next('scrape', 'scrape after stopped')
    checkEqual(counts(s), { complete: 1, incomplete: 0 }, 'leecher scrape after stopped', 'counts')
    const replies = leecher.drain('update')
    for (const u of replies) checkEqual(counts(u), { complete: 1, incomplete: 0 }, 'stopped response', 'counts')
    notes.push(`reply to leecher's 'stopped' announce: ${replies.length ? JSON.stringify(counts(replies[0])) : 'none (allowed)'}`)
  })
  await ctx.step('seeder scrapes on its own connection: 1 seeder, 0 leechers', async () => {
    seeder.send('scrape')
    const s = await seeder.next('scrape', 'scrape response')
    checkEqual(counts(s), { complete: 1, incomplete: 0 }, 'seeder scrape', 'counts')
  })
  // The bittorrent-tracker client turns a scrape reply with an empty `files` object into a
  // 'warning', so a tracker must list a requested info_hash (with zeros) even with no peers.
  await ctx.step('seeder announces stopped, then scrapes: 0 seeders, 0 leechers', async () => {
    seeder.drain('update')
    seeder.send('stop')
    seeder.send('scrape')
    const s = await seeder.next('scrape', 'scrape after stopped')
    checkEqual(s.infoHash, INFO_HASH, 'seeder scrape after stopped', 'files key (hex)')
    checkEqual(counts(s), { complete: 0, incomplete: 0 }, 'seeder scrape after stopped', 'counts')
    const replies = seeder.drain('update')
    for (const u of replies) checkEqual(counts(u), { complete: 0, incomplete: 0 }, 'stopped response', 'counts')
  })

  await ctx.step('teardown: exactly one peer connection per client', async () => {
    seeder.send('teardown')
    leecher.send('teardown')
    const [s, l] = await Promise.all([seeder.next('teardown-ok', 'teardown'), leecher.next('teardown-ok', 'teardown')])
    // One offer per target peer: more would mean the tracker relayed several offers to one peer.
    checkEqual([s.peers, l.peers], [1, 1], 'teardown', 'peer connections (seeder, leecher)')
    checkEqual([s.connected, l.connected], [1, 1], 'teardown', 'still-connected peers (seeder, leecher)')
  })
  return notes
}

const role = childRole()
if (role) runChild(role)
else runOrchestrator('bittorrent-tracker-clients', new URL(import.meta.url).pathname, orchestrate)
