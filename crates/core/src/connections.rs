//! The open client connections, whatever their protocol: who they are, where, and how to
//! close one. Administration closes connections through it (a deleted vhost's or
//! user's); limits count them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::queue::ConnectionId;

/// Asks a connection to close, with the reason to give its client (320
/// CONNECTION_FORCED). The connection closes on its own task.
pub type Closer = Box<dyn Fn(&str) + Send + Sync>;

/// Bytes a connection has received and sent, counted by its reader and writer (one add
/// per read or write, not per frame).
#[derive(Debug, Default)]
pub struct Traffic {
    pub received_bytes: AtomicU64,
    pub sent_bytes: AtomicU64,
}

impl Traffic {
    pub fn received(&self, bytes: usize) {
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn sent(&self, bytes: usize) {
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// A TLS connection's protocol, cipher suite and client certificate, in RabbitMQ's terms
/// (`ssl_protocol` "tlsv1.3", `ssl_key_exchange`, `ssl_cipher`, `ssl_hash`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsDetails {
    pub protocol: String,
    pub key_exchange: String,
    pub cipher: String,
    pub hash: String,
    /// The client certificate's subject and issuer (RFC 4514 text), when it gave one.
    pub peer_subject: Option<String>,
    pub peer_issuer: Option<String>,
    /// Its validity, as RabbitMQ shows it: "2026-01-01T00:00:00Z - 2027-01-01T00:00:00Z".
    pub peer_validity: Option<String>,
}

/// Who a connection is, as it was opened: what management lists of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionDetails {
    pub user: String,
    pub vhost: String,
    /// The client's address.
    pub peer: String,
    /// The broker's address it connected to.
    pub local: String,
    /// What TLS it came over, if it did.
    pub tls: Option<TlsDetails>,
    /// From the client's properties: `product`, `version`, `platform`, and the name the
    /// application gave the connection (`connection_name`), when it sent them.
    pub client_product: String,
    pub client_version: String,
    pub client_platform: String,
    pub client_connection_name: String,
    /// When it was opened, in milliseconds since the epoch.
    pub connected_at_ms: u64,
}

/// One channel as management sees it (RabbitMQ's list_channels).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelStats {
    pub number: u16,
    pub confirm: bool,
    pub transactional: bool,
    pub consumers: u32,
    pub messages_unacknowledged: u64,
    /// The prefetch given to consumers created from now on (basic.qos, global=false).
    pub prefetch_count: u16,
    /// The channel-wide limit (basic.qos, global=true).
    pub global_prefetch_count: u16,
    /// Messages published on it.
    pub published: u64,
    /// Deliveries and gets.
    pub delivered: u64,
    /// Deliveries acknowledged.
    pub acked: u64,
    /// Publishes confirmed (basic.ack to a publisher in confirm mode).
    pub confirmed: u64,
    /// Publishes whose confirm waits (for the disk).
    pub unconfirmed: u64,
    /// Unroutable publishes returned (mandatory) and dropped.
    pub unroutable_returned: u64,
    pub unroutable_dropped: u64,
}

/// One consumer as management sees it (RabbitMQ's list_consumers).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsumerStats {
    pub queue: String,
    pub tag: String,
    pub ack_required: bool,
    pub prefetch_count: u16,
    /// Its deliveries not yet acknowledged.
    pub messages_unacknowledged: u32,
    pub exclusive: bool,
    pub arguments: wharf_amqp::FieldTable,
    /// Whether it gets deliveries (not when waiting behind a single active consumer).
    pub activity: crate::queue::consumer::ConsumerActivity,
}

/// Message counts of channels added up: of those closed since the broker started, and
/// (in [`Connections::message_totals`]) of the open ones too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageTotals {
    pub published: u64,
    pub delivered: u64,
    pub acked: u64,
    pub confirmed: u64,
    pub unroutable_returned: u64,
    pub unroutable_dropped: u64,
}

impl MessageTotals {
    fn add(&mut self, stats: &ChannelStats) {
        self.published += stats.published;
        self.delivered += stats.delivered;
        self.acked += stats.acked;
        self.confirmed += stats.confirmed;
        self.unroutable_returned += stats.unroutable_returned;
        self.unroutable_dropped += stats.unroutable_dropped;
    }
}

/// Messages published to an exchange, and how many of them it routed somewhere
/// (RabbitMQ's `publish_in` and `publish_out`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeCounts {
    pub published_in: u64,
    pub routed_out: u64,
}

impl ExchangeCounts {
    pub fn add(&mut self, other: &ExchangeCounts) {
        self.published_in += other.published_in;
        self.routed_out += other.routed_out;
    }
}

/// An exchange, by vhost and name.
pub type ExchangeKey = (String, String);

/// How many connections and channels were opened and closed since the broker started
/// (RabbitMQ's churn rates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Churn {
    pub connections_opened: u64,
    pub connections_closed: u64,
    pub channels_opened: u64,
    pub channels_closed: u64,
}

/// What closed channels leave behind: their counts, and the churn.
#[derive(Debug, Default)]
struct History {
    retired: MessageTotals,
    /// What closed channels published to each exchange.
    retired_exchanges: HashMap<ExchangeKey, ExchangeCounts>,
    churn: Churn,
}

/// A channel a protocol can describe: registered with its connection's [`Registration`].
pub trait ChannelView: Send + Sync {
    fn stats(&self) -> ChannelStats;
    fn consumers(&self) -> Vec<ConsumerStats>;
    /// What the channel published to each exchange (of its connection's vhost).
    fn exchanges(&self) -> Vec<(String, ExchangeCounts)> {
        Vec::new()
    }
}

/// A consumer as listed: its channel and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerSummary {
    pub connection: ConnectionId,
    pub channel: u16,
    pub vhost: String,
    pub consumer: ConsumerStats,
}

/// The channels of one connection, shared by its registration and its list entry.
type ChannelViews = Arc<Mutex<Vec<Arc<dyn ChannelView>>>>;

/// A channel as listed: its connection and its statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSummary {
    pub connection: ConnectionId,
    pub user: String,
    pub vhost: String,
    pub peer: String,
    pub stats: ChannelStats,
}

struct Entry {
    details: ConnectionDetails,
    views: ChannelViews,
    close: Closer,
    /// Its open channels (for users' max-channels).
    channels: Arc<AtomicUsize>,
    traffic: Arc<Traffic>,
    /// Held back from reading by a resource alarm (RabbitMQ's state "blocked").
    blocked: Arc<AtomicBool>,
}

/// What is known of an open connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionSummary {
    pub id: ConnectionId,
    pub details: ConnectionDetails,
    pub channels: usize,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    /// Held back by a resource alarm ("blocked"), or running.
    pub blocked: bool,
}

#[derive(Default)]
pub struct Connections {
    open: Mutex<HashMap<ConnectionId, Entry>>,
    history: Mutex<History>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connections({})", self.open.lock().len())
    }
}

/// Keeps a connection listed; dropping it takes the connection off the list.
#[must_use]
pub struct Registration {
    connections: Arc<Connections>,
    id: ConnectionId,
    vhost: String,
    blocked: Arc<AtomicBool>,
    channels: Arc<AtomicUsize>,
    views: ChannelViews,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registration({})", self.id)
    }
}

impl Registration {
    /// Notes whether a resource alarm holds the connection back from reading.
    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }

    /// Notes how many channels the connection has open.
    pub fn set_channels(&self, open: usize) {
        self.channels.store(open, Ordering::Relaxed);
    }

    /// Replaces the channels management sees with these (the connection's open ones).
    /// The counts of channels no longer among them are kept in the broker's totals, in
    /// the same step as they leave the list (see [`Connections::message_totals`]).
    pub fn set_channel_views(&self, views: Vec<Arc<dyn ChannelView>>) {
        let now: HashSet<*const ()> = views.iter().map(view_address).collect();
        let (opened, closed) = {
            let before = self.views.lock();
            let was: HashSet<*const ()> = before.iter().map(view_address).collect();
            let opened = now.difference(&was).count();
            let closed: Vec<Arc<dyn ChannelView>> = before
                .iter()
                .filter(|v| !now.contains(&view_address(v)))
                .cloned()
                .collect();
            (opened, closed)
        };
        let finals = Finals::of(&closed);
        let mut history = self.connections.history.lock();
        *self.views.lock() = views;
        history.retire(&self.vhost, opened, finals);
    }

    /// Counts one more open channel if its user's channels, over all their connections,
    /// stay within `max`; false if they would not. Counted and claimed under one lock, so
    /// channels opened at once on several connections cannot all slip under the limit.
    pub fn open_channel_within(&self, max: u64) -> bool {
        let open = self.connections.open.lock();
        let Some(user) = open.get(&self.id).map(|e| e.details.user.as_str()) else {
            return false;
        };
        let channels: usize = open
            .values()
            .filter(|e| e.details.user == user)
            .map(|e| e.channels.load(Ordering::Relaxed))
            .sum();
        if channels as u64 >= max {
            return false;
        }
        self.channels.fetch_add(1, Ordering::Relaxed);
        true
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let views = self.views.lock().clone();
        let finals = Finals::of(&views);
        let mut history = self.connections.history.lock();
        self.connections.open.lock().remove(&self.id);
        self.views.lock().clear();
        history.retire(&self.vhost, 0, finals);
        history.churn.connections_closed += 1;
    }
}

/// The address of a channel's view, to tell views apart whatever their vtable.
fn view_address(view: &Arc<dyn ChannelView>) -> *const () {
    Arc::as_ptr(view) as *const ()
}

/// The last counts of channels that closed, read before the history is locked.
struct Finals {
    stats: Vec<ChannelStats>,
    exchanges: Vec<(String, ExchangeCounts)>,
}

impl Finals {
    fn of(closed: &[Arc<dyn ChannelView>]) -> Finals {
        Finals {
            stats: closed.iter().map(|v| v.stats()).collect(),
            exchanges: closed.iter().flat_map(|v| v.exchanges()).collect(),
        }
    }
}

impl History {
    /// Counts channels opened, and keeps the counts of those closed.
    fn retire(&mut self, vhost: &str, opened: usize, finals: Finals) {
        self.churn.channels_opened += opened as u64;
        self.churn.channels_closed += finals.stats.len() as u64;
        for stats in &finals.stats {
            self.retired.add(stats);
        }
        for (exchange, counts) in finals.exchanges {
            self.retired_exchanges
                .entry((vhost.to_string(), exchange))
                .or_default()
                .add(&counts);
        }
    }
}

/// The open connections as one is about to be added, counted on demand (a count is a
/// pass over them all: only a limit that exists is worth it).
pub struct Census<'a> {
    open: &'a HashMap<ConnectionId, Entry>,
    vhost: &'a str,
    user: &'a str,
}

impl Census<'_> {
    pub fn total(&self) -> usize {
        self.open.len()
    }

    /// In the vhost the new connection opens.
    pub fn in_vhost(&self) -> usize {
        self.open
            .values()
            .filter(|e| e.details.vhost == self.vhost)
            .count()
    }

    /// Of the user the new connection is for.
    pub fn of_user(&self) -> usize {
        self.open
            .values()
            .filter(|e| e.details.user == self.user)
            .count()
    }
}

impl Connections {
    /// Lists a connection whatever the counts (tests; the broker uses [`Self::register_if`]).
    #[cfg(test)]
    pub fn register(
        self: &Arc<Self>,
        id: ConnectionId,
        details: ConnectionDetails,
        traffic: Arc<Traffic>,
        close: Closer,
    ) -> Registration {
        let admit_all = |_: Census<'_>| Ok::<(), std::convert::Infallible>(());
        match self.register_if(id, details, traffic, close, admit_all) {
            Ok(registration) => registration,
            Err(never) => match never {},
        }
    }

    /// Lists the connection if `admit` agrees, given the counts as they are: the count
    /// and the listing happen under one lock, so connections opening at once cannot all
    /// slip under a limit.
    pub fn register_if<E>(
        self: &Arc<Self>,
        id: ConnectionId,
        details: ConnectionDetails,
        traffic: Arc<Traffic>,
        close: Closer,
        admit: impl FnOnce(Census) -> Result<(), E>,
    ) -> Result<Registration, E> {
        let mut open = self.open.lock();
        admit(Census {
            open: &open,
            vhost: &details.vhost,
            user: &details.user,
        })?;
        let channels = Arc::new(AtomicUsize::new(0));
        let views = ChannelViews::default();
        let vhost = details.vhost.clone();
        let blocked = Arc::new(AtomicBool::new(false));
        open.insert(
            id,
            Entry {
                details,
                views: views.clone(),
                close,
                channels: channels.clone(),
                traffic,
                blocked: blocked.clone(),
            },
        );
        drop(open);
        self.history.lock().churn.connections_opened += 1;
        Ok(Registration {
            connections: self.clone(),
            id,
            vhost,
            blocked,
            channels,
            views,
        })
    }

    /// Channels `user` has open, over all their connections.
    #[cfg(test)]
    pub fn user_channels(&self, user: &str) -> usize {
        self.open
            .lock()
            .values()
            .filter(|e| e.details.user == user)
            .map(|e| e.channels.load(Ordering::Relaxed))
            .sum()
    }

    /// Asks connection `id` to close (320, `reason`); false if no such connection is open.
    pub fn close(&self, id: ConnectionId, reason: &str) -> bool {
        let open = self.open.lock();
        match open.get(&id) {
            Some(entry) => {
                (entry.close)(reason);
                true
            }
            None => false,
        }
    }

    /// Asks every connection of `vhost` to close; how many there were.
    pub fn close_vhost(&self, vhost: &str, reason: &str) -> usize {
        self.close_where(|e| e.details.vhost == vhost, reason)
    }

    /// Asks every connection of `user` to close; how many there were.
    pub fn close_user(&self, user: &str, reason: &str) -> usize {
        self.close_where(|e| e.details.user == user, reason)
    }

    fn close_where(&self, matches: impl Fn(&Entry) -> bool, reason: &str) -> usize {
        let open = self.open.lock();
        let mut closed = 0;
        for entry in open.values().filter(|e| matches(e)) {
            (entry.close)(reason);
            closed += 1;
        }
        closed
    }

    pub fn list(&self) -> Vec<ConnectionSummary> {
        let mut all: Vec<_> = self
            .open
            .lock()
            .iter()
            .map(|(id, e)| ConnectionSummary {
                id: *id,
                details: e.details.clone(),
                channels: e.channels.load(Ordering::Relaxed),
                received_bytes: e.traffic.received_bytes.load(Ordering::Relaxed),
                sent_bytes: e.traffic.sent_bytes.load(Ordering::Relaxed),
                blocked: e.blocked.load(Ordering::Relaxed),
            })
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }

    pub fn count(&self) -> usize {
        self.open.lock().len()
    }

    /// Every consumer of every open channel, by connection, channel and tag.
    pub fn consumers(&self) -> Vec<ConsumerSummary> {
        let entries: Vec<_> = self
            .open
            .lock()
            .iter()
            .map(|(id, e)| (*id, e.details.vhost.clone(), e.views.lock().clone()))
            .collect();
        let mut all: Vec<ConsumerSummary> = Vec::new();
        for (id, vhost, views) in entries {
            for view in views {
                let channel = view.stats().number;
                all.extend(
                    view.consumers()
                        .into_iter()
                        .map(|consumer| ConsumerSummary {
                            connection: id,
                            channel,
                            vhost: vhost.clone(),
                            consumer,
                        }),
                );
            }
        }
        all.sort_by(|a, b| {
            (a.connection, a.channel, &a.consumer.tag).cmp(&(
                b.connection,
                b.channel,
                &b.consumer.tag,
            ))
        });
        all
    }

    /// Every open channel, by connection and number. The views are read after the list's
    /// lock is released (each takes its channel's own lock).
    pub fn channels(&self) -> Vec<ChannelSummary> {
        let entries: Vec<_> = self
            .open
            .lock()
            .iter()
            .map(|(id, e)| (*id, e.details.clone(), e.views.lock().clone()))
            .collect();
        let mut all: Vec<ChannelSummary> = entries
            .into_iter()
            .flat_map(|(id, details, views)| {
                views.into_iter().map(move |view| ChannelSummary {
                    connection: id,
                    user: details.user.clone(),
                    vhost: details.vhost.clone(),
                    peer: details.peer.clone(),
                    stats: view.stats(),
                })
            })
            .collect();
        all.sort_by_key(|c| (c.connection, c.stats.number));
        all
    }

    /// What was published to each exchange since the broker started, by vhost and name,
    /// on open and closed channels.
    pub fn exchange_totals(&self) -> HashMap<ExchangeKey, ExchangeCounts> {
        // The history stays locked while the open channels are read: a channel closing
        // meanwhile is counted once, on one side or the other.
        let history = self.history.lock();
        let mut totals = history.retired_exchanges.clone();
        let entries: Vec<_> = self
            .open
            .lock()
            .values()
            .map(|e| (e.details.vhost.clone(), e.views.lock().clone()))
            .collect();
        for (vhost, views) in entries {
            for view in views {
                for (exchange, counts) in view.exchanges() {
                    totals
                        .entry((vhost.clone(), exchange))
                        .or_default()
                        .add(&counts);
                }
            }
        }
        totals
    }

    /// Messages published, delivered and acknowledged on every channel since the broker
    /// started, open or closed.
    pub fn message_totals(&self) -> MessageTotals {
        // As in exchange_totals: history, then the open channels, read as one.
        let history = self.history.lock();
        let mut totals = history.retired;
        for channel in self.channels() {
            totals.add(&channel.stats);
        }
        drop(history);
        totals
    }

    /// Counts a publish made without a channel (the HTTP API's) on its exchange.
    pub fn note_exchange_publish(&self, vhost: &str, exchange: &str, routed: bool) {
        let counts = ExchangeCounts {
            published_in: 1,
            routed_out: u64::from(routed),
        };
        self.history
            .lock()
            .retired_exchanges
            .entry((vhost.to_string(), exchange.to_string()))
            .or_default()
            .add(&counts);
    }

    /// Forgets the counts of closed channels' exchanges that `keep` no longer wants (the
    /// exchange was deleted): the history does not grow with every name ever used.
    pub fn forget_exchanges(&self, keep: impl Fn(&ExchangeKey) -> bool) {
        self.history
            .lock()
            .retired_exchanges
            .retain(|key, _| keep(key));
    }

    pub fn churn(&self) -> Churn {
        self.history.lock().churn
    }

    /// Channels open over every connection.
    pub fn channel_count(&self) -> usize {
        self.open
            .lock()
            .values()
            .map(|e| e.channels.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn closes_by_vhost_and_user_and_forgets_on_drop() {
        let connections = Arc::new(Connections::default());
        let asked = Arc::new(AtomicUsize::new(0));
        let closer = || -> Closer {
            let asked = asked.clone();
            Box::new(move |_reason: &str| {
                asked.fetch_add(1, Ordering::Relaxed);
            })
        };
        let details = |user: &str, vhost: &str| ConnectionDetails {
            user: user.to_string(),
            vhost: vhost.to_string(),
            peer: "127.0.0.1:1".to_string(),
            ..Default::default()
        };
        let traffic = Arc::new(Traffic::default());
        let a = connections.register(1, details("alice", "/"), traffic.clone(), closer());
        let _b = connections.register(2, details("bob", "/"), Arc::default(), closer());
        let _c = connections.register(3, details("alice", "other"), Arc::default(), closer());
        assert_eq!(connections.close_vhost("other", "gone"), 1);
        assert_eq!(connections.close_user("alice", "gone"), 2);
        assert_eq!(asked.load(Ordering::Relaxed), 3);
        a.set_channels(3);
        _c.set_channels(2);
        assert_eq!(connections.user_channels("alice"), 5);
        assert!(!a.open_channel_within(5), "alice has 5 open");
        assert!(a.open_channel_within(6));
        assert_eq!(connections.user_channels("alice"), 6);
        a.set_channels(3);
        // A fourth, for alice on "/", is counted with what is there, and may be refused.
        let mut seen = None;
        let refused =
            connections.register_if(4, details("alice", "/"), Arc::default(), closer(), |c| {
                seen = Some((c.total(), c.in_vhost(), c.of_user()));
                Err("over a limit")
            });
        assert_eq!(refused.unwrap_err(), "over a limit");
        assert_eq!(seen, Some((3, 2, 2)));
        assert_eq!(connections.count(), 3, "a refused connection is not listed");
        traffic.received(100);
        traffic.sent(40);
        let listed = connections.list();
        assert_eq!(
            (
                listed[0].id,
                listed[0].received_bytes,
                listed[0].sent_bytes,
                listed[0].channels
            ),
            (1, 100, 40, 3)
        );
        assert_eq!(listed[2].details.vhost, "other");
        drop(a);
        assert_eq!(connections.count(), 2);
        assert_eq!(connections.user_channels("alice"), 2);
        assert_eq!(
            connections.list().iter().map(|c| c.id).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }
}
