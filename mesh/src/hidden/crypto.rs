//! GhostMesh's hybrid encryption for hidden-service bodies, from aws-lc-rs (not the `rsa`
//! crate: RUSTSEC-2023-0071 has no fixed release, and masters decrypt network input):
//! a fresh AES-256-GCM key and 12-byte IV per message, no AAD, the 128-bit tag appended; the
//! raw key wrapped with RSA-OAEP (SHA-256 digest and MGF1, no label); every field standard
//! base64. Keys are PEM (SPKI public, PKCS#8 private) or bare base64 DER, as Web Crypto
//! exports them.
//!
//! **Key binding** (between Rust peers, invisible to GhostMesh): a Rust client makes the AES
//! key `r (16 random bytes) || "GMB1" || tag (12 bytes)`, the tag a SHA-256 over `r`, the
//! client's public key and the request's ids. Only the master can unwrap the key, so only the
//! master can check the tag, and an entry or relay that swaps `clientPublicKey` (to read the
//! response) or the ids is caught. A JavaScript master uses the key as any AES key; a
//! JavaScript client's random key carries the marker with probability 2^-32, and is then
//! refused as unbound-but-marked (it retries with a new key). The bound key keeps 128 random
//! bits, AES-128's security level.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::Rng;
use serde_json::{Map, Value};

/// AES-256-GCM key length.
pub const KEY_LEN: usize = 32;
/// GhostMesh's IV length.
pub const IV_LEN: usize = 12;
/// The GCM tag appended to the ciphertext.
pub const TAG_LEN: usize = 16;
/// Marker of a bound key (bytes 16..20).
const BIND_MARK: &[u8; 4] = b"GMB1";
const BIND_LABEL: &[u8] = b"ghostmesh hidden-service key binding v1";

/// Why a key or an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// Not a PEM or base64 DER key of the expected kind.
    BadKey(String),
    /// A field is missing or not base64 of the right length.
    Malformed(String),
    /// The wrapped key does not open with this private key (wrong key or tampered).
    WrongKey,
    /// The ciphertext or IV was modified (GCM tag mismatch).
    Tampered,
    /// The key carries the binding marker but not for this client key and ids.
    BindingMismatch,
    /// The underlying library failed.
    Internal(&'static str),
}

impl std::fmt::Display for CryptoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CryptoError::BadKey(e) => write!(f, "bad key: {e}"),
            CryptoError::Malformed(e) => write!(f, "malformed envelope: {e}"),
            CryptoError::WrongKey => f.write_str("wrong key or tampered key wrap"),
            CryptoError::Tampered => f.write_str("tampered ciphertext (GCM tag mismatch)"),
            CryptoError::BindingMismatch => {
                f.write_str("client key not bound to this request (swapped key or ids)")
            }
            CryptoError::Internal(e) => write!(f, "crypto failure: {e}"),
        }
    }
}

impl std::error::Error for CryptoError {}

/// An RSA-OAEP public key (SPKI).
#[derive(Clone)]
pub struct PublicKey {
    der: Vec<u8>,
    key: std::sync::Arc<OaepPublicEncryptingKey>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PublicKey({} bits, sha256 {})",
            self.key.key_size_bits(),
            &hex(&self.fingerprint())[..16]
        )
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl PublicKey {
    /// From SPKI PEM (`-----BEGIN PUBLIC KEY-----`) or bare base64 DER.
    pub fn from_pem(text: &str) -> Result<Self, CryptoError> {
        Self::from_der(&pem_der(text)?)
    }

    /// From SPKI DER.
    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        let key =
            PublicEncryptingKey::from_der(der).map_err(|e| CryptoError::BadKey(e.to_string()))?;
        if key.key_size_bits() < 2048 {
            return Err(CryptoError::BadKey(format!(
                "{}-bit RSA key; at least 2048 bits",
                key.key_size_bits()
            )));
        }
        let key = OaepPublicEncryptingKey::new(key)
            .map_err(|_| CryptoError::Internal("OAEP public key"))?;
        Ok(PublicKey {
            der: der.to_vec(),
            key: std::sync::Arc::new(key),
        })
    }

    /// SPKI DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// SPKI PEM exactly as GhostMesh exports it: 64-character lines, no trailing newline.
    pub fn to_pem(&self) -> String {
        to_pem("PUBLIC KEY", &self.der)
    }

    /// SHA-256 of the DER.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, &self.der).as_ref());
        out
    }

    fn wrap(&self, key: &[u8; KEY_LEN]) -> Result<Vec<u8>, CryptoError> {
        let mut out = vec![0u8; self.key.ciphertext_size()];
        let n = self
            .key
            .encrypt(&OAEP_SHA256_MGF1SHA256, key, &mut out, None)
            .map_err(|_| CryptoError::Internal("RSA-OAEP encrypt"))?
            .len();
        out.truncate(n);
        Ok(out)
    }
}

/// An RSA-OAEP key pair (PKCS#8 private key).
#[derive(Clone)]
pub struct KeyPair {
    private: std::sync::Arc<OaepPrivateDecryptingKey>,
    pkcs8: Vec<u8>,
    public: PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({:?})", self.public)
    }
}

impl KeyPair {
    /// A fresh 2048-bit pair (e = 65537), as GhostMesh's temporary client keys. Takes tens of
    /// milliseconds: call it off the async threads (`spawn_blocking`).
    pub fn generate() -> Result<Self, CryptoError> {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048)
            .map_err(|_| CryptoError::Internal("RSA keygen"))?;
        Self::from_key(key)
    }

    /// From PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) or bare base64 DER.
    pub fn from_pem(text: &str) -> Result<Self, CryptoError> {
        Self::from_pkcs8(&pem_der(text)?)
    }

    /// From PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, CryptoError> {
        let key = PrivateDecryptingKey::from_pkcs8(der)
            .map_err(|e| CryptoError::BadKey(e.to_string()))?;
        Self::from_key(key)
    }

    fn from_key(key: PrivateDecryptingKey) -> Result<Self, CryptoError> {
        if key.key_size_bits() < 2048 {
            return Err(CryptoError::BadKey(format!(
                "{}-bit RSA key; at least 2048 bits",
                key.key_size_bits()
            )));
        }
        let pkcs8 = key
            .as_der()
            .map_err(|_| CryptoError::Internal("PKCS#8 export"))?
            .as_ref()
            .to_vec();
        let spki = key
            .public_key()
            .as_der()
            .map_err(|_| CryptoError::Internal("SPKI export"))?
            .as_ref()
            .to_vec();
        let public = PublicKey::from_der(&spki)?;
        let private = OaepPrivateDecryptingKey::new(key)
            .map_err(|_| CryptoError::Internal("OAEP private key"))?;
        Ok(KeyPair {
            private: std::sync::Arc::new(private),
            pkcs8,
            public,
        })
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// PKCS#8 PEM, 64-character lines.
    pub fn private_pem(&self) -> String {
        to_pem("PRIVATE KEY", &self.pkcs8)
    }

    fn unwrap_key(&self, wrapped: &[u8]) -> Result<[u8; KEY_LEN], CryptoError> {
        if wrapped.len() != self.private.key_size_bytes() {
            return Err(CryptoError::Malformed(format!(
                "encryptedKey is {} bytes, the key takes {}",
                wrapped.len(),
                self.private.key_size_bytes()
            )));
        }
        let mut out = vec![0u8; self.private.min_output_size()];
        let plain = self
            .private
            .decrypt(&OAEP_SHA256_MGF1SHA256, wrapped, &mut out, None)
            .map_err(|_| CryptoError::WrongKey)?;
        plain.try_into().map_err(|_| CryptoError::WrongKey)
    }
}

/// One encrypted body: `{encryptedKey, iv, ciphertext}` in base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// RSA-OAEP-wrapped AES key.
    pub encrypted_key: Vec<u8>,
    /// AES-GCM IV (12 bytes).
    pub iv: [u8; IV_LEN],
    /// Ciphertext with the tag appended.
    pub ciphertext: Vec<u8>,
}

/// What the opener learns besides the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The plaintext bytes (UTF-8 JSON in GhostMesh).
    pub plaintext: Vec<u8>,
    /// The AES key (to answer with a key-bound reply, or to check a binding).
    pub key: [u8; KEY_LEN],
}

/// The ids a binding covers.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The client's public key as sent.
    pub client_key: &'a PublicKey,
    /// The request's ids.
    pub request_id: &'a str,
    /// The request's nonce.
    pub nonce: &'a str,
}

fn bind_tag(r: &[u8], b: &Binding<'_>) -> [u8; 12] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(BIND_LABEL);
    ctx.update(r);
    ctx.update(&b.client_key.fingerprint());
    for s in [b.request_id, b.nonce] {
        ctx.update(&(s.len() as u32).to_be_bytes());
        ctx.update(s.as_bytes());
    }
    let mut tag = [0u8; 12];
    tag.copy_from_slice(&ctx.finish().as_ref()[..12]);
    tag
}

/// A fresh AES key: random, or bound to `binding`.
pub fn content_key<R: Rng + ?Sized>(rng: &mut R, binding: Option<Binding<'_>>) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    rng.fill_bytes(&mut key);
    if let Some(b) = binding {
        key[16..20].copy_from_slice(BIND_MARK);
        let tag = bind_tag(&key[..16], &b);
        key[20..].copy_from_slice(&tag);
    }
    key
}

/// Whether `key` is bound: `Ok(true)` bound to `binding`, `Ok(false)` an ordinary key
/// (GhostMesh client), `Err` marked but for another key or other ids.
pub fn check_binding(key: &[u8; KEY_LEN], binding: Binding<'_>) -> Result<bool, CryptoError> {
    if &key[16..20] != BIND_MARK {
        return Ok(false);
    }
    let tag = bind_tag(&key[..16], &binding);
    if aws_lc_rs::constant_time::verify_slices_are_equal(&key[20..], &tag).is_ok() {
        Ok(true)
    } else {
        Err(CryptoError::BindingMismatch)
    }
}

/// Encrypts `plaintext` for `to` under `key` (see [`content_key`]) and a random IV.
pub fn seal<R: Rng + ?Sized>(
    rng: &mut R,
    to: &PublicKey,
    key: &[u8; KEY_LEN],
    plaintext: &[u8],
) -> Result<Envelope, CryptoError> {
    let mut iv = [0u8; IV_LEN];
    rng.fill_bytes(&mut iv);
    let aead = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key).map_err(|_| CryptoError::Internal("AES key"))?,
    );
    let mut ciphertext = plaintext.to_vec();
    aead.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(iv),
        Aad::empty(),
        &mut ciphertext,
    )
    .map_err(|_| CryptoError::Internal("AES-GCM seal"))?;
    Ok(Envelope {
        encrypted_key: to.wrap(key)?,
        iv,
        ciphertext,
    })
}

/// GhostMesh's `encryptHiddenPayload`: a fresh random key.
pub fn encrypt<R: Rng + ?Sized>(
    rng: &mut R,
    to: &PublicKey,
    plaintext: &[u8],
) -> Result<Envelope, CryptoError> {
    let key = content_key(rng, None);
    seal(rng, to, &key, plaintext)
}

/// Opens an envelope with `with`.
pub fn open(with: &KeyPair, env: &Envelope) -> Result<Opened, CryptoError> {
    let key = with.unwrap_key(&env.encrypted_key)?;
    let aead = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &key).map_err(|_| CryptoError::Internal("AES key"))?,
    );
    let mut buf = env.ciphertext.clone();
    let plain = aead
        .open_in_place(Nonce::assume_unique_for_key(env.iv), Aad::empty(), &mut buf)
        .map_err(|_| CryptoError::Tampered)?;
    let n = plain.len();
    buf.truncate(n);
    Ok(Opened {
        plaintext: buf,
        key,
    })
}

impl Envelope {
    /// `{"encryptedKey","iv","ciphertext"}`, GhostMesh's field order.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "encryptedKey".into(),
            B64.encode(&self.encrypted_key).into(),
        );
        m.insert("iv".into(), B64.encode(self.iv).into());
        m.insert("ciphertext".into(), B64.encode(&self.ciphertext).into());
        Value::Object(m)
    }

    /// Reads `{"encryptedKey","iv","ciphertext"}`; `max_bytes` bounds the decoded ciphertext.
    pub fn from_json(v: &Value, max_bytes: usize) -> Result<Self, CryptoError> {
        let field = |name: &str| -> Result<Vec<u8>, CryptoError> {
            let s = v
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| CryptoError::Malformed(format!("{name} missing or not a string")))?;
            if s.len() > max_bytes.saturating_mul(4) / 3 + 4 {
                return Err(CryptoError::Malformed(format!(
                    "{name} over {max_bytes} bytes"
                )));
            }
            B64.decode(s)
                .map_err(|e| CryptoError::Malformed(format!("{name}: {e}")))
        };
        let encrypted_key = field("encryptedKey")?;
        let iv: [u8; IV_LEN] = field("iv")?
            .try_into()
            .map_err(|_| CryptoError::Malformed(format!("iv is not {IV_LEN} bytes")))?;
        let ciphertext = field("ciphertext")?;
        if ciphertext.len() < TAG_LEN {
            return Err(CryptoError::Malformed(
                "ciphertext shorter than the GCM tag".into(),
            ));
        }
        Ok(Envelope {
            encrypted_key,
            iv,
            ciphertext,
        })
    }
}

/// PEM or bare base64 to DER: header and footer lines and all whitespace are dropped, as
/// GhostMesh's key import does.
fn pem_der(text: &str) -> Result<Vec<u8>, CryptoError> {
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    if body.is_empty() {
        return Err(CryptoError::BadKey("empty key".into()));
    }
    B64.decode(body)
        .map_err(|e| CryptoError::BadKey(format!("not base64: {e}")))
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----",
        lines.join("\n")
    )
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
