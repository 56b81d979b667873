//! Sessions of the web UI: a login with a user's name and password yields a token that
//! later requests carry as `Authorization: Bearer <token>`, so the browser never keeps the
//! password. A token names its user and its expiry and is signed (HMAC-SHA256) with the
//! node's session key over those and the user's stored password hash: a changed
//! password, a removed user or an expired token is refused without any state kept per
//! session. The key lives in the data directory, so a session outlives a restart of the
//! broker; logging out revokes the token until its expiry (in memory: a token logged out
//! of and then used after a restart works until it expires, see docs/management.md).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use parking_lot::Mutex;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use wharf_core::User;

/// How long a session lasts from its login: RabbitMQ's default login_session_timeout.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// The version prefix of Wharf's tokens.
const PREFIX: &str = "wharf1.";

const KEY_BYTES: usize = 32;

/// What a token says, before its signature.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Claims {
    /// The user's name.
    #[serde(rename = "u")]
    user: String,
    /// Seconds since the epoch at which it stops being accepted.
    #[serde(rename = "x")]
    expires: u64,
    /// A random identifier, which logging out revokes.
    #[serde(rename = "n")]
    nonce: String,
}

/// A token just issued.
#[derive(Debug)]
pub struct Issued {
    pub token: String,
    pub expires: u64,
}

/// Why a token is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a token of this node's, or tampered with, or its user's password changed.
    Invalid,
    Expired,
    LoggedOut,
}

/// The node's session key and the tokens logged out of.
pub struct Sessions {
    key: hmac::Key,
    /// Revoked nonces with their tokens' expiry, forgotten once expired.
    revoked: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The system's random source failing is not something a broker can go on without.
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source");
    bytes
}

impl Sessions {
    /// Sessions signed with a fresh key, which no other run of the broker knows.
    pub fn ephemeral() -> Sessions {
        Sessions::with_key(&random_bytes::<KEY_BYTES>())
    }

    fn with_key(key: &[u8]) -> Sessions {
        Sessions {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            revoked: Mutex::new(HashMap::new()),
        }
    }

    /// Sessions signed with the key kept in `path`, made (readable by the owner only)
    /// when missing.
    pub fn load_or_create(path: &Path) -> std::io::Result<Sessions> {
        match std::fs::read(path) {
            Ok(key) if key.len() == KEY_BYTES => return Ok(Sessions::with_key(&key)),
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a session key ({KEY_BYTES} bytes)",
                        path.display()
                    ),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let key = random_bytes::<KEY_BYTES>();
        let staging = path.with_extension("new");
        {
            let mut file = std::fs::OpenOptions::new();
            file.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
            let mut file = file.open(&staging)?;
            file.write_all(&key)?;
            file.sync_all()?;
        }
        std::fs::rename(&staging, path)?;
        Ok(Sessions::with_key(&key))
    }

    /// A token for `user`, who has just proved their password.
    pub fn issue(&self, user: &User) -> Issued {
        self.issue_at(user, now())
    }

    fn issue_at(&self, user: &User, at: u64) -> Issued {
        let claims = Claims {
            user: user.name.clone(),
            expires: at + LIFETIME.as_secs(),
            nonce: URL_SAFE_NO_PAD.encode(random_bytes::<16>()),
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signature = hmac::sign(&self.key, &Sessions::signed(&payload, user));
        let signature = URL_SAFE_NO_PAD.encode(signature.as_ref());
        Issued {
            token: format!("{PREFIX}{payload}.{signature}"),
            expires: claims.expires,
        }
    }

    /// What a token's signature is over: its payload and the user's password hash, so a
    /// new password ends every session of the old one.
    fn signed(payload: &str, user: &User) -> Vec<u8> {
        let mut message = payload.as_bytes().to_vec();
        message.push(b'.');
        if let Some(password) = &user.password {
            message.extend_from_slice(&password.salted_digest);
        }
        message
    }

    /// The name of the user a token was issued to, read without checking it: the caller
    /// looks the user up and passes them to [`Sessions::verify`].
    pub fn user_of(token: &str) -> Option<String> {
        Some(Sessions::parse(token)?.1.user)
    }

    fn parse(token: &str) -> Option<(&str, Claims, Vec<u8>)> {
        let rest = token.strip_prefix(PREFIX)?;
        let (payload, signature) = rest.split_once('.')?;
        let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        Some((payload, claims, signature))
    }

    /// Checks a token against the user it names, as they are now.
    pub fn verify(&self, token: &str, user: &User) -> Result<(), Refusal> {
        self.verify_at(token, user, now())
    }

    fn verify_at(&self, token: &str, user: &User, at: u64) -> Result<(), Refusal> {
        let (payload, claims, signature) = Sessions::parse(token).ok_or(Refusal::Invalid)?;
        if claims.user != user.name || user.password.is_none() {
            return Err(Refusal::Invalid);
        }
        // ring compares signatures in constant time.
        hmac::verify(&self.key, &Sessions::signed(payload, user), &signature)
            .map_err(|_| Refusal::Invalid)?;
        if claims.expires <= at {
            return Err(Refusal::Expired);
        }
        if self.revoked.lock().contains_key(&claims.nonce) {
            return Err(Refusal::LoggedOut);
        }
        Ok(())
    }

    /// Ends the session of a token (one already checked by [`Sessions::verify`]).
    pub fn revoke(&self, token: &str) {
        let at = now();
        if let Some((_, claims, _)) = Sessions::parse(token) {
            let mut revoked = self.revoked.lock();
            revoked.retain(|_, expires| *expires > at);
            revoked.insert(claims.nonce, claims.expires);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(password: &str) -> User {
        User::new("ann", Some(password), vec!["management".into()])
    }

    #[test]
    fn a_token_is_accepted_for_its_user_until_it_expires() {
        let sessions = Sessions::ephemeral();
        let ann = user("secret");
        let issued = sessions.issue_at(&ann, 1000);
        assert_eq!(issued.expires, 1000 + LIFETIME.as_secs());
        assert!(!issued.token.contains("secret"));
        assert_eq!(Sessions::user_of(&issued.token).as_deref(), Some("ann"));
        assert_eq!(sessions.verify_at(&issued.token, &ann, 1001), Ok(()));
        assert_eq!(
            sessions.verify_at(&issued.token, &ann, issued.expires),
            Err(Refusal::Expired)
        );
    }

    #[test]
    fn a_new_password_or_another_key_refuses_the_token() {
        let sessions = Sessions::ephemeral();
        let ann = user("secret");
        let issued = sessions.issue_at(&ann, 1000);
        assert_eq!(
            sessions.verify_at(&issued.token, &user("secret"), 1001),
            Err(Refusal::Invalid),
            "the same password hashed again (a new salt) is a new password"
        );
        assert_eq!(
            Sessions::ephemeral().verify_at(&issued.token, &ann, 1001),
            Err(Refusal::Invalid)
        );
        let mut bob = ann.clone();
        bob.name = "bob".into();
        assert_eq!(
            sessions.verify_at(&issued.token, &bob, 1001),
            Err(Refusal::Invalid)
        );
    }

    #[test]
    fn a_tampered_or_malformed_token_is_refused() {
        let sessions = Sessions::ephemeral();
        let ann = user("secret");
        let issued = sessions.issue_at(&ann, 1000);
        let (payload, signature) = issued.token[PREFIX.len()..].split_once('.').unwrap();
        let longer = Claims {
            user: "ann".into(),
            expires: u64::MAX,
            nonce: "x".into(),
        };
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&longer).unwrap());
        for token in [
            format!("{PREFIX}{forged}.{signature}"),
            format!("{PREFIX}{payload}.AAAA"),
            format!("{PREFIX}{payload}"),
            format!("{PREFIX}!!.{signature}"),
            String::new(),
            "Basic Z3Vlc3Q6Z3Vlc3Q=".into(),
        ] {
            assert_eq!(
                sessions.verify_at(&token, &ann, 1001),
                Err(Refusal::Invalid),
                "{token}"
            );
        }
    }

    #[test]
    fn a_revoked_token_is_refused_and_others_are_not() {
        let sessions = Sessions::ephemeral();
        let ann = user("secret");
        let first = sessions.issue(&ann);
        let second = sessions.issue(&ann);
        sessions.revoke(&first.token);
        assert_eq!(sessions.verify(&first.token, &ann), Err(Refusal::LoggedOut));
        assert_eq!(sessions.verify(&second.token, &ann), Ok(()));
    }

    #[test]
    fn the_key_file_is_made_once_and_read_back() {
        let dir = std::env::temp_dir().join(format!("wharf-session-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("http-session.key");
        let _ = std::fs::remove_file(&path);
        let ann = user("secret");
        let token = Sessions::load_or_create(&path).unwrap().issue(&ann).token;
        let again = Sessions::load_or_create(&path).unwrap();
        assert_eq!(again.verify(&token, &ann), Ok(()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "only the owner reads the key");
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(Sessions::load_or_create(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
