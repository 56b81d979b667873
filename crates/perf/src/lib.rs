//! `wharf perf`: a load generator for any AMQP 0-9-1 broker, in the spirit of RabbitMQ's
//! PerfTest and lavinmqperf. Producers publish pre-encoded messages carrying their send
//! time; consumers parse deliveries in place; a line a second shows the rates and
//! latencies, and a summary closes the run.
//!
//! Layout: `options` (the flags), `uri`, `client` (connection setup), `producer`,
//! `consumer`, `stats` (counters, histograms, output).

mod client;
mod consumer;
pub mod options;
mod producer;
mod stats;
mod uri;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use wharf_amqp::{FieldTable, Method};

pub use options::{ExchangeType, PerfArgs};
pub use stats::Summary;
pub use uri::AmqpUri;

use client::Client;
use consumer::ConsumerPlan;
use producer::ProducerPlan;
use stats::Stats;

/// A one-way signal seen by every task: the start of a run, or its end.
pub struct Signal {
    set: AtomicBool,
    notify: Notify,
}

impl Signal {
    fn new() -> Signal {
        Signal {
            set: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    pub fn set(&self) {
        self.set.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Resolves once the signal is set.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// Runs a whole measurement and returns its summary. The per-second lines go to stdout,
/// or to stderr with `--json`.
pub fn run(args: &PerfArgs) -> anyhow::Result<Summary> {
    args.validate()?;
    let uri = AmqpUri::parse(&args.uri)?;
    let producer_uri = match &args.producer_uri {
        Some(other) => AmqpUri::parse(other)?,
        None => uri.clone(),
    };
    let consumer_uri = match &args.consumer_uri {
        Some(other) => AmqpUri::parse(other)?,
        None => uri.clone(),
    };
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(measure(args, &uri, &producer_uri, &consumer_uri))
}

/// Declares the exchange and queues the run needs.
async fn declare(setup: &mut Client, args: &PerfArgs) -> anyhow::Result<()> {
    if !args.exchange.is_empty() {
        setup
            .rpc(Method::ExchangeDeclare(Box::new(
                wharf_amqp::ExchangeDeclare {
                    exchange: args.exchange.as_str().into(),
                    kind: args.exchange_type.name().into(),
                    durable: args.persistent,
                    ..Default::default()
                },
            )))
            .await
            .with_context(|| format!("cannot declare exchange '{}'", args.exchange))?;
    }
    for i in 0..args.queues {
        let queue = args.queue_name(i);
        let mut arguments = FieldTable::default();
        if args.quorum {
            arguments.insert(
                "x-queue-type",
                wharf_amqp::FieldValue::LongStr("quorum".into()),
            );
        }
        setup
            .rpc(Method::QueueDeclare(wharf_amqp::QueueDeclare {
                queue: queue.as_str().into(),
                durable: args.persistent || args.quorum,
                arguments,
                ..Default::default()
            }))
            .await
            .with_context(|| format!("cannot declare queue '{queue}'"))?;
        if !args.exchange.is_empty() {
            let mut arguments = FieldTable::default();
            if args.exchange_type == ExchangeType::Headers {
                arguments.insert("x-match", wharf_amqp::FieldValue::LongStr("all".into()));
            }
            setup
                .rpc(Method::QueueBind(Box::new(wharf_amqp::QueueBind {
                    queue: queue.as_str().into(),
                    exchange: args.exchange.as_str().into(),
                    routing_key: args.binding_key().into(),
                    arguments,
                    ..Default::default()
                })))
                .await
                .with_context(|| format!("cannot bind queue '{queue}'"))?;
        }
    }
    Ok(())
}

/// Deletes what [`declare`] made.
async fn clean_up(setup: &mut Client, args: &PerfArgs) -> anyhow::Result<()> {
    for i in 0..args.queues {
        setup
            .rpc(Method::QueueDelete(wharf_amqp::QueueDelete {
                queue: args.queue_name(i).as_str().into(),
                ..Default::default()
            }))
            .await?;
    }
    if !args.exchange.is_empty() {
        setup
            .rpc(Method::ExchangeDelete(wharf_amqp::ExchangeDelete {
                exchange: args.exchange.as_str().into(),
                ..Default::default()
            }))
            .await?;
    }
    Ok(())
}

async fn measure(
    args: &PerfArgs,
    uri: &AmqpUri,
    producer_uri: &AmqpUri,
    consumer_uri: &AmqpUri,
) -> anyhow::Result<Summary> {
    let connect_to = |uri: &AmqpUri, name: String| {
        let uri = uri.clone();
        async move {
            let limit = Duration::from_secs_f64(args.connect_timeout);
            match tokio::time::timeout(limit, Client::connect(&uri, &name)).await {
            Ok(connected) => connected,
            Err(_) => anyhow::bail!(
                "{}:{} did not complete the AMQP handshake within {} s (is it an AMQP 0-9-1 broker?)",
                uri.host,
                uri.port,
                args.connect_timeout
            ),
        }
        }
    };
    let connect = |name: String| connect_to(uri, name);
    let mut setup = connect("perf setup".to_string()).await?;
    declare(&mut setup, args).await?;
    let stats = Arc::new(Stats::new());
    let stop = Arc::new(Signal::new());
    // Connections wait for this before they send or count anything, so that the run's
    // clock starts when every connection is ready.
    let go = Arc::new(Signal::new());

    let mut consumers = Vec::new();
    for i in 0..args.consumers {
        let mut client = connect_to(consumer_uri, format!("perf consumer {}", i + 1)).await?;
        let plan = ConsumerPlan {
            queue: args.queue_name(i),
            autoack: args.autoack,
            prefetch: args.prefetch,
            multi_ack: args.multi_ack,
        };
        if !plan.autoack {
            client
                .rpc(Method::BasicQos(wharf_amqp::BasicQos {
                    prefetch_count: plan.prefetch,
                    ..Default::default()
                }))
                .await?;
        }
        client
            .rpc(Method::BasicConsume(Box::new(wharf_amqp::BasicConsume {
                queue: plan.queue.as_str().into(),
                no_ack: plan.autoack,
                ..Default::default()
            })))
            .await
            .with_context(|| format!("cannot consume from '{}'", plan.queue))?;
        consumers.push(tokio::spawn(consumer::run(
            client,
            Arc::new(plan),
            stats.clone(),
            go.clone(),
            stop.clone(),
        )));
    }

    let mut producers = Vec::new();
    for i in 0..args.producers {
        let mut client = connect_to(producer_uri, format!("perf producer {}", i + 1)).await?;
        if args.confirm > 0 {
            client
                .rpc(Method::ConfirmSelect(Default::default()))
                .await?;
        }
        let routing_key = if args.exchange.is_empty() {
            args.queue_name(i)
        } else {
            args.routing_key().to_string()
        };
        let plan = ProducerPlan {
            exchange: args.exchange.clone(),
            routing_key,
            size: args.size,
            persistent: args.persistent,
            confirm: args.confirm,
            rate: args.rate,
            messages: args.pmessages,
        };
        producers.push(tokio::spawn(producer::run(
            client,
            Arc::new(plan),
            stats.clone(),
            go.clone(),
            stop.clone(),
        )));
    }

    let out_is_stderr = args.json;
    let started = tokio::time::Instant::now();
    let first = stats.snapshot();
    let cpu_at_start = stats::cpu_seconds();
    go.set();
    let deadline = (args.seconds > 0.0).then(|| started + Duration::from_secs_f64(args.seconds));
    let mut previous = first;
    let mut tick =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let producers_done = async {
        for p in producers.iter_mut() {
            let _ = p.await;
        }
    };
    tokio::pin!(producers_done);
    let mut producers_finished = args.producers == 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = stats.snapshot();
                let line = stats.interval_line(started.elapsed(), &previous, &now);
                if out_is_stderr { eprintln!("{line}") } else { println!("{line}") }
                previous = now;
            }
            _ = async { tokio::time::sleep_until(deadline.expect("set")).await }, if deadline.is_some() => break,
            _ = &mut producers_done, if !producers_finished => {
                producers_finished = true;
                if args.pmessages > 0 {
                    break;
                }
            }
            _ = stop.wait() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    if producers_finished && args.pmessages > 0 && args.consumers > 0 && !stop.is_set() {
        // A counted run: let the consumers take what was sent, until they go idle.
        let mut seen = stats.consumed.load(Ordering::Relaxed);
        let mut idle_ticks = 0;
        while idle_ticks < 5 && !stop.is_set() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = stats.consumed.load(Ordering::Relaxed);
            idle_ticks = if now == seen { idle_ticks + 1 } else { 0 };
            seen = now;
        }
    }
    let last = stats.snapshot();
    let cpu = stats::cpu_seconds() - cpu_at_start;
    stop.set();
    if !producers_finished {
        let _ = tokio::time::timeout(Duration::from_secs(15), &mut producers_done).await;
    }
    for c in consumers {
        let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
    }
    if !args.keep {
        if let Err(e) = clean_up(&mut setup, args).await {
            stats.error(format!("cleaning up: {e:#}"));
        }
    }
    setup.close().await;
    Ok(stats.summary(&first, &last, cpu))
}
