//! A bare AMQP client over a TCP socket, for what no client library will send: wrong
//! protocol headers, malformed or oversized frames, methods out of order. Valid frames are
//! encoded with Wharf's codec; the real client libraries check the codec independently.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf_amqp::frame::{encode_body, encode_content_header, encode_method, PROTOCOL_HEADER};
use wharf_amqp::*;

/// How long a raw client waits for the broker before failing the test.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RawClient {
    pub socket: TcpStream,
    buffer: BytesMut,
    /// A frame from the broker that does not decode fails the test (the default). RabbitMQ
    /// echoes a client's invalid bytes back in reply texts; tests that send such bytes to
    /// it turn this off and treat the frame as the end of the connection.
    pub strict: bool,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let socket = TcpStream::connect(addr).await.expect("connect");
        socket.set_nodelay(true).expect("nodelay");
        RawClient {
            socket,
            buffer: BytesMut::new(),
            strict: true,
        }
    }

    /// Connects and completes the handshake as guest on vhost "/" (heartbeats off).
    pub async fn open(addr: SocketAddr) -> RawClient {
        RawClient::open_with(addr, FieldTable::new()).await
    }

    /// `open`, announcing these client properties (capabilities, for instance).
    pub async fn open_with(addr: SocketAddr, client_properties: FieldTable) -> RawClient {
        let (mut client, tune) = RawClient::until_tune(addr, client_properties).await;
        client
            .tune_and_open(ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: 0,
            })
            .await;
        let open_ok = client.read_method().await;
        assert!(
            matches!(open_ok, Method::ConnectionOpenOk(_)),
            "{open_ok:?}"
        );
        client
    }

    /// The handshake up to the broker's connection.tune: the protocol header, then
    /// start-ok as guest with these client properties.
    pub async fn until_tune(
        addr: SocketAddr,
        client_properties: FieldTable,
    ) -> (RawClient, ConnectionTune) {
        RawClient::until_tune_as(addr, client_properties, "guest", "guest").await
    }

    /// `until_tune`, logging in as `user`.
    pub async fn until_tune_as(
        addr: SocketAddr,
        client_properties: FieldTable,
        user: &str,
        password: &str,
    ) -> (RawClient, ConnectionTune) {
        let mut client = RawClient::connect(addr).await;
        client.send_raw(PROTOCOL_HEADER).await;
        let start = client.read_method().await;
        assert!(matches!(start, Method::ConnectionStart(_)), "{start:?}");
        client
            .send_method(
                0,
                ConnectionStartOk {
                    client_properties,
                    mechanism: "PLAIN".into(),
                    response: Bytes::from(format!("\0{user}\0{password}")),
                    locale: "en_US".into(),
                },
            )
            .await;
        let tune = client.read_method().await;
        let Method::ConnectionTune(tune) = tune else {
            panic!("expected tune, got {tune:?}")
        };
        (client, tune)
    }

    /// Sends `tune_ok`, then connection.open of vhost "/"; the broker's answer is the
    /// caller's to read.
    pub async fn tune_and_open(&mut self, tune_ok: ConnectionTuneOk) {
        self.tune_and_open_vhost(tune_ok, "/").await
    }

    /// `tune_and_open`, of `vhost`.
    pub async fn tune_and_open_vhost(&mut self, tune_ok: ConnectionTuneOk, vhost: &str) {
        self.send_method(0, tune_ok).await;
        self.send_method(
            0,
            ConnectionOpen {
                virtual_host: vhost.into(),
            },
        )
        .await;
    }

    /// `open`, then channel 1 opened.
    pub async fn open_with_channel(addr: SocketAddr) -> RawClient {
        let mut client = RawClient::open(addr).await;
        client.send_method(1, ChannelOpen {}).await;
        let ok = client.read_method().await;
        assert!(matches!(ok, Method::ChannelOpenOk(_)), "{ok:?}");
        client
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).await.expect("write");
    }

    pub async fn send_method(&mut self, channel: u16, method: impl Into<Method>) {
        let mut out = BytesMut::new();
        encode_method(channel, &method.into(), &mut out);
        self.send_raw(&out).await;
    }

    /// basic.publish with its header and body frames, in one write.
    pub async fn publish(&mut self, channel: u16, exchange: &str, routing_key: &str, body: &[u8]) {
        let mut out = BytesMut::new();
        let publish = Method::BasicPublish(BasicPublish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory: false,
            immediate: false,
        });
        encode_method(channel, &publish, &mut out);
        let header = ContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties: Default::default(),
        };
        encode_content_header(channel, &header, &mut out);
        encode_body(channel, body, 131072, &mut out);
        self.send_raw(&out).await;
    }

    /// The next frame, or None when the broker closed the socket.
    pub async fn read_frame(&mut self) -> Option<Frame> {
        let read = async {
            loop {
                match Frame::decode(&mut self.buffer, 0) {
                    Ok(Some(frame)) => return Some(frame),
                    Ok(None) => {}
                    Err(e) if self.strict => panic!("broker sent a malformed frame: {e}"),
                    Err(_) => return None,
                }
                match self.socket.read_buf(&mut self.buffer).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(REPLY_TIMEOUT, read)
            .await
            .expect("broker did not answer in time")
    }

    /// The next method frame (heartbeats and content skipped).
    pub async fn read_method(&mut self) -> Method {
        loop {
            match self.read_frame().await {
                Some(Frame {
                    payload: FramePayload::Method(m),
                    ..
                }) => return m,
                Some(_) => continue,
                None => panic!("broker closed the socket while a method was expected"),
            }
        }
    }

    /// Reads until connection.close; answers close-ok; returns (code, text).
    pub async fn expect_connection_close(&mut self) -> (u16, String) {
        loop {
            match self.read_frame().await {
                Some(Frame {
                    payload: FramePayload::Method(Method::ConnectionClose(close)),
                    ..
                }) => {
                    self.send_method(0, ConnectionCloseOk {}).await;
                    return (close.reply_code, close.reply_text.to_string());
                }
                Some(_) => continue,
                None => panic!("socket closed without connection.close"),
            }
        }
    }

    /// Closes `channel` normally and waits for the broker's close-ok.
    pub async fn close_channel(&mut self, channel: u16) {
        let close = ChannelClose {
            reply_code: 200,
            reply_text: "".into(),
            class_id: 0,
            method_id: 0,
        };
        self.send_method(channel, close).await;
        let ok = self.read_method().await;
        assert_eq!(ok, Method::ChannelCloseOk(ChannelCloseOk {}));
    }

    /// Reads until channel.close on `channel`; answers close-ok; returns (code, text).
    pub async fn expect_channel_close(&mut self, channel: u16) -> (u16, String) {
        loop {
            let frame = self.read_frame().await.expect("socket closed");
            if let (true, FramePayload::Method(Method::ChannelClose(close))) =
                (frame.channel == channel, &frame.payload)
            {
                self.send_method(channel, ChannelCloseOk {}).await;
                return (close.reply_code, close.reply_text.to_string());
            }
        }
    }

    /// True when the broker closes the socket (reads EOF) within the timeout.
    pub async fn closed_by_broker(&mut self) -> bool {
        let mut scratch = [0u8; 1024];
        let wait = async {
            loop {
                match self.socket.read(&mut scratch).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(REPLY_TIMEOUT, wait)
            .await
            .unwrap_or(false)
    }
}
