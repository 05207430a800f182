//! The primitives of the layered packets, all from aws-lc-rs: X25519 scalar multiplication,
//! the HKDF-SHA256 per-hop key schedule, truncated HMAC-SHA256, AES-256-CTR key streams,
//! AES-256-GCM and truncated SHA-256. Every function returns `None` instead of panicking, so
//! callers turn a failure into a counted drop reason.

use aws_lc_rs::{aead, agreement, cipher, constant_time, digest, hkdf, hmac, iv};

/// Length of keys, X25519 scalars and points.
pub(crate) const KEY_LEN: usize = 32;
/// Length of the truncated header MAC and payload digests.
pub(crate) const TAG_LEN: usize = 16;
/// AES-256-GCM nonce length.
pub(crate) const NONCE_LEN: usize = 12;
/// AES-256-GCM tag length.
pub(crate) const AEAD_TAG_LEN: usize = 16;

/// The keys one hop derives from its shared secret: one per purpose, so no key is used twice.
#[derive(Clone)]
pub(crate) struct HopKeys {
    /// AES-256-CTR key of the routing-information stream.
    pub header: [u8; KEY_LEN],
    /// HMAC-SHA256 key of the header MAC.
    pub mac: [u8; KEY_LEN],
    /// AES-256-CTR key of this hop's payload layer.
    pub payload: [u8; KEY_LEN],
    /// Blinding scalar: the next hop's group element is `X25519(blind, alpha)`.
    pub blind: [u8; KEY_LEN],
    /// AES-256-GCM key of the end-to-end layer (used only by the destination of a forward
    /// packet).
    pub e2e: [u8; KEY_LEN],
    /// The replay tag this hop remembers.
    pub replay: [u8; TAG_LEN],
}

const KDF_SALT: &[u8] = b"ghostmesh sphinx v1";
const KDF_INFO: &[u8] = b"ghostmesh sphinx v1 hop keys";
const KDF_LEN: usize = 5 * KEY_LEN + TAG_LEN;

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256(salt = label, ikm = shared secret, info = label || alpha). Binding `alpha`
/// matters: X25519 ignores the top bit of a point and reduces non-canonical encodings, so a
/// modified `alpha` can give the same shared secret; with `alpha` in the info it still gives
/// different keys (so a bad MAC, and no way around the replay cache).
pub(crate) fn hop_keys(alpha: &[u8; KEY_LEN], shared: &[u8; KEY_LEN]) -> Option<HopKeys> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, KDF_SALT).extract(shared);
    let info: [&[u8]; 2] = [KDF_INFO, alpha];
    let okm = prk.expand(&info, Len(KDF_LEN)).ok()?;
    let mut out = [0u8; KDF_LEN];
    okm.fill(&mut out).ok()?;
    let mut keys = HopKeys {
        header: [0; KEY_LEN],
        mac: [0; KEY_LEN],
        payload: [0; KEY_LEN],
        blind: [0; KEY_LEN],
        e2e: [0; KEY_LEN],
        replay: [0; TAG_LEN],
    };
    let mut parts = out.chunks_exact(KEY_LEN);
    for k in [
        &mut keys.header,
        &mut keys.mac,
        &mut keys.payload,
        &mut keys.blind,
        &mut keys.e2e,
    ] {
        k.copy_from_slice(parts.next()?);
    }
    keys.replay.copy_from_slice(&out[5 * KEY_LEN..]);
    Some(keys)
}

/// `X25519(scalar, point)`; `None` for a malformed point or an all-zero result (a low-order
/// point, which would make every shared secret the same).
pub(crate) fn x25519(scalar: &[u8; KEY_LEN], point: &[u8; KEY_LEN]) -> Option<[u8; KEY_LEN]> {
    let sk = agreement::PrivateKey::from_private_key(&agreement::X25519, scalar).ok()?;
    let pk = agreement::UnparsedPublicKey::new(&agreement::X25519, point);
    let out = agreement::agree(&sk, pk, (), |s| {
        let mut out = [0u8; KEY_LEN];
        if s.len() != KEY_LEN {
            return Err(());
        }
        out.copy_from_slice(s);
        Ok(out)
    })
    .ok()?;
    if out.iter().fold(0u8, |a, b| a | b) == 0 {
        return None;
    }
    Some(out)
}

/// `X25519(scalar, 9)`: the public key of `scalar`.
pub(crate) fn x25519_base(scalar: &[u8; KEY_LEN]) -> Option<[u8; KEY_LEN]> {
    let sk = agreement::PrivateKey::from_private_key(&agreement::X25519, scalar).ok()?;
    let pk = sk.compute_public_key().ok()?;
    pk.as_ref().try_into().ok()
}

/// XORs `buf` with the AES-256-CTR key stream of `key` (IV 0: every key is used for one
/// stream only, because it is derived from a fresh per-packet shared secret).
pub(crate) fn xor_stream(key: &[u8; KEY_LEN], buf: &mut [u8]) -> Option<()> {
    let unbound = cipher::UnboundCipherKey::new(&cipher::AES_256, key).ok()?;
    let enc = cipher::EncryptingKey::ctr(unbound).ok()?;
    enc.less_safe_encrypt(
        buf,
        cipher::EncryptionContext::Iv128(iv::FixedLength::from([0u8; 16])),
    )
    .ok()?;
    Some(())
}

/// HMAC-SHA256 over the concatenation of `parts`, truncated to 16 bytes.
pub(crate) fn mac16(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> [u8; TAG_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    let tag = ctx.sign();
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&tag.as_ref()[..TAG_LEN]);
    out
}

/// SHA-256 truncated to 16 bytes.
pub(crate) fn digest16(data: &[u8]) -> [u8; TAG_LEN] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&d.as_ref()[..TAG_LEN]);
    out
}

/// Constant-time equality.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// AES-256-GCM seal in place; returns the tag.
pub(crate) fn seal(
    key: &[u8; KEY_LEN],
    nonce: [u8; NONCE_LEN],
    buf: &mut [u8],
) -> Option<[u8; AEAD_TAG_LEN]> {
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, key).ok()?);
    let tag = key
        .seal_in_place_separate_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::empty(),
            buf,
        )
        .ok()?;
    tag.as_ref().try_into().ok()
}

/// AES-256-GCM open in place of `ciphertext || tag`; returns the plaintext length.
pub(crate) fn open(key: &[u8; KEY_LEN], nonce: [u8; NONCE_LEN], buf: &mut [u8]) -> Option<usize> {
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, key).ok()?);
    let plain = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::empty(),
            buf,
        )
        .ok()?;
    Some(plain.len())
}
