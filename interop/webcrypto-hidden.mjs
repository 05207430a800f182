// GhostMesh's hidden-service hybrid encryption on Web Crypto (Node's globalThis.crypto.subtle),
// written from the wire reference (../../shared/reference/ghostmesh-wire.md, section 4.7):
//
//   encryptHiddenPayload(payload, publicKey)
//     AES-GCM, a fresh 256-bit key per message, a 12-byte random IV, no AAD, default 128-bit
//     tag (appended by Web Crypto); plaintext UTF-8(JSON.stringify(payload)); the raw AES key
//     wrapped with RSA-OAEP (key imported with hash SHA-256: OAEP digest and MGF1 SHA-256, no
//     label); {encryptedKey, iv, ciphertext} in standard base64
//   decryptHiddenPayload(envelope, privateKey) -> JSON.parse(UTF-8 plaintext)
//   keys: SPKI (public) / PKCS#8 (private) PEM, imported with the PEM header/footer lines and
//   all whitespace stripped; exported as -----BEGIN PUBLIC KEY-----\n + base64 in 64-character
//   lines + \n-----END PUBLIC KEY----- (no trailing newline); generated as RSA-OAEP 2048,
//   e = 65537, SHA-256
//   padding (fixedPacketBytes): padding = '0' x (fixed - JSON.stringify(packet).length) when > 0
//
// No npm packages: Node >= 18. Driven by mesh/tests/interop_webcrypto.rs, one job per process:
// a JSON job on stdin, a JSON result on stdout (exit 0), or {"ok":false,"error"} (exit 1).
//
//   {"op":"generate"}
//     -> {"ok":true,"publicKeyPem","privateKeyPem"}          (a fresh Web Crypto pair)
//   {"op":"decrypt","privateKeyPem","envelopes":[{encryptedKey,iv,ciphertext}, ...]}
//     -> {"ok":true,"results":[{"ok":true,"plaintext","plaintextBase64","payload","restringified"}
//                               | {"ok":true,...,"parseError"} | {"ok":false,"error"}, ...]}
//   {"op":"encrypt","publicKeyPem","payloads":[any JSON, ...]}
//     -> {"ok":true,"envelopes":[...],"plaintexts":[JSON.stringify(payload), ...]}
//   {"op":"reexport","publicKeyPems":[...]}
//     -> {"ok":true,"pems":[...]}                              (import spki, export as GhostMesh)
//   {"op":"master","privateKeyPem","request":"<packet JSON text>","fixedPacketBytes","reply"}
//     -> what a GhostMesh master does with a hidden-service-request: decrypt its body, encrypt
//        `reply` for its clientPublicKey, build the padded hidden-service-response; returns
//        {"ok":true,"requestTextLength","requestLength","restringifiedEqual","payload",
//         "plaintext","response":"<packet JSON text>","responseLength"}
//
// By hand: echo '{"op":"generate"}' | node interop/webcrypto-hidden.mjs
//          node interop/webcrypto-hidden.mjs --self-test

// Node 18 may have no global `crypto` (it is unflagged from Node 19); node:crypto has the same object.
const webcrypto = globalThis.crypto?.subtle ? globalThis.crypto : (await import('node:crypto')).webcrypto
const subtle = webcrypto.subtle
const getRandomValues = (array) => webcrypto.getRandomValues(array)

const RSA_OAEP = { name: 'RSA-OAEP', hash: 'SHA-256' }

const b64 = (bytes) => Buffer.from(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)).toString('base64')
const unb64 = (text) => new Uint8Array(Buffer.from(text, 'base64'))

function pemBody (pem) {
  return pem
    .replace(/-----BEGIN [^-]+-----/g, '')
    .replace(/-----END [^-]+-----/g, '')
    .replace(/\s+/g, '')
}

function toPem (der, label) {
  const lines = b64(der).match(/.{1,64}/g) ?? []
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----`
}

async function importPublic (pem) {
  return subtle.importKey('spki', unb64(pemBody(pem)), RSA_OAEP, true, ['encrypt'])
}

async function importPrivate (pem) {
  return subtle.importKey('pkcs8', unb64(pemBody(pem)), RSA_OAEP, true, ['decrypt'])
}

async function exportPublicPem (key) {
  return toPem(await subtle.exportKey('spki', key), 'PUBLIC KEY')
}

async function generateKeyPair () {
  return subtle.generateKey(
    { ...RSA_OAEP, modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]) },
    true,
    ['encrypt', 'decrypt']
  )
}

async function encryptHiddenPayload (payload, publicKey) {
  const rsa = typeof publicKey === 'string' ? await importPublic(publicKey) : publicKey
  const aes = await subtle.generateKey({ name: 'AES-GCM', length: 256 }, true, ['encrypt', 'decrypt'])
  const iv = getRandomValues(new Uint8Array(12))
  const plaintext = new TextEncoder().encode(JSON.stringify(payload))
  const ciphertext = await subtle.encrypt({ name: 'AES-GCM', iv }, aes, plaintext)
  const encryptedKey = await subtle.encrypt({ name: 'RSA-OAEP' }, rsa, await subtle.exportKey('raw', aes))
  return { encryptedKey: b64(encryptedKey), iv: b64(iv), ciphertext: b64(ciphertext) }
}

// The decrypted bytes; decryptHiddenPayload is JSON.parse of their (non-fatal) UTF-8 decoding.
async function decryptHiddenBytes (envelope, privateKey) {
  const rsa = typeof privateKey === 'string' ? await importPrivate(privateKey) : privateKey
  const raw = await subtle.decrypt({ name: 'RSA-OAEP' }, rsa, unb64(envelope.encryptedKey))
  const aes = await subtle.importKey('raw', raw, { name: 'AES-GCM' }, false, ['decrypt'])
  return new Uint8Array(await subtle.decrypt({ name: 'AES-GCM', iv: unb64(envelope.iv) }, aes, unb64(envelope.ciphertext)))
}

async function decryptHiddenPayload (envelope, privateKey) {
  return JSON.parse(new TextDecoder().decode(await decryptHiddenBytes(envelope, privateKey)))
}

function padHiddenServicePacket (packet, fixedPacketBytes) {
  if (!fixedPacketBytes || fixedPacketBytes <= 0) return packet
  const padded = { ...packet }
  const paddingLength = Math.max(0, fixedPacketBytes - JSON.stringify(padded).length)
  if (paddingLength > 0) padded.padding = '0'.repeat(paddingLength)
  return padded
}

const errorText = (err) => `${err?.name ?? 'Error'}: ${err?.message ?? err}`

const ops = {
  async generate () {
    const pair = await generateKeyPair()
    return {
      publicKeyPem: await exportPublicPem(pair.publicKey),
      privateKeyPem: toPem(await subtle.exportKey('pkcs8', pair.privateKey), 'PRIVATE KEY')
    }
  },

  async decrypt ({ privateKeyPem, envelopes }) {
    const key = await importPrivate(privateKeyPem)
    const results = []
    for (const envelope of envelopes) {
      let bytes
      try {
        bytes = await decryptHiddenBytes(envelope, key)
      } catch (err) {
        results.push({ ok: false, error: errorText(err) })
        continue
      }
      const plaintext = new TextDecoder().decode(bytes)
      const result = { ok: true, plaintext, plaintextBase64: b64(bytes) }
      try {
        result.payload = JSON.parse(plaintext)
        result.restringified = JSON.stringify(result.payload)
      } catch (err) {
        result.parseError = errorText(err)
      }
      results.push(result)
    }
    return { results }
  },

  async encrypt ({ publicKeyPem, payloads }) {
    const key = await importPublic(publicKeyPem)
    const envelopes = []
    for (const payload of payloads) envelopes.push(await encryptHiddenPayload(payload, key))
    return { envelopes, plaintexts: payloads.map((p) => JSON.stringify(p)) }
  },

  async reexport ({ publicKeyPems }) {
    const pems = []
    for (const pem of publicKeyPems) pems.push(await exportPublicPem(await importPublic(pem)))
    return { pems }
  },

  async master ({ privateKeyPem, request, fixedPacketBytes, reply }) {
    const packet = JSON.parse(request)
    if (packet.__ghostmeshInternal !== 'hidden-service-request') {
      throw new Error(`not a hidden-service-request: ${packet.__ghostmeshInternal}`)
    }
    const bytes = await decryptHiddenBytes(packet.body, privateKeyPem)
    const plaintext = new TextDecoder().decode(bytes)
    const payload = JSON.parse(plaintext)
    const response = padHiddenServicePacket({
      __ghostmeshInternal: 'hidden-service-response',
      service: packet.service,
      requestId: packet.requestId,
      nonce: packet.nonce,
      body: await encryptHiddenPayload(reply, packet.clientPublicKey),
      realHops: 0,
      simulatedHops: 0,
      delayedMs: 0
    }, fixedPacketBytes)
    const responseText = JSON.stringify(response)
    return {
      requestTextLength: request.length,
      requestLength: JSON.stringify(packet).length,
      restringifiedEqual: JSON.stringify(packet) === request,
      payload,
      plaintext,
      response: responseText,
      responseLength: responseText.length
    }
  }
}

async function selfTest () {
  const { publicKeyPem, privateKeyPem } = await ops.generate()
  const payload = { hello: 'w\u00f6rld \u{1F600}', n: [1, 2.5, null] }
  const envelope = await encryptHiddenPayload(payload, publicKeyPem)
  const back = await decryptHiddenPayload(envelope, privateKeyPem)
  if (JSON.stringify(back) !== JSON.stringify(payload)) throw new Error('round trip differs')
  if (unb64(envelope.encryptedKey).length !== 256 || envelope.iv.length !== 16) throw new Error('field sizes')
  if (await exportPublicPem(await importPublic(publicKeyPem)) !== publicKeyPem) throw new Error('PEM re-export differs')
  return { selfTest: 'passed', envelope }
}

async function main () {
  if (process.argv.includes('--self-test')) return selfTest()
  let input = ''
  process.stdin.setEncoding('utf8')
  for await (const chunk of process.stdin) input += chunk
  const job = JSON.parse(input)
  const op = ops[job.op]
  if (!op) throw new Error(`unknown op ${JSON.stringify(job.op)}`)
  return op(job)
}

try {
  const result = await main()
  process.stdout.write(JSON.stringify({ ok: true, ...result }))
} catch (err) {
  process.stdout.write(JSON.stringify({ ok: false, error: errorText(err) }))
  process.stderr.write(`webcrypto-hidden.mjs: ${err?.stack ?? err}\n`)
  process.exitCode = 1
}
