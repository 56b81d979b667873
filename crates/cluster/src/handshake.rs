//! How two nodes prove to each other that they share the cluster's secret, without
//! sending it: each sends a fresh random nonce, and each answers with an HMAC-SHA256,
//! keyed by the secret, over both nonces and both node ids, the two answers labelled
//! differently so that neither can be replayed as the other. A node that cannot prove it
//! is refused with a line that says so, on both sides.
//!
//! ```text
//! dialer                                   listener
//!   WHRF, version ───────────────────────►  (a stranger or another version: Refused)
//!   Hello {id, name, address, nonce_d} ──►
//!            ◄── Challenge {id, name, nonce_l, proof_l = HMAC("listener", ...)}
//!   (checks proof_l)
//!   Proof {proof_d = HMAC("dialer", ...)} ►  (checks proof_d)
//!            ◄───────────────────────────── Welcome
//! ```

use std::time::Duration;

use bytes::BytesMut;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::{NodeId, Secret};
use crate::wire::{self, Frame, FrameKind, WireError, PREAMBLE_BYTES};

/// A handshake that takes longer than this is abandoned (a peer that stalls, or a port
/// scanner, does not hold a task forever).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const NONCE_BYTES: usize = 32;

/// Who a node says it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introduction {
    pub node_id: NodeId,
    pub name: String,
    /// Its cluster address, as the other nodes reach it.
    pub address: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    node: Introduction,
    nonce: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Challenge {
    node: Introduction,
    nonce: String,
    proof: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Proof {
    proof: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("connection lost during the handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer did not finish the handshake within {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    #[error("the peer does not know the cluster secret (its proof does not match); check --cluster-secret-file on both nodes")]
    WrongSecret,
    #[error("the peer refused this node: {0}")]
    Refused(String),
    #[error("the peer broke the handshake: {0}")]
    Protocol(String),
}

fn random_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("the system's random source works");
    nonce
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, HandshakeError> {
    if !text.len().is_multiple_of(2) || text.len() > 256 {
        return Err(HandshakeError::Protocol(
            "a nonce or proof of a bad length".into(),
        ));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .map_err(|_| HandshakeError::Protocol("a nonce or proof that is not hex".into()))
        })
        .collect()
}

/// What each side signs: its role, both nonces and both ids, the dialer's first.
fn transcript(
    role: &str,
    dialer_nonce: &[u8],
    listener_nonce: &[u8],
    dialer: NodeId,
    listener: NodeId,
) -> Vec<u8> {
    let mut data = Vec::with_capacity(16 + 2 * NONCE_BYTES + 16);
    data.extend_from_slice(b"wharf-cluster-");
    data.extend_from_slice(role.as_bytes());
    data.push(0);
    data.extend_from_slice(dialer_nonce);
    data.extend_from_slice(listener_nonce);
    data.extend_from_slice(&dialer.to_be_bytes());
    data.extend_from_slice(&listener.to_be_bytes());
    data
}

fn sign(secret: &Secret, data: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.bytes());
    hex(hmac::sign(&key, data).as_ref())
}

fn verify(secret: &Secret, data: &[u8], proof: &str) -> Result<(), HandshakeError> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.bytes());
    hmac::verify(&key, data, &unhex(proof)?).map_err(|_| HandshakeError::WrongSecret)
}

/// Reads frames off a stream during the handshake.
struct Reader<'a, S> {
    stream: &'a mut S,
    buffer: BytesMut,
}

impl<S: AsyncRead + Unpin> Reader<'_, S> {
    async fn frame(&mut self) -> Result<Frame, HandshakeError> {
        loop {
            if let Some(frame) = wire::decode_frame(&mut self.buffer)? {
                if frame.kind == FrameKind::Refused {
                    let reason = String::from_utf8_lossy(&frame.payload).into_owned();
                    return Err(HandshakeError::Refused(reason));
                }
                return Ok(frame);
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Err(HandshakeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    async fn message<T: for<'de> Deserialize<'de>>(
        &mut self,
        kind: FrameKind,
    ) -> Result<T, HandshakeError> {
        let frame = self.frame().await?;
        if frame.kind != kind {
            return Err(HandshakeError::Protocol(format!(
                "expected {kind:?}, got {:?}",
                frame.kind
            )));
        }
        serde_json::from_slice(&frame.payload)
            .map_err(|e| HandshakeError::Protocol(format!("a {kind:?} that does not read: {e}")))
    }
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    kind: FrameKind,
    message: &impl Serialize,
) -> Result<(), HandshakeError> {
    let payload = serde_json::to_vec(message).expect("handshake messages serialize");
    let mut out = BytesMut::new();
    wire::encode_frame(&mut out, kind, 0, &payload);
    stream.write_all(&out).await?;
    Ok(())
}

/// Tells the peer why it is refused, as the last thing on the connection.
pub async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, reason: &str) {
    let mut out = BytesMut::new();
    wire::encode_frame(&mut out, FrameKind::Refused, 0, reason.as_bytes());
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// The dialer's side: returns the listener's introduction once each side proved itself,
/// and whatever bytes already followed the handshake.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    me: &Introduction,
    secret: &Secret,
) -> Result<(Introduction, BytesMut), HandshakeError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut preamble = BytesMut::new();
        wire::encode_preamble(&mut preamble);
        stream.write_all(&preamble).await?;
        let nonce = random_nonce();
        send(
            stream,
            FrameKind::Hello,
            &Hello {
                node: me.clone(),
                nonce: hex(&nonce),
            },
        )
        .await?;
        let mut reader = Reader {
            stream: &mut *stream,
            buffer: BytesMut::new(),
        };
        let challenge: Challenge = reader.message(FrameKind::Challenge).await?;
        let their_nonce = unhex(&challenge.nonce)?;
        let listener = challenge.node.node_id;
        verify(
            secret,
            &transcript("listener", &nonce, &their_nonce, me.node_id, listener),
            &challenge.proof,
        )?;
        let proof = sign(
            secret,
            &transcript("dialer", &nonce, &their_nonce, me.node_id, listener),
        );
        let buffer = std::mem::take(&mut reader.buffer);
        send(stream, FrameKind::Proof, &Proof { proof }).await?;
        let mut reader = Reader { stream, buffer };
        let welcome = reader.frame().await?;
        if welcome.kind != FrameKind::Welcome {
            return Err(HandshakeError::Protocol(format!(
                "expected Welcome, got {:?}",
                welcome.kind
            )));
        }
        Ok((challenge.node, reader.buffer))
    })
    .await
    .map_err(|_| HandshakeError::Timeout)?
}

/// The listener's side: returns the dialer's introduction once each side proved itself,
/// and whatever bytes already followed the handshake. A stranger, another version or a
/// wrong secret is told why before the connection closes.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    me: &Introduction,
    secret: &Secret,
) -> Result<(Introduction, BytesMut), HandshakeError> {
    let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut preamble = [0u8; PREAMBLE_BYTES];
        stream.read_exact(&mut preamble).await?;
        wire::check_preamble(&preamble)?;
        let mut reader = Reader {
            stream: &mut *stream,
            buffer: BytesMut::new(),
        };
        let hello: Hello = reader.message(FrameKind::Hello).await?;
        let their_nonce = unhex(&hello.nonce)?;
        let nonce = random_nonce();
        let dialer = hello.node.node_id;
        let proof = sign(
            secret,
            &transcript("listener", &their_nonce, &nonce, dialer, me.node_id),
        );
        let buffer = std::mem::take(&mut reader.buffer);
        send(
            stream,
            FrameKind::Challenge,
            &Challenge {
                node: me.clone(),
                nonce: hex(&nonce),
                proof,
            },
        )
        .await?;
        let mut reader = Reader {
            stream: &mut *stream,
            buffer,
        };
        let answer: Proof = reader.message(FrameKind::Proof).await?;
        let buffer = std::mem::take(&mut reader.buffer);
        verify(
            secret,
            &transcript("dialer", &their_nonce, &nonce, dialer, me.node_id),
            &answer.proof,
        )?;
        let mut out = BytesMut::new();
        wire::encode_frame(&mut out, FrameKind::Welcome, 0, b"");
        stream.write_all(&out).await?;
        Ok((hello.node, buffer))
    })
    .await
    .map_err(|_| HandshakeError::Timeout)
    .and_then(|inner| inner);
    if let Err(error) = &outcome {
        let reason = match error {
            HandshakeError::WrongSecret => {
                Some("this node does not share your cluster secret".to_string())
            }
            HandshakeError::Wire(wire) => Some(wire.to_string()),
            HandshakeError::Protocol(text) => Some(text.clone()),
            _ => None,
        };
        if let Some(reason) = reason {
            refuse(stream, &reason).await;
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId) -> Introduction {
        Introduction {
            node_id: id,
            name: format!("n{id}"),
            address: format!("127.0.0.1:{id}"),
        }
    }

    fn secret(text: &str) -> Secret {
        Secret::from_bytes(text.as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn nodes_with_one_secret_learn_who_the_other_is() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let shared = secret("the same secret, long enough");
        let (one, two) = (node(1), node(2));
        let (dialed, accepted) =
            tokio::join!(dial(&mut a, &one, &shared), accept(&mut b, &two, &shared));
        assert_eq!(dialed.unwrap().0, node(2));
        assert_eq!(accepted.unwrap().0, node(1));
    }

    #[tokio::test]
    async fn a_wrong_secret_is_found_out_by_both_sides() {
        let (a, mut b) = tokio::io::duplex(4096);
        let (one, two) = (node(1), node(2));
        let (mine, theirs) = (
            secret("the dialer's own secret"),
            secret("the listener's secret!"),
        );
        let dialer = async move {
            // The dialer hangs up once it found out, as the transport does.
            let mut a = a;
            dial(&mut a, &one, &mine).await
        };
        let (dialed, accepted) = tokio::join!(dialer, accept(&mut b, &two, &theirs));
        // The dialer checks the listener's proof first, and gives up before proving
        // anything; the listener sees the connection end without a proof.
        assert!(
            matches!(dialed, Err(HandshakeError::WrongSecret)),
            "{dialed:?}"
        );
        assert!(accepted.is_err());
    }

    #[tokio::test]
    async fn a_dialer_without_the_secret_cannot_replay_the_listeners_proof() {
        // A dialer that skips the check and answers with the proof it was given.
        let (mut a, mut b) = tokio::io::duplex(4096);
        let shared = secret("the listener's real secret");
        let listener = tokio::spawn(async move { accept(&mut b, &node(2), &shared).await });
        let mut preamble = BytesMut::new();
        wire::encode_preamble(&mut preamble);
        a.write_all(&preamble).await.unwrap();
        send(
            &mut a,
            FrameKind::Hello,
            &Hello {
                node: node(1),
                nonce: hex(&random_nonce()),
            },
        )
        .await
        .unwrap();
        let mut reader = Reader {
            stream: &mut a,
            buffer: BytesMut::new(),
        };
        let challenge: Challenge = reader.message(FrameKind::Challenge).await.unwrap();
        send(
            &mut a,
            FrameKind::Proof,
            &Proof {
                proof: challenge.proof,
            },
        )
        .await
        .unwrap();
        let accepted = listener.await.unwrap();
        assert!(
            matches!(accepted, Err(HandshakeError::WrongSecret)),
            "{accepted:?}"
        );
        let mut reader = Reader {
            stream: &mut a,
            buffer: BytesMut::new(),
        };
        match reader.frame().await {
            Err(HandshakeError::Refused(reason)) => assert!(reason.contains("secret"), "{reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_stranger_is_told_what_it_reached() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let shared = secret("the same secret, long enough");
        let listener = tokio::spawn(async move { accept(&mut b, &node(2), &shared).await });
        a.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
        let mut reader = Reader {
            stream: &mut a,
            buffer: BytesMut::new(),
        };
        match reader.frame().await {
            Err(HandshakeError::Refused(reason)) => {
                assert!(reason.contains("not a Wharf cluster node"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(listener.await.unwrap().is_err());
    }
}
