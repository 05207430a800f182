//! Cross-implementation vectors for hidden-service encryption: envelopes made by
//! `ghostmesh::hidden::crypto` (aws-lc-rs) open in Web Crypto (Node's `crypto.subtle`,
//! RSA-OAEP SHA-256 + AES-256-GCM, exactly as GhostMesh's `encryptHiddenPayload` /
//! `decryptHiddenPayload` use it, wire reference 4.7) and the reverse; keys made by either side
//! import in the other, and SPKI PEM exports are identical text; a bound key (Rust clients)
//! opens in Web Crypto like any key; tampered envelopes fail on both sides; and a padded
//! `hidden-service-request` built in Rust measures `fixedPacketBytes + 13` UTF-16 units in
//! JavaScript, where a Web Crypto "master" answers it with a padded response that Rust opens.
//!
//! The JavaScript side is `interop/webcrypto-hidden.mjs` (no npm packages; one JSON job on
//! stdin, one JSON result on stdout), run with `node` from `PATH`. No networking, so no network
//! namespace. Needs Node >= 18: when `node` is missing or too old the test prints a loud
//! `SKIPPED: ...`, or fails when the `CI` environment variable is set (the rules of
//! `interop/runner.rs`).

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ghostmesh::hidden::crypto::{self, Binding, CryptoError, Envelope};
use ghostmesh::hidden::packet::{self, Request};
use ghostmesh::hidden::{KeyPair, PublicKey};
use ghostmesh::wire::Payload;
use ghostmesh::wire::js_json;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

#[allow(dead_code)] // only the precondition helpers are used here
#[path = "../../interop/runner.rs"]
mod runner;

/// One node job is killed after this long (RSA key generation is the slowest step, well under
/// a second).
const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// Oldest Node.js with Web Crypto (`crypto.subtle`, RSA-OAEP, AES-GCM).
const MIN_NODE_MAJOR: u32 = 18;

const SCRIPT: &str = "interop/webcrypto-hidden.mjs";

/// `Ok(script path)`, or why node cannot run it; probed once per test binary.
fn precondition() -> &'static Result<PathBuf, String> {
    static CHECKED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let version = runner::probe("node", &["--version"]).map_err(|e| {
            format!("node not usable ({e}): install Node.js >= {MIN_NODE_MAJOR} (e.g. `apt-get install nodejs`)")
        })?;
        let major: u32 = version
            .trim_start_matches('v')
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| format!("cannot read the version of node from `{version}`"))?;
        if major < MIN_NODE_MAJOR {
            return Err(format!(
                "node {version} has no usable Web Crypto: install Node.js >= {MIN_NODE_MAJOR}"
            ));
        }
        let script = runner::workspace_root().join(SCRIPT);
        if !script.is_file() {
            return Err(format!("{} is missing", script.display()));
        }
        Ok(script)
    })
}

/// The script, or `None` after a loud skip (a panic when `CI` is set).
fn webcrypto(test: &str) -> Option<&'static PathBuf> {
    match precondition() {
        Ok(script) => Some(script),
        Err(why) if runner::in_ci() => {
            panic!(
                "{test}: Web Crypto interop prerequisite missing (CI is set, so this fails instead of skipping):\n  - {why}"
            )
        }
        Err(why) => {
            // Straight to fd 2: libtest captures `eprintln!` of passing tests, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n==================== SKIPPED: {test} ====================\n\
                 SKIPPED: {test}: Web Crypto interop prerequisite missing:\n  - {why}\n\
                 SKIPPED: (set CI=1 to turn this skip into a failure)\n\
                 =========================================================\n"
            );
            None
        }
    }
}

/// Runs one job through `node interop/webcrypto-hidden.mjs` and returns its result object
/// (`ok` is checked).
fn run_job(test: &str, script: &PathBuf, job: &Value) -> Value {
    let op = job["op"].as_str().unwrap_or("?").to_owned();
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(script)
        .current_dir(runner::workspace_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{test}: cannot start node {}: {e}", script.display()));
    let stdout = runner::drain(child.stdout.take());
    let stderr = runner::drain(child.stderr.take());
    // Written on a thread: a large job must not deadlock against a full stdout pipe.
    let input = serde_json::to_vec(job).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = thread::spawn(move || stdin.write_all(&input));

    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() >= JOB_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    let out = stdout
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| "<stdout still open>".into());
    let err = stderr
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| "<stderr still open>".into());
    let report = || {
        let shown: String = out.chars().take(2000).collect();
        format!(
            "command: node {SCRIPT} (op {op})\n--- stdout (first 2000 chars) ---\n{shown}\n--- stderr ---\n{err}"
        )
    };
    let Some(status) = status else {
        panic!("{test}: killed after {JOB_TIMEOUT:?}\n{}", report());
    };
    let result: Value = serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!(
            "{test}: node's output is not JSON ({e}, {status})\n{}",
            report()
        )
    });
    assert!(
        status.success() && result["ok"] == true,
        "{test}: job failed ({status})\n{}",
        report()
    );
    result
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// The payload as a JSON value for the job (JavaScript stringifies it itself).
fn to_js(p: &Payload) -> Value {
    match p {
        Payload::Text(s) => Value::String(s.clone()),
        Payload::Json(v) => v.clone(),
    }
}

/// 100,000 UTF-16 units of text, a surrogate pair every third unit.
fn big_text() -> String {
    "ab\u{1F600}".repeat(25_000)
}

/// Payloads of several sizes and kinds, with a name for failure messages.
fn payloads() -> Vec<(&'static str, Payload)> {
    vec![
        ("empty string", Payload::Text(String::new())),
        ("ascii", Payload::Text("hello hidden service".into())),
        (
            "non-BMP and escapes",
            Payload::Text(
                "\u{1F600} \u{1D11E} é ✓ \u{10FFFF} \n\t\r\"\\/ \u{0}\u{1f}\u{7f} \u{2028}\u{2029} \u{FEFF}".into(),
            ),
        ),
        (
            "JSON object",
            Payload::Json(json!({
                "service": "echo",
                "n": 42,
                "neg": -7,
                "half": 0.5,
                "tiny": 1.5e-7,
                "big": 1e21,
                "maxSafe": 9_007_199_254_740_991_u64,
                "nested": {"list": [1, 2, {"b": null}], "t": true, "f": false},
                "s": "é\u{1F600}",
                "emptyObject": {},
                "emptyArray": []
            })),
        ),
        ("number", Payload::Json(json!(42))),
        ("null", Payload::Json(Value::Null)),
        ("true", Payload::Json(json!(true))),
        ("array", Payload::Json(json!(["a", 1, [], {}]))),
        ("~100 KB text", Payload::Text(big_text())),
        (
            "~100 KB JSON",
            Payload::Json(json!({"blob": "x".repeat(100_000), "tail": "\u{1F600}".repeat(100)})),
        ),
    ]
}

/// Checks one `decrypt` result against the plaintext Rust sealed.
fn assert_decrypted(test: &str, name: &str, result: &Value, plain: &[u8]) {
    assert_eq!(
        result["ok"], true,
        "{test}: {name}: Web Crypto failed: {result}"
    );
    let text = std::str::from_utf8(plain).unwrap();
    assert_eq!(
        result["plaintext"].as_str(),
        Some(text),
        "{test}: {name}: plaintext differs"
    );
    assert_eq!(
        result["plaintextBase64"].as_str(),
        Some(B64.encode(plain).as_str()),
        "{test}: {name}: plaintext bytes differ"
    );
    // JSON.stringify(JSON.parse(ours)) is ours: our plaintext is exactly what GhostMesh makes.
    assert_eq!(
        result["restringified"].as_str(),
        Some(text),
        "{test}: {name}: JSON.stringify of the decrypted payload differs from the Rust plaintext"
    );
}

/// Rust seals every payload for a Rust key; Web Crypto (importing the Rust PKCS#8 PEM) opens
/// each one to the same bytes, and `JSON.stringify` of what it parsed is the Rust plaintext.
#[test]
fn rust_envelopes_decrypt_in_webcrypto() {
    const TEST: &str = "rust_envelopes_decrypt_in_webcrypto";
    let Some(script) = webcrypto(TEST) else {
        return;
    };
    let master = KeyPair::generate().unwrap();
    let mut rng = rng(1);
    let mut plains = Vec::new();
    let mut envelopes = Vec::new();
    for (name, p) in payloads() {
        let plain = packet::plaintext(&p);
        let env = crypto::encrypt(&mut rng, master.public(), &plain).unwrap();
        assert_eq!(env.encrypted_key.len(), 256, "{name}");
        assert_eq!(
            env.ciphertext.len(),
            plain.len() + crypto::TAG_LEN,
            "{name}"
        );
        plains.push((name, plain));
        envelopes.push(env.to_json());
    }
    // Not something GhostMesh sends (JSON.stringify is never empty), but AES-GCM must agree on it.
    let empty = crypto::encrypt(&mut rng, master.public(), b"").unwrap();
    envelopes.push(empty.to_json());

    let out = run_job(
        TEST,
        script,
        &json!({"op": "decrypt", "privateKeyPem": master.private_pem(), "envelopes": envelopes}),
    );
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), plains.len() + 1);
    for ((name, plain), result) in plains.iter().zip(results) {
        assert_decrypted(TEST, name, result, plain);
        if let Some((_, Payload::Text(s))) = payloads().iter().find(|(n, _)| n == name) {
            assert_eq!(
                result["payload"].as_str(),
                Some(s.as_str()),
                "{name}: parsed string differs"
            );
        }
    }
    let last = &results[plains.len()];
    assert_eq!(last["ok"], true, "empty plaintext: {last}");
    assert_eq!(last["plaintext"], "", "empty plaintext: {last}");
    assert!(
        last["parseError"].is_string(),
        "empty plaintext is not JSON: {last}"
    );
}

/// Web Crypto encrypts every payload for a Rust public key (SPKI PEM from `to_pem`); Rust opens
/// each with `crypto::open` to exactly JavaScript's `JSON.stringify` text, `payload_of` gives the
/// payload back, and our own `packet::plaintext` makes the same bytes. A JavaScript key is
/// never bound.
#[test]
fn webcrypto_envelopes_decrypt_in_rust() {
    const TEST: &str = "webcrypto_envelopes_decrypt_in_rust";
    let Some(script) = webcrypto(TEST) else {
        return;
    };
    let master = KeyPair::generate().unwrap();
    let all = payloads();
    let out = run_job(
        TEST,
        script,
        &json!({
            "op": "encrypt",
            "publicKeyPem": master.public().to_pem(),
            "payloads": all.iter().map(|(_, p)| to_js(p)).collect::<Vec<_>>(),
        }),
    );
    let envelopes = out["envelopes"].as_array().unwrap();
    let plaintexts = out["plaintexts"].as_array().unwrap();
    assert_eq!(envelopes.len(), all.len());
    let binding = Binding {
        client_key: master.public(),
        request_id: "0011223344556677",
        nonce: "8899aabbccddeeff",
    };
    for (((name, p), env), js_plain) in all.iter().zip(envelopes).zip(plaintexts) {
        let keys: Vec<&str> = env
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["encryptedKey", "iv", "ciphertext"],
            "{name}: GhostMesh's field order"
        );
        assert_eq!(env["encryptedKey"].as_str().unwrap().len(), 344, "{name}");
        assert_eq!(env["iv"].as_str().unwrap().len(), 16, "{name}");
        let js_plain = js_plain.as_str().unwrap();
        let env = Envelope::from_json(env, 1 << 20).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            env.ciphertext.len(),
            js_plain.len() + crypto::TAG_LEN,
            "{name}"
        );
        let opened = crypto::open(&master, &env)
            .unwrap_or_else(|e| panic!("{TEST}: {name}: Rust cannot open: {e}"));
        assert_eq!(
            opened.plaintext,
            js_plain.as_bytes(),
            "{name}: plaintext differs"
        );
        assert_eq!(
            &packet::payload_of(&opened.plaintext).unwrap(),
            p,
            "{name}: payload differs"
        );
        assert_eq!(
            String::from_utf8(packet::plaintext(p)).unwrap(),
            js_plain,
            "{name}: packet::plaintext differs from JSON.stringify"
        );
        assert_eq!(
            crypto::check_binding(&opened.key, binding),
            Ok(false),
            "{name}: a Web Crypto key is unbound"
        );
    }
}

/// A Web Crypto key pair imports in Rust (`KeyPair::from_pem`, `PublicKey::from_pem`) and
/// Rust re-exports the public key as the same text; a Rust public key imports in Web Crypto
/// (PEM, CRLF PEM, bare base64 DER) and Web Crypto exports it as Rust's `to_pem` text; envelopes
/// cross both ways with the Web Crypto pair.
#[test]
fn pem_keys_cross_import_with_identical_exports() {
    const TEST: &str = "pem_keys_cross_import_with_identical_exports";
    let Some(script) = webcrypto(TEST) else {
        return;
    };

    // Web Crypto's pair in Rust.
    let js = run_job(TEST, script, &json!({"op": "generate"}));
    let js_pub = js["publicKeyPem"].as_str().unwrap();
    let js_priv = js["privateKeyPem"].as_str().unwrap();
    assert!(
        js_pub.starts_with("-----BEGIN PUBLIC KEY-----\n")
            && js_pub.ends_with("\n-----END PUBLIC KEY-----")
    );
    assert!(js_pub.lines().all(|l| l.len() <= 64), "64-character lines");
    let public =
        PublicKey::from_pem(js_pub).unwrap_or_else(|e| panic!("{TEST}: Web Crypto SPKI: {e}"));
    assert_eq!(
        public.to_pem(),
        js_pub,
        "Rust re-export of a Web Crypto public key"
    );
    let pair =
        KeyPair::from_pem(js_priv).unwrap_or_else(|e| panic!("{TEST}: Web Crypto PKCS#8: {e}"));
    assert_eq!(
        pair.public(),
        &public,
        "the PKCS#8 pair's public half is the SPKI key"
    );
    assert_eq!(pair.public().to_pem(), js_pub);
    assert_eq!(
        PublicKey::from_pem(&js_pub.replace('\n', "\r\n")).unwrap(),
        public,
        "CRLF PEM"
    );
    // PKCS#8 (never sent, but a configured identity may come from either side) round-trips too.
    assert_eq!(
        pair.private_pem(),
        js_priv,
        "Rust re-export of a Web Crypto private key"
    );

    // Rust seals for the Web Crypto key; Web Crypto opens it with its own private key.
    let mut rng = rng(3);
    let plain = packet::plaintext(&Payload::Json(json!({"to": "webcrypto", "s": "\u{1F600}"})));
    let env = crypto::encrypt(&mut rng, &public, &plain).unwrap();
    let out = run_job(
        TEST,
        script,
        &json!({"op": "decrypt", "privateKeyPem": js_priv, "envelopes": [env.to_json()]}),
    );
    assert_decrypted(TEST, "Rust -> Web Crypto key", &out["results"][0], &plain);
    // Web Crypto seals for its own key; Rust opens it with the imported PKCS#8 key.
    let out = run_job(
        TEST,
        script,
        &json!({"op": "encrypt", "publicKeyPem": js_pub, "payloads": ["for rust \u{1F600}"]}),
    );
    let env = Envelope::from_json(&out["envelopes"][0], 1 << 20).unwrap();
    let opened = crypto::open(&pair, &env).unwrap();
    assert_eq!(
        packet::payload_of(&opened.plaintext).unwrap(),
        Payload::Text("for rust \u{1F600}".into())
    );

    // A Rust-made public key in Web Crypto, as PEM, CRLF PEM and bare base64 DER (GhostMesh
    // strips headers and whitespace): exported back, it is Rust's text.
    let rust = KeyPair::generate().unwrap();
    let pem = rust.public().to_pem();
    let out = run_job(
        TEST,
        script,
        &json!({
            "op": "reexport",
            "publicKeyPems": [pem, pem.replace('\n', "\r\n"), B64.encode(rust.public().der())],
        }),
    );
    for (i, back) in out["pems"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            back.as_str(),
            Some(pem.as_str()),
            "{TEST}: Web Crypto re-export #{i} of a Rust key"
        );
    }
    // And the Rust private key (PKCS#8 PEM) in Web Crypto: rust_envelopes_decrypt_in_webcrypto.
}

/// A bound content key (what a Rust client sends by default) is an ordinary AES key to a
/// GhostMesh master: Web Crypto opens the body.
#[test]
fn bound_content_key_decrypts_in_webcrypto() {
    const TEST: &str = "bound_content_key_decrypts_in_webcrypto";
    let Some(script) = webcrypto(TEST) else {
        return;
    };
    let master = KeyPair::generate().unwrap();
    let client = KeyPair::generate().unwrap();
    let binding = Binding {
        client_key: client.public(),
        request_id: "0123456789abcdef",
        nonce: "fedcba9876543210",
    };
    let mut rng = rng(4);
    let mut plains = Vec::new();
    let mut envelopes = Vec::new();
    for (name, p) in payloads() {
        let key = crypto::content_key(&mut rng, Some(binding));
        assert_eq!(crypto::check_binding(&key, binding), Ok(true));
        let plain = packet::plaintext(&p);
        envelopes.push(
            crypto::seal(&mut rng, master.public(), &key, &plain)
                .unwrap()
                .to_json(),
        );
        plains.push((name, plain));
    }
    let out = run_job(
        TEST,
        script,
        &json!({"op": "decrypt", "privateKeyPem": master.private_pem(), "envelopes": envelopes}),
    );
    for ((name, plain), result) in plains.iter().zip(out["results"].as_array().unwrap()) {
        assert_decrypted(TEST, name, result, plain);
    }
}

/// Every modified field of a Rust envelope (ciphertext, tag, IV, wrapped key, a truncated
/// ciphertext) and a wrong private key make Web Crypto fail, as they make Rust fail; a
/// modified Web Crypto envelope fails in Rust.
#[test]
fn tampered_envelopes_fail_in_webcrypto_and_rust() {
    const TEST: &str = "tampered_envelopes_fail_in_webcrypto_and_rust";
    let Some(script) = webcrypto(TEST) else {
        return;
    };
    let master = KeyPair::generate().unwrap();
    let other = KeyPair::generate().unwrap();
    let mut rng = rng(5);
    let plain = packet::plaintext(&Payload::Json(
        json!({"secret": "\u{1F600} tamper me", "n": 7}),
    ));
    let good = crypto::encrypt(&mut rng, master.public(), &plain).unwrap();

    type Tamper = fn(&mut Envelope);
    let tampers: [(&str, Tamper, CryptoError); 5] = [
        (
            "ciphertext byte",
            |e| e.ciphertext[0] ^= 0x01,
            CryptoError::Tampered,
        ),
        (
            "tag byte",
            |e| *e.ciphertext.last_mut().unwrap() ^= 0x80,
            CryptoError::Tampered,
        ),
        ("iv byte", |e| e.iv[11] ^= 0x01, CryptoError::Tampered),
        (
            "wrapped key byte",
            |e| e.encrypted_key[100] ^= 0x01,
            CryptoError::WrongKey,
        ),
        (
            "ciphertext truncated",
            |e| {
                e.ciphertext.pop();
            },
            CryptoError::Tampered,
        ),
    ];
    let mut envelopes = vec![good.to_json()];
    for (name, tamper, rust_err) in &tampers {
        let mut env = good.clone();
        tamper(&mut env);
        assert_eq!(
            crypto::open(&master, &env).unwrap_err(),
            *rust_err,
            "{TEST}: Rust, {name}"
        );
        envelopes.push(env.to_json());
    }
    let out = run_job(
        TEST,
        script,
        &json!({"op": "decrypt", "privateKeyPem": master.private_pem(), "envelopes": envelopes}),
    );
    let results = out["results"].as_array().unwrap();
    assert_decrypted(TEST, "untampered control", &results[0], &plain);
    for ((name, _, _), result) in tampers.iter().zip(&results[1..]) {
        assert_eq!(
            result["ok"], false,
            "{TEST}: Web Crypto accepted a {name} change: {result}"
        );
        let error = result["error"].as_str().unwrap();
        assert!(
            error.starts_with("OperationError"),
            "{TEST}: {name}: {error}"
        );
        println!("{TEST}: {name}: Web Crypto: {error}");
    }

    // The right envelope under the wrong key.
    assert_eq!(
        crypto::open(&other, &good).unwrap_err(),
        CryptoError::WrongKey
    );
    let out = run_job(
        TEST,
        script,
        &json!({"op": "decrypt", "privateKeyPem": other.private_pem(), "envelopes": [good.to_json()]}),
    );
    assert_eq!(
        out["results"][0]["ok"], false,
        "{TEST}: Web Crypto opened with the wrong key: {out}"
    );

    // A Web Crypto envelope with a modified ciphertext or IV fails in Rust.
    let out = run_job(
        TEST,
        script,
        &json!({"op": "encrypt", "publicKeyPem": master.public().to_pem(), "payloads": [{"from": "js"}]}),
    );
    let js_env = Envelope::from_json(&out["envelopes"][0], 1 << 20).unwrap();
    assert!(crypto::open(&master, &js_env).is_ok());
    for (name, tamper, rust_err) in &tampers {
        let mut env = js_env.clone();
        tamper(&mut env);
        assert_eq!(
            crypto::open(&master, &env).unwrap_err(),
            *rust_err,
            "{TEST}: Rust, Web Crypto envelope, {name}"
        );
    }
}

/// A full GhostMesh-shaped `hidden-service-request` (bound key, a service name with non-BMP
/// characters so UTF-16 units, chars and bytes all differ) built with `packet::request` +
/// `packet::pad`: JavaScript measures `JSON.stringify(packet).length == fixed + 13` and
/// re-stringifies it to the same text; a Web Crypto master (GhostMesh's steps) decrypts the
/// body and answers with an encrypted, padded `hidden-service-response` that Rust checks,
/// re-serializes to the same text and opens with the client key.
#[test]
fn padded_request_packet_round_trips_through_a_webcrypto_master() {
    const TEST: &str = "padded_request_packet_round_trips_through_a_webcrypto_master";
    let Some(script) = webcrypto(TEST) else {
        return;
    };
    let master = KeyPair::generate().unwrap();
    let client = KeyPair::generate().unwrap();
    let mut rng = rng(6);
    let service = "echo-\u{e9}\u{1F600}";
    for (fixed, request_id, nonce) in [
        (4096usize, "00112233445566ff", "a1b2c3d4e5f60718"),
        (8192, "0f0e0d0c0b0a0908", "0706050403020100"),
    ] {
        let payload = Payload::Json(json!({"q": "ping \u{1F600}", "fixed": fixed}));
        let binding = Binding {
            client_key: client.public(),
            request_id,
            nonce,
        };
        let key = crypto::content_key(&mut rng, Some(binding));
        let request = Request {
            service: service.into(),
            request_id: request_id.into(),
            nonce: nonce.into(),
            client_public_key: client.public().to_pem(),
            requested_hops: 3,
            body: crypto::seal(
                &mut rng,
                master.public(),
                &key,
                &packet::plaintext(&payload),
            )
            .unwrap(),
        };
        let mut v = packet::request(&request);
        packet::pad(&mut v, fixed);
        let text = js_json::stringify(&v);
        assert_eq!(packet::js_len(&v), fixed + 13);
        assert_eq!(text.encode_utf16().count(), fixed + 13);
        assert_ne!(
            text.len(),
            fixed + 13,
            "the service name makes bytes and UTF-16 units differ"
        );

        let reply =
            Payload::Json(json!({"echo": "pong \u{1F600}", "service": service, "fixed": fixed}));
        let out = run_job(
            TEST,
            script,
            &json!({
                "op": "master",
                "privateKeyPem": master.private_pem(),
                "request": text,
                "fixedPacketBytes": fixed,
                "reply": to_js(&reply),
            }),
        );
        assert_eq!(
            out["requestTextLength"],
            fixed + 13,
            "{TEST}: {fixed}: text.length in JavaScript"
        );
        assert_eq!(
            out["requestLength"],
            fixed + 13,
            "{TEST}: {fixed}: JSON.stringify(packet).length in JavaScript"
        );
        assert_eq!(
            out["restringifiedEqual"], true,
            "{TEST}: {fixed}: JSON.stringify(JSON.parse(text)) !== text"
        );
        assert_eq!(
            out["plaintext"].as_str().unwrap().as_bytes(),
            packet::plaintext(&payload),
            "{TEST}: {fixed}: body"
        );

        // The master's response, as GhostMesh builds it.
        let response_text = out["response"].as_str().unwrap();
        assert_eq!(
            out["responseLength"],
            fixed + 13,
            "{TEST}: {fixed}: response length in JavaScript"
        );
        let resp: Value = serde_json::from_str(response_text).unwrap();
        assert_eq!(
            js_json::stringify(&resp),
            response_text,
            "{TEST}: {fixed}: Rust re-serializes the response to other text"
        );
        assert_eq!(packet::js_len(&resp), fixed + 13);
        packet::check_padding(&resp, fixed).unwrap_or_else(|e| panic!("{TEST}: {fixed}: {e}"));
        assert_eq!(packet::kind(&resp), Some(packet::RESPONSE));
        let keys: Vec<&str> = resp
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "__ghostmeshInternal",
                "service",
                "requestId",
                "nonce",
                "body",
                "realHops",
                "simulatedHops",
                "delayedMs",
                "padding"
            ]
        );
        assert_eq!(
            (
                resp["service"].as_str(),
                resp["requestId"].as_str(),
                resp["nonce"].as_str()
            ),
            (Some(service), Some(request_id), Some(nonce))
        );
        // Our own response builder makes the same fields in the same order.
        let mut ours = packet::response(
            service,
            request_id,
            nonce,
            &Envelope::from_json(&resp["body"], 1 << 20).unwrap(),
        );
        packet::pad(&mut ours, fixed);
        assert_eq!(
            js_json::stringify(&ours),
            response_text,
            "{TEST}: {fixed}: packet::response + pad differ from GhostMesh's"
        );
        let body = Envelope::from_json(&resp["body"], 1 << 20).unwrap();
        let opened = crypto::open(&client, &body)
            .unwrap_or_else(|e| panic!("{TEST}: {fixed}: client cannot open: {e}"));
        assert_eq!(packet::payload_of(&opened.plaintext).unwrap(), reply);
        println!(
            "{TEST}: fixedPacketBytes {fixed}: request and response {} UTF-16 units in both languages",
            fixed + 13
        );
    }
}
