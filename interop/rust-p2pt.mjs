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

import {
  runOrchestrator, childRole, childFail
} from './lib/common.mjs' // first: installs the WebRTC patches
import { runP2ptChild } from './lib/p2pt-child.mjs'
import { exchange } from './lib/rust-peer.mjs'

const IDENTIFIER = 'ghostmesh-interop rust+p2pt \u2713'
const ORDER = process.env.INTEROP_ORDER || 'p2pt-first'

// The Rust peer (RustPeer) and the steps after both peers are up: lib/rust-peer.mjs. The P2PT
// peer is a child process (lib/p2pt-child.mjs, as in p2pt-pair.mjs) echoing every message.
async function orchestrate (ctx) {
  const summary = await exchange(ctx, {
    identifier: IDENTIFIER,
    name: 'P2PT',
    order: ORDER,
    start: { step: 'P2PT peer process ready', launch: () => ctx.spawnPeer('P2PT'), wait: 'process start', who: 'P2PT peer' }
  })
  return [summary]
}

const role = childRole()
// The P2PT child echoes every message back as its response.
if (role) runP2ptChild(role, IDENTIFIER, msg => msg).catch(err => childFail(`${role} setup`, err))
else runOrchestrator('rust-p2pt', new URL(import.meta.url).pathname, orchestrate)
