//! A minimal AMQP 0-9-1 client for the load generator: connect and log in, open channel 1,
//! and run the synchronous setup methods (declare, bind, qos, consume, confirm.select).
//! The hot paths (publishing, consuming) then use the socket directly; see producer.rs
//! and consumer.rs.

use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf_amqp::frame::{encode_method, PROTOCOL_HEADER};
use wharf_amqp::{ByteString, FieldTable, FieldValue, Frame, FramePayload, Method};

use crate::uri::AmqpUri;

/// The channel every perf connection uses.
pub const CHANNEL: u16 = 1;
/// Frame size perf asks for (the broker may lower it).
const FRAME_MAX: u32 = 131_072;

pub struct Client {
    pub stream: TcpStream,
    /// Bytes read but not yet decoded.
    pub buffer: BytesMut,
    pub frame_max: u32,
}

fn client_properties(name: &str) -> FieldTable {
    let mut capabilities = FieldTable::default();
    for capability in [
        "publisher_confirms",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
    ] {
        capabilities.insert(capability, FieldValue::Bool(true));
    }
    let mut properties = FieldTable::default();
    properties.insert(
        "product",
        FieldValue::LongStr(bytes::Bytes::from_static(b"wharf perf")),
    );
    properties.insert(
        "connection_name",
        FieldValue::LongStr(bytes::Bytes::copy_from_slice(name.as_bytes())),
    );
    properties.insert("capabilities", FieldValue::Table(capabilities));
    properties
}

/// Describes a close the broker sent, as an error.
fn closed(code: u16, text: &ByteString, during: &str) -> anyhow::Error {
    anyhow!("the broker closed the connection {during}: {code} {text}")
}

impl Client {
    /// Connects, logs in with PLAIN and opens channel 1.
    pub async fn connect(uri: &AmqpUri, name: &str) -> anyhow::Result<Client> {
        let address = format!("{}:{}", uri.host, uri.port);
        let address = if uri.host.contains(':') {
            format!("[{}]:{}", uri.host, uri.port)
        } else {
            address
        };
        let stream = TcpStream::connect(&address)
            .await
            .with_context(|| format!("cannot connect to {address}"))?;
        stream.set_nodelay(true)?;
        let mut client = Client {
            stream,
            buffer: BytesMut::with_capacity(1 << 16),
            frame_max: FRAME_MAX,
        };
        client.stream.write_all(PROTOCOL_HEADER).await?;
        let during = "at connection start";
        match client.read_method(during).await? {
            Method::ConnectionStart(start) => {
                let offered = String::from_utf8_lossy(&start.mechanisms).into_owned();
                if !offered.split(' ').any(|m| m == "PLAIN") {
                    bail!("the broker does not offer PLAIN login (it offers: {offered})");
                }
            }
            other => bail!("expected connection.start, got {}", other.name()),
        }
        let mut response = Vec::new();
        response.put_u8(0);
        response.put_slice(uri.user.as_bytes());
        response.put_u8(0);
        response.put_slice(uri.password.as_bytes());
        client
            .send(&Method::ConnectionStartOk(Box::new(
                wharf_amqp::ConnectionStartOk {
                    client_properties: client_properties(name),
                    mechanism: "PLAIN".into(),
                    response: response.into(),
                    locale: "en_US".into(),
                },
            )))
            .await?;
        let during = "during login";
        let tune = match client.read_method(during).await {
            Ok(Method::ConnectionTune(tune)) => tune,
            Ok(other) => bail!("expected connection.tune, got {}", other.name()),
            Err(e) if e.to_string().contains("closed the socket") => {
                bail!(
                    "the broker refused the login of '{}' (wrong user or password?)",
                    uri.user
                )
            }
            Err(e) => return Err(e),
        };
        client.frame_max = match tune.frame_max {
            0 => FRAME_MAX,
            max => max.min(FRAME_MAX),
        };
        client
            .send(&Method::ConnectionTuneOk(wharf_amqp::ConnectionTuneOk {
                channel_max: 1,
                frame_max: client.frame_max,
                heartbeat: 0,
            }))
            .await?;
        client
            .send(&Method::ConnectionOpen(wharf_amqp::ConnectionOpen {
                virtual_host: uri.vhost.as_str().into(),
            }))
            .await?;
        match client.read_method("when opening the vhost").await? {
            Method::ConnectionOpenOk(_) => {}
            other => bail!("expected connection.open-ok, got {}", other.name()),
        }
        client.rpc(Method::ChannelOpen(Default::default())).await?;
        Ok(client)
    }

    pub async fn send(&mut self, method: &Method) -> anyhow::Result<()> {
        let channel = match method {
            Method::ConnectionStartOk(_)
            | Method::ConnectionTuneOk(_)
            | Method::ConnectionOpen(_)
            | Method::ConnectionClose(_)
            | Method::ConnectionCloseOk(_) => 0,
            _ => CHANNEL,
        };
        let mut out = BytesMut::new();
        encode_method(channel, method, &mut out);
        self.stream
            .write_all(&out)
            .await
            .context("cannot write to the broker")
    }

    /// Reads the next frame (heartbeats skipped).
    async fn read_frame(&mut self, during: &str) -> anyhow::Result<Frame> {
        loop {
            if let Some(frame) = Frame::decode(&mut self.buffer, self.frame_max)
                .map_err(|e| anyhow!("the broker sent a malformed frame {during}: {e}"))?
            {
                if frame.payload != FramePayload::Heartbeat {
                    return Ok(frame);
                }
                continue;
            }
            let read = self
                .stream
                .read_buf(&mut self.buffer)
                .await
                .with_context(|| format!("cannot read from the broker {during}"))?;
            if read == 0 {
                bail!("the broker closed the socket {during}");
            }
        }
    }

    /// Reads the next method; a connection.close or channel.close becomes an error.
    async fn read_method(&mut self, during: &str) -> anyhow::Result<Method> {
        loop {
            let frame = self.read_frame(during).await?;
            let FramePayload::Method(method) = frame.payload else {
                continue; // content of a message delivered early: not for setup
            };
            return match method {
                Method::ConnectionClose(close) => {
                    let _ = self
                        .send(&Method::ConnectionCloseOk(Default::default()))
                        .await;
                    Err(closed(close.reply_code, &close.reply_text, during))
                }
                Method::ChannelClose(close) => Err(anyhow!(
                    "the broker closed the channel {during}: {} {}",
                    close.reply_code,
                    close.reply_text
                )),
                method => Ok(method),
            };
        }
    }

    /// Sends a synchronous method and returns its reply.
    pub async fn rpc(&mut self, method: Method) -> anyhow::Result<Method> {
        let during = format!("in reply to {}", method.name());
        self.send(&method).await?;
        self.read_method(&during).await
    }

    /// Closes the connection politely, waiting for close-ok (briefly).
    pub async fn close(mut self) {
        let close = Method::ConnectionClose(wharf_amqp::ConnectionClose {
            reply_code: 200,
            reply_text: "perf done".into(),
            ..Default::default()
        });
        if self.send(&close).await.is_err() {
            return;
        }
        let wait = async {
            loop {
                match self.read_frame("at close").await {
                    Ok(Frame {
                        payload: FramePayload::Method(Method::ConnectionCloseOk(_)),
                        ..
                    })
                    | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), wait).await;
    }
}
