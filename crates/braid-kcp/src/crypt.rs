//! kcp-go's datagram ciphers (`--crypt`) and key derivation (`--key`).
//!
//! Every cipher comes from a RustCrypto crate; this module only picks the key length,
//! the mode and the fixed IV kcp-go uses. CFB is restarted for each datagram with that
//! fixed IV (the random nonce at the front of each datagram makes ciphertexts differ),
//! so there is no per-session cipher state.
//!
//! This is confidentiality at best: CFB has no authentication, and the CRC32 under it is
//! no MAC (see docs/security.md).

use cipher::StreamCipher;
use cipher::{AsyncStreamCipher, BlockCipher, BlockEncryptMut, InnerIvInit, KeyInit, KeyIvInit};
use sha1::Sha1;

/// kcp-go's fixed CFB IV (8-byte block ciphers use its first 8 bytes).
const IV: [u8; 16] = [
    0xa7, 0x73, 0x4f, 0x9c, 0x12, 0xac, 0x1b, 0x01, 0xa4, 0x15, 0xf2, 0xc1, 0xfc, 0x78, 0xe6, 0x6b,
];
/// kcptun's salt for `--key`.
const KEY_SALT: &[u8] = b"kcp-go";
/// kcp-go's salt and length for the `xor` cipher's pad.
const XOR_SALT: &[u8] = b"sH3CIVoF#rWLtJo6";
const XOR_LEN: usize = 1500;

/// kcptun's default `--key`.
pub const DEFAULT_KEY: &str = "it's a secrect";

/// The `--crypt` names braid supports, as kcptun spells them.
pub const SUPPORTED: &[&str] = &[
    "aes", "aes-128", "aes-192", "none", "xor", "salsa20", "sm4", "twofish", "blowfish", "cast5",
    "3des",
];

/// A `--crypt` value braid cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    /// kcptun knows this cipher but no well-kept Rust crate implements it as kcp-go does.
    #[error("--crypt {0} is not supported by braid (supported: {list})", list = SUPPORTED.join(", "))]
    Unsupported(String),
    /// Not a kcptun cipher name at all.
    #[error("unknown --crypt {0} (supported: {list})", list = SUPPORTED.join(", "))]
    Unknown(String),
}

/// The datagram cipher of a session: encrypts and decrypts whole datagrams in place.
#[derive(Clone)]
pub struct Crypt {
    kind: Kind,
    name: &'static str,
}

#[derive(Clone)]
enum Kind {
    None,
    Aes128(aes::Aes128),
    Aes192(aes::Aes192),
    Aes256(aes::Aes256),
    Sm4(sm4::Sm4),
    Twofish(twofish::Twofish),
    Blowfish(Box<blowfish::Blowfish>),
    Cast5(cast5::Cast5),
    Tdes(des::TdesEde3),
    Salsa20([u8; 32]),
    Xor(Box<[u8; XOR_LEN]>),
}

impl std::fmt::Debug for Crypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Crypt({})", self.name)
    }
}

/// kcptun's key derivation: PBKDF2-HMAC-SHA1(key, "kcp-go", 4096 rounds, 32 bytes).
pub fn derive_key(key: &str) -> [u8; 32] {
    let mut pass = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha1>(key.as_bytes(), KEY_SALT, 4096, &mut pass);
    pass
}

impl Crypt {
    /// The cipher kcptun's `--crypt name --key key` selects.
    pub fn new(name: &str, key: &str) -> Result<Crypt, CryptError> {
        let pass = derive_key(key);
        let (kind, name) = match name {
            "none" => (Kind::None, "none"),
            "aes" => (Kind::Aes256(new_key(&pass)), "aes"),
            "aes-128" => (Kind::Aes128(new_key(&pass[..16])), "aes-128"),
            "aes-192" => (Kind::Aes192(new_key(&pass[..24])), "aes-192"),
            "sm4" => (Kind::Sm4(new_key(&pass[..16])), "sm4"),
            "twofish" => (Kind::Twofish(new_key(&pass)), "twofish"),
            "blowfish" => (Kind::Blowfish(Box::new(new_key(&pass))), "blowfish"),
            "cast5" => (Kind::Cast5(new_key(&pass[..16])), "cast5"),
            "3des" => (Kind::Tdes(new_key(&pass[..24])), "3des"),
            "salsa20" => (Kind::Salsa20(pass), "salsa20"),
            "xor" => {
                let mut pad = Box::new([0u8; XOR_LEN]);
                pbkdf2::pbkdf2_hmac::<Sha1>(&pass, XOR_SALT, 32, &mut pad[..]);
                (Kind::Xor(pad), "xor")
            }
            "tea" | "xtea" => return Err(CryptError::Unsupported(name.to_string())),
            _ => return Err(CryptError::Unknown(name.to_string())),
        };
        Ok(Crypt { kind, name })
    }

    /// No encryption (kcptun's `--crypt none`: the nonce and CRC header stay).
    pub fn none() -> Crypt {
        Crypt {
            kind: Kind::None,
            name: "none",
        }
    }

    /// The `--crypt` name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Encrypts a whole datagram in place.
    pub fn encrypt(&self, buf: &mut [u8]) {
        match &self.kind {
            Kind::None => {}
            Kind::Aes128(c) => cfb_encrypt(c, &IV, buf),
            Kind::Aes192(c) => cfb_encrypt(c, &IV, buf),
            Kind::Aes256(c) => cfb_encrypt(c, &IV, buf),
            Kind::Sm4(c) => cfb_encrypt(c, &IV, buf),
            Kind::Twofish(c) => cfb_encrypt(c, &IV, buf),
            Kind::Blowfish(c) => cfb_encrypt(&**c, &IV[..8], buf),
            Kind::Cast5(c) => cfb_encrypt(c, &IV[..8], buf),
            Kind::Tdes(c) => cfb_encrypt(c, &IV[..8], buf),
            Kind::Salsa20(key) => salsa(key, buf),
            Kind::Xor(pad) => xor(pad, buf),
        }
    }

    /// Decrypts a whole datagram in place.
    pub fn decrypt(&self, buf: &mut [u8]) {
        match &self.kind {
            Kind::None => {}
            Kind::Aes128(c) => cfb_decrypt(c, &IV, buf),
            Kind::Aes192(c) => cfb_decrypt(c, &IV, buf),
            Kind::Aes256(c) => cfb_decrypt(c, &IV, buf),
            Kind::Sm4(c) => cfb_decrypt(c, &IV, buf),
            Kind::Twofish(c) => cfb_decrypt(c, &IV, buf),
            Kind::Blowfish(c) => cfb_decrypt(&**c, &IV[..8], buf),
            Kind::Cast5(c) => cfb_decrypt(c, &IV[..8], buf),
            Kind::Tdes(c) => cfb_decrypt(c, &IV[..8], buf),
            Kind::Salsa20(key) => salsa(key, buf),
            Kind::Xor(pad) => xor(pad, buf),
        }
    }
}

fn new_key<C: KeyInit>(key: &[u8]) -> C {
    C::new_from_slice(key).expect("kcp-go's key lengths fit these ciphers")
}

fn cfb_encrypt<C: BlockEncryptMut + BlockCipher + Clone>(c: &C, iv: &[u8], buf: &mut [u8]) {
    cfb_mode::Encryptor::<C>::inner_iv_slice_init(c.clone(), iv)
        .expect("IV length is the block size")
        .encrypt(buf);
}

fn cfb_decrypt<C: BlockEncryptMut + BlockCipher + Clone>(c: &C, iv: &[u8], buf: &mut [u8]) {
    cfb_mode::Decryptor::<C>::inner_iv_slice_init(c.clone(), iv)
        .expect("IV length is the block size")
        .decrypt(buf);
}

/// kcp-go's salsa20: the first 8 bytes (random) are the nonce and stay clear.
fn salsa(key: &[u8; 32], buf: &mut [u8]) {
    if buf.len() < 8 {
        return;
    }
    let (nonce, rest) = buf.split_at_mut(8);
    let mut c = salsa20::Salsa20::new(key.into(), (&*nonce).into());
    c.apply_keystream(rest);
}

fn xor(pad: &[u8; XOR_LEN], buf: &mut [u8]) {
    for (b, p) in buf.iter_mut().zip(pad.iter()) {
        *b ^= p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_cipher_round_trips_and_changes_bytes() {
        for name in SUPPORTED {
            let c = Crypt::new(name, "k").unwrap();
            let plain: Vec<u8> = (0..1337u32).map(|i| (i * 7) as u8).collect();
            let mut buf = plain.clone();
            c.encrypt(&mut buf);
            if *name != "none" {
                assert_ne!(buf, plain, "{name}");
            }
            c.decrypt(&mut buf);
            assert_eq!(buf, plain, "{name}");
        }
    }

    #[test]
    fn unknown_and_unsupported_names_are_errors_naming_them() {
        let e = Crypt::new("tea", "k").unwrap_err().to_string();
        assert!(e.contains("tea") && e.contains("not supported"), "{e}");
        let e = Crypt::new("aes256", "k").unwrap_err().to_string();
        assert!(e.contains("unknown --crypt aes256"), "{e}");
    }

    #[test]
    fn key_derivation_is_pbkdf2_sha1_4096() {
        // RFC 6070 vector: PBKDF2-HMAC-SHA1("password", "salt", 4096, 20).
        let mut out = [0u8; 20];
        pbkdf2::pbkdf2_hmac::<Sha1>(b"password", b"salt", 4096, &mut out);
        assert_eq!(out[..4], [0x4b, 0x00, 0x79, 0x01]);
        assert_ne!(derive_key("a"), derive_key("b"));
    }

    #[test]
    fn aes_cfb_matches_openssl_style_cfb128() {
        // AES-128-CFB128, NIST SP 800-38A F.3.13 first block.
        let key: [u8; 16] = [
            0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf,
            0x4f, 0x3c,
        ];
        let iv: Vec<u8> = (0u8..16).collect();
        let mut buf = [
            0x6b, 0xc1, 0xbe, 0xe2, 0x2e, 0x40, 0x9f, 0x96, 0xe9, 0x3d, 0x7e, 0x11, 0x73, 0x93,
            0x17, 0x2a,
        ];
        cfb_encrypt(&new_key::<aes::Aes128>(&key), &iv, &mut buf);
        assert_eq!(buf[..4], [0x3b, 0x3f, 0xd9, 0x2e]);
    }
}
