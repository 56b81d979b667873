//! Users and their credentials. Passwords are kept as RabbitMQ keeps them: a 4-byte
//! random salt followed by SHA-256(salt ++ password), base64-encoded, so that definitions
//! exported from RabbitMQ import with working logins.

use base64::Engine;
use sha2::{Digest, Sha256, Sha512};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashingAlgorithm {
    Sha256,
    Sha512,
}

impl HashingAlgorithm {
    /// RabbitMQ's names, as its definitions files carry them.
    pub fn name(self) -> &'static str {
        match self {
            HashingAlgorithm::Sha256 => "rabbit_password_hashing_sha256",
            HashingAlgorithm::Sha512 => "rabbit_password_hashing_sha512",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "rabbit_password_hashing_sha256" => Some(HashingAlgorithm::Sha256),
            "rabbit_password_hashing_sha512" => Some(HashingAlgorithm::Sha512),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordHash {
    pub algorithm: HashingAlgorithm,
    /// salt (4 bytes) followed by the digest.
    pub salted_digest: Vec<u8>,
}

const SALT_BYTES: usize = 4;

fn digest(algorithm: HashingAlgorithm, salt: &[u8], password: &[u8]) -> Vec<u8> {
    match algorithm {
        HashingAlgorithm::Sha256 => Sha256::new()
            .chain_update(salt)
            .chain_update(password)
            .finalize()
            .to_vec(),
        HashingAlgorithm::Sha512 => Sha512::new()
            .chain_update(salt)
            .chain_update(password)
            .finalize()
            .to_vec(),
    }
}

impl PasswordHash {
    pub fn new(password: &str) -> Self {
        let salt: [u8; SALT_BYTES] = rand::random();
        let mut salted_digest = salt.to_vec();
        salted_digest.extend(digest(HashingAlgorithm::Sha256, &salt, password.as_bytes()));
        PasswordHash {
            algorithm: HashingAlgorithm::Sha256,
            salted_digest,
        }
    }

    /// Reads RabbitMQ's `password_hash` (base64) with its `hashing_algorithm`.
    pub fn from_base64(encoded: &str, algorithm: HashingAlgorithm) -> Option<Self> {
        let salted_digest = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        (salted_digest.len() > SALT_BYTES).then_some(PasswordHash {
            algorithm,
            salted_digest,
        })
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.salted_digest)
    }

    pub fn verify(&self, password: &str) -> bool {
        let (salt, expected) = self.salted_digest.split_at(SALT_BYTES);
        let actual = digest(self.algorithm, salt, password.as_bytes());
        // Compare every byte whatever the first difference, so timing reveals nothing.
        actual.len() == expected.len()
            && actual
                .iter()
                .zip(expected)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// None: the user cannot log in with a password (certificate login only).
    pub password: Option<PasswordHash>,
    pub tags: Vec<String>,
    /// max-connections, max-channels.
    pub limits: crate::limits::Limits,
}

impl User {
    pub fn new(name: &str, password: Option<&str>, tags: Vec<String>) -> User {
        User {
            name: name.to_string(),
            password: password.map(PasswordHash::new),
            tags,
            limits: Default::default(),
        }
    }

    /// Whether `password` is this user's (a user without one accepts none).
    pub fn verify(&self, password: &str) -> bool {
        self.password
            .as_ref()
            .is_some_and(|hash| hash.verify(password))
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_its_password() {
        let hash = PasswordHash::new("secret");
        assert!(hash.verify("secret"));
        assert!(!hash.verify("Secret"));
        assert!(!hash.verify(""));
        assert_eq!(hash.salted_digest.len(), SALT_BYTES + 32);
    }

    #[test]
    fn reads_rabbitmq_hash_format() {
        // Built by hand the way RabbitMQ builds it: salt 0x01020304, SHA-256(salt ++ "guest").
        let salt = [1u8, 2, 3, 4];
        let mut raw = salt.to_vec();
        raw.extend(
            Sha256::new()
                .chain_update(salt)
                .chain_update(b"guest")
                .finalize(),
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(&raw);
        let hash = PasswordHash::from_base64(&encoded, HashingAlgorithm::Sha256).unwrap();
        assert!(hash.verify("guest"));
        assert!(!hash.verify("guest2"));
        assert_eq!(hash.to_base64(), encoded);
        assert!(PasswordHash::from_base64("!!", HashingAlgorithm::Sha256).is_none());
        assert!(PasswordHash::from_base64("AAAA", HashingAlgorithm::Sha256).is_none());
    }

    #[test]
    fn a_user_without_password_accepts_none() {
        let user = User::new("cert-only", None, vec![]);
        assert!(!user.verify(""));
        assert!(!user.verify("anything"));
        let user = User::new("u", Some("pw"), vec!["monitoring".into()]);
        assert!(user.verify("pw"));
        assert!(user.has_tag("monitoring"));
        assert!(!user.has_tag("administrator"));
    }

    #[test]
    fn algorithm_names_are_rabbitmqs() {
        for a in [HashingAlgorithm::Sha256, HashingAlgorithm::Sha512] {
            assert_eq!(HashingAlgorithm::parse(a.name()), Some(a));
        }
        assert_eq!(HashingAlgorithm::parse("rabbit_password_hashing_md5"), None);
    }
}
