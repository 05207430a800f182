// Opens N idle WebSocket connections to URL, holds them 3 s, then closes them (bench/idle-memory.sh).
import WebSocket from 'ws'
const [url, n] = [process.argv[2], Number(process.argv[3])]
const socks = []
let open = 0
await new Promise((resolve, reject) => {
  for (let i = 0; i < n; i++) {
    const s = new WebSocket(url); socks.push(s)
    s.on('open', () => { if (++open === n) resolve() }); s.on('error', reject)
  }
  setTimeout(() => reject(new Error('timeout, open=' + open)), 20000)
})
console.log('open', open)
await new Promise(r => setTimeout(r, 3000))
for (const s of socks) s.terminate()
