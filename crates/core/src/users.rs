//! Users and their credentials. Passwords are kept as RabbitMQ keeps them: a 4-byte
//! random salt followed by SHA-256(salt ++ password), base64-encoded, so that definitions
//! exported from RabbitMQ import with working logins.

use std::collections::HashMap;

use base64::Engine;
use parking_lot::RwLock;
use sha2::{Digest, Sha256, Sha512};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashingAlgorithm {
    Sha256,
    Sha512,
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
}

/// The user database. Owned by the broker; read on every login.
#[derive(Debug, Default)]
pub struct Users {
    users: RwLock<HashMap<String, User>>,
}

impl Users {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&self, name: &str, password: &str, tags: &[&str]) {
        self.users.write().insert(
            name.to_string(),
            User {
                name: name.to_string(),
                password: Some(PasswordHash::new(password)),
                tags: tags.iter().map(|t| t.to_string()).collect(),
            },
        );
    }

    pub fn get(&self, name: &str) -> Option<User> {
        self.users.read().get(name).cloned()
    }

    /// The user, if the name exists and the password is right.
    pub fn authenticate(&self, name: &str, password: &str) -> Option<User> {
        let user = self.get(name)?;
        user.password.as_ref()?.verify(password).then_some(user)
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
    fn authenticate() {
        let users = Users::new();
        users.add("guest", "guest", &["administrator"]);
        assert!(users.authenticate("guest", "guest").is_some());
        assert!(users.authenticate("guest", "nope").is_none());
        assert!(users.authenticate("nobody", "guest").is_none());
    }
}
