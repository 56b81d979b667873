//! The command line of `wharf perf`, named after RabbitMQ's PerfTest where a flag exists
//! there.

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeType {
    pub fn name(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Topic => "topic",
            ExchangeType::Headers => "headers",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct PerfArgs {
    /// The broker to measure.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// Where the producers connect, when not to --uri (on a cluster: publishing through
    /// a node that does not hold the queues, which setup declares and consumers read
    /// through --uri).
    #[arg(long)]
    pub producer_uri: Option<String>,
    /// Where the consumers connect, when not to --uri (on a cluster: consuming through a
    /// node that does not hold the queues).
    #[arg(long)]
    pub consumer_uri: Option<String>,
    /// Publishing connections.
    #[arg(short = 'x', long, default_value_t = 1)]
    pub producers: u32,
    /// Consuming connections.
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: u32,
    /// Queues, named <queue-prefix>-1 ..; producer and consumer i use queue i mod this.
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// Prefix of the queue names.
    #[arg(long, default_value = "perf")]
    pub queue_prefix: String,
    /// Message body size in bytes (8 or more carry the send time, for latency).
    #[arg(short = 's', long, default_value_t = 16)]
    pub size: usize,
    /// How long to run; 0 runs until interrupted (Ctrl-C) or --pmessages are sent.
    #[arg(short = 'z', long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Messages per second per producer (0: as fast as possible).
    #[arg(short = 'r', long, default_value_t = 0)]
    pub rate: u64,
    /// Messages each producer sends before it stops (0: no limit).
    #[arg(short = 'C', long, default_value_t = 0)]
    pub pmessages: u64,
    /// Publisher confirms, with at most this many outstanding per producer (0: off).
    #[arg(short = 'c', long, default_value_t = 0)]
    pub confirm: u32,
    /// Persistent messages (delivery_mode 2) to durable queues.
    #[arg(long)]
    pub persistent: bool,
    /// Quorum queues (`x-queue-type: quorum`, durable): replicated on a cluster.
    #[arg(long)]
    pub quorum: bool,
    /// Consumers do not acknowledge (no_ack); otherwise they ack manually.
    #[arg(short = 'a', long)]
    pub autoack: bool,
    /// Consumer prefetch (basic.qos) with manual acks.
    #[arg(short = 'q', long, default_value_t = 100)]
    pub prefetch: u16,
    /// Acknowledge every N messages with multiple=true (capped at the prefetch).
    #[arg(long, default_value_t = 1)]
    pub multi_ack: u32,
    /// Publish to this exchange (declared, queues bound to it) instead of the default one.
    #[arg(short = 'e', long, default_value = "")]
    pub exchange: String,
    /// Type of --exchange.
    #[arg(short = 't', long, value_enum, default_value = "direct")]
    pub exchange_type: ExchangeType,
    /// Routing key of published messages (with --exchange; default "perf").
    #[arg(short = 'k', long)]
    pub routing_key: Option<String>,
    /// Binding key of the queues (with --exchange; default: the routing key).
    #[arg(long)]
    pub binding_key: Option<String>,
    /// Leave the queues and the exchange in place at the end (to fill a broker).
    #[arg(long)]
    pub keep: bool,
    /// Seconds allowed for connecting and logging in, per connection.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Threads running the connections.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print the summary as one JSON object (the per-second lines go to stderr).
    #[arg(long)]
    pub json: bool,
}

impl PerfArgs {
    pub fn queue_name(&self, i: u32) -> String {
        format!("{}-{}", self.queue_prefix, i % self.queues.max(1) + 1)
    }

    pub fn routing_key(&self) -> &str {
        self.routing_key.as_deref().unwrap_or("perf")
    }

    pub fn binding_key(&self) -> &str {
        self.binding_key.as_deref().unwrap_or(self.routing_key())
    }

    /// Checks combinations that cannot work, before connecting.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.queues == 0 {
            anyhow::bail!("--queues must be at least 1");
        }
        if self.producers == 0 && self.consumers == 0 {
            anyhow::bail!("nothing to do: no producers and no consumers");
        }
        if !self.autoack && self.prefetch == 0 && self.consumers > 0 {
            anyhow::bail!(
                "--prefetch 0 (unlimited) with manual acks: give a prefetch, or --autoack"
            );
        }
        if self.seconds < 0.0 || !self.seconds.is_finite() {
            anyhow::bail!("--seconds must be 0 or more");
        }
        if !(self.connect_timeout > 0.0 && self.connect_timeout.is_finite()) {
            anyhow::bail!("--connect-timeout must be a positive number of seconds");
        }
        if self.threads == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        Ok(())
    }
}
