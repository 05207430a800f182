//! Cross-check against JavaScript: Node runs P2PT's own send loop and receive handler (copied
//! from `src/p2pt.js` of subins2000/p2pt 1.6.2; GhostMesh's are the same apart from
//! `c ?? 0`) and the frames must match ours byte for byte, and P2PT must read ours back as the
//! same message.
//!
//! Needs `node` on PATH. Without it the test prints a loud `SKIPPED: ...` line, or fails when
//! the `CI` environment variable is set (the workspace's convention for tool-dependent tests).

use std::io::Write;
use std::process::{Command, Stdio};

use ghostmesh::wire::{MAX_CHUNK_UNITS, MsgId, Payload, encode_chunks, js_json};
use serde_json::{Value, json};

/// P2PT's framing, verbatim apart from collecting frames instead of calling `peer.send`.
const P2PT_JS: &str = r#"
const MAX_MESSAGE_LENGTH = 16000
function p2ptSend (msgID, msg) {
  const out = []
  const data = { id: msgID !== '' ? msgID : Math.floor(Math.random() * 100000 + 100000), msg }
  if (typeof msg === 'object') {
    data.msg = JSON.stringify(msg)
    data.o = 1 // indicating object
  }
  let chunks = 0
  let remaining = ''
  while (data.msg.length > 0) {
    data.c = chunks
    remaining = data.msg.slice(MAX_MESSAGE_LENGTH)
    data.msg = data.msg.slice(0, MAX_MESSAGE_LENGTH)
    if (!remaining) { data.last = true }
    out.push('^' + JSON.stringify(data))
    data.msg = remaining
    chunks++
  }
  return out
}
function p2ptReceive (frames) {
  const msgChunks = {}
  const received = []
  for (let data of frames) {
    if (data[0] !== '^') continue
    data = JSON.parse(data.slice(1))
    if (!msgChunks[data.id]) msgChunks[data.id] = []
    msgChunks[data.id][data.c] = data.msg
    if (data.last) {
      let msg = msgChunks[data.id].join('')
      if (data.o) msg = JSON.parse(msg)
      received.push({ id: JSON.stringify(data.id), type: typeof msg, json: JSON.stringify(msg) })
      delete msgChunks[data.id]
    }
  }
  return received
}
let input = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', d => { input += d })
process.stdin.on('end', () => {
  const cases = JSON.parse(input)
  const out = cases.map(c => ({
    frames: p2ptSend(c.id, 'text' in c ? c.text : c.json),
    received: p2ptReceive(c.ours)
  }))
  process.stdout.write(JSON.stringify(out))
})
"#;

/// A deterministic generator, so the test needs no RNG crate and is reproducible.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn text(&mut self, len: usize) -> String {
        const ALPHABET: &[char] = &[
            'a',
            'b',
            ' ',
            '"',
            '\\',
            '/',
            '\n',
            '\t',
            '\u{0}',
            '\u{1f}',
            '\u{7f}',
            'é',
            '€',
            '\u{2028}',
            '\u{2029}',
            '\u{ffff}',
            '😀',
            '𝄞',
            '\u{10ffff}',
        ];
        (0..len)
            .map(|_| {
                let i = self.below(ALPHABET.len() as u64);
                ALPHABET[usize::try_from(i).unwrap_or(0)]
            })
            .collect()
    }
}

fn cases() -> Vec<(MsgId, Payload)> {
    let mut cases: Vec<(MsgId, Payload)> = vec![
        (MsgId::Int(123_456), Payload::from("hello")),
        (MsgId::Int(123_456), Payload::Json(json!({"a": 1}))),
        (MsgId::Int(100_000), Payload::Json(json!(null))),
        (MsgId::from("str-id"), Payload::from("x")),
        (MsgId::from("é\"\\\u{1}😀"), Payload::Json(json!([]))),
        (MsgId::Int(1), Payload::from("")),
        (MsgId::Int(2), Payload::Json(json!(5))),
        (MsgId::Int(3), Payload::Json(json!(true))),
        (MsgId::Int(4), Payload::Json(json!("a string"))),
        (MsgId::Int(5), Payload::Text("a".repeat(15_999))),
        (MsgId::Int(6), Payload::Text("a".repeat(16_000))),
        (MsgId::Int(7), Payload::Text("a".repeat(16_001))),
        (
            MsgId::Int(8),
            Payload::Text(format!("{}😀b", "a".repeat(15_999))),
        ),
        (MsgId::Int(9), Payload::Text("\"".repeat(16_001))),
        (
            MsgId::Int(10),
            Payload::Json(json!({"k": format!("{}😀", "x".repeat(15_993))})),
        ),
        (
            MsgId::Int(11),
            Payload::Json(json!([
                1.0,
                1.5,
                1e21,
                1e-7,
                0.000_001,
                -0.0,
                0.1 + 0.2,
                5e-324,
                1.797_693_134_862_315_7e308,
                123_456_789_012_345_680_000.0,
                -42,
                u32::MAX
            ])),
        ),
        (
            MsgId::Int(12),
            Payload::Json(json!({"a": {"b": [null, false, "\u{2028}\n"]}, "c": "😀"})),
        ),
    ];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for i in 0..40 {
        let len = match i % 4 {
            0 => rng.below(50),
            1 => 15_990 + rng.below(20),
            2 => 31_990 + rng.below(20),
            _ => rng.below(40_000),
        };
        let text = rng.text(usize::try_from(len).unwrap_or(0));
        let id = MsgId::Int(MsgId::P2PT_MIN + i);
        if i % 3 == 0 {
            cases.push((id, Payload::Json(json!({"t": text, "n": i}))));
        } else {
            cases.push((id, Payload::Text(text)));
        }
    }
    cases
}

/// Whether JavaScript's `send()` would send this payload at all (it sends nothing for "",
/// numbers and booleans, and a JS string is never sent with `o:1`).
fn js_sends(payload: &Payload) -> bool {
    match payload {
        Payload::Text(text) => !text.is_empty(),
        Payload::Json(value) => matches!(value, Value::Null | Value::Array(_) | Value::Object(_)),
    }
}

fn node_available() -> bool {
    Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn p2pt_in_node_agrees_byte_for_byte() {
    if !node_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "node not found (CI is set, so this fails instead of skipping): install Node 18+"
        );
        let _ = writeln!(
            std::io::stderr(),
            "\nSKIPPED: p2pt_in_node_agrees_byte_for_byte: `node` not found; install Node 18+ \
             (set CI=1 to turn this skip into a failure)\n"
        );
        return;
    }

    let cases = cases();
    let ours: Vec<Vec<String>> = cases
        .iter()
        .map(|(id, payload)| encode_chunks(id, payload, MAX_CHUNK_UNITS))
        .collect();
    let input: Vec<Value> = cases
        .iter()
        .zip(&ours)
        .map(|((id, payload), frames)| {
            let id: Value = serde_json::from_str(&id.to_json()).expect("id JSON");
            let mut case = json!({"id": id, "ours": frames});
            match payload {
                Payload::Text(text) => case["text"] = json!(text),
                Payload::Json(value) => case["json"] = value.clone(),
            }
            case
        })
        .collect();

    let mut child = Command::new("node")
        .args(["-e", P2PT_JS])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let stdin_text = serde_json::to_string(&input).expect("serialize input");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(stdin_text.as_bytes()));
    let output = child.wait_with_output().expect("node output");
    writer
        .join()
        .expect("writer thread")
        .expect("write to node");
    assert!(
        output.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).expect("node JSON");
    assert_eq!(results.len(), cases.len());

    for (((id, payload), frames), result) in cases.iter().zip(&ours).zip(&results) {
        let label = format!("case id {id}");
        // Sending: identical frames wherever JavaScript sends anything.
        if js_sends(payload) {
            let js_frames: Vec<String> =
                serde_json::from_value(result["frames"].clone()).expect("frames");
            assert_eq!(js_frames.len(), frames.len(), "{label}: frame count");
            for (i, (js, rs)) in js_frames.iter().zip(frames).enumerate() {
                assert!(
                    js == rs,
                    "{label}: frame {i} differs\n js: {js:.200}\n rs: {rs:.200}"
                );
            }
        } else if !matches!(payload, Payload::Json(Value::String(_))) {
            // "", numbers, booleans: P2PT's loop never runs. (A JS string would go as text.)
            assert_eq!(result["frames"], json!([]), "{label}: JS sends nothing");
        }
        // Receiving: P2PT reads our frames back as the same message.
        let received = result["received"].as_array().expect("received");
        assert_eq!(received.len(), 1, "{label}: one message");
        let got = &received[0];
        assert_eq!(got["id"], json!(id.to_json()), "{label}: id");
        let (js_type, js_json_text) = match payload {
            Payload::Text(text) => {
                let mut quoted = String::new();
                js_json::push_js_str(&mut quoted, text);
                ("string", quoted)
            }
            Payload::Json(value) => {
                let js_type = match value {
                    Value::Null | Value::Array(_) | Value::Object(_) => "object",
                    Value::Bool(_) => "boolean",
                    Value::Number(_) => "number",
                    Value::String(_) => "string",
                };
                (js_type, js_json::stringify(value))
            }
        };
        assert_eq!(got["type"], json!(js_type), "{label}: type");
        // Node's JSON.stringify of what it received equals ours of what we sent.
        assert!(
            got["json"] == json!(js_json_text),
            "{label}: content\n js: {:.300}\n rs: {js_json_text:.300}",
            got["json"]
        );
    }
}
