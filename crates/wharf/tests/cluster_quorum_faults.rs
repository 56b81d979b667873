//! Quorum queues under faults, each node in its own network namespace: the leader cut
//! off from the two others (it must not confirm anything, and the majority goes on
//! without it), and the leader paused past the election timeout. In each, every message
//! a publisher had confirmed is there afterwards. Needs root, as CI has.

mod support;

use std::time::{Duration, Instant};

use support::quorum::*;
use support::*;

fn network(count: usize) -> Network {
    Network::create(count).unwrap_or_else(|reason| panic!("{reason}"))
}

/// Publishes `bodies` through `spec` until each is confirmed (nacks and failures retried,
/// on a new channel when one closes), for up to `within`; answers those confirmed and
/// when the first confirm came.
async fn publish_until_confirmed(
    spec: &NodeSpec,
    bodies: &[String],
    within: Duration,
) -> (Vec<String>, Option<Duration>) {
    let started = Instant::now();
    let mut waiting = bodies.to_vec();
    let mut confirmed = Vec::new();
    let mut first = None;
    while !waiting.is_empty() && started.elapsed() < within {
        let attempt = tokio::time::timeout(Duration::from_secs(20), async {
            let publisher = confirming(spec).await;
            publish_all(&publisher, "qq", &waiting).await
        })
        .await;
        if let Ok(acked) = attempt {
            if !acked.is_empty() && first.is_none() {
                first = Some(started.elapsed());
            }
            waiting.retain(|body| !acked.contains(body));
            confirmed.extend(acked);
        }
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    (confirmed, first)
}

/// Every message the queue holds, taken (and acknowledged) through `spec` until none
/// comes for a while.
async fn everything(spec: &NodeSpec, expected_at_least: usize) -> Vec<String> {
    get_until(spec, "qq", expected_at_least, Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_majority_confirms_nothing_and_the_majority_goes_on() {
    let place = Place::new("quorum-partition");
    let net = network(3);
    let specs = specs_in(&place, &net, 3);
    let _nodes = start_all(&specs);
    // Declared on the first node: it leads.
    declare_quorum(&specs[0], "qq").await;
    let before = numbered(0, 100);
    let (confirmed, _) = publish_until_confirmed(&specs[1], &before, Duration::from_secs(20)).await;
    assert_eq!(confirmed, before);

    net.isolate(0);
    let cut_at = Instant::now();
    // A publisher still connected to the former leader's node: nothing it sends is
    // confirmed while that node cannot reach a majority (nacked once the wait is over).
    let minority = tokio::spawn({
        let spec = specs[0].clone();
        async move {
            let publisher = confirming(&spec).await;
            let bodies: Vec<String> = (0..20).map(|i| format!("minority{i}")).collect();
            tokio::time::timeout(
                Duration::from_secs(25),
                publish_all(&publisher, "qq", &bodies),
            )
            .await
        }
    });
    // Through a node of the majority: confirmed once the two elect a leader.
    let during = numbered(100, 100);
    let (confirmed, first) =
        publish_until_confirmed(&specs[1], &during, Duration::from_secs(40)).await;
    assert_eq!(confirmed.len(), during.len(), "confirmed {confirmed:?}");
    let failover = first.unwrap();
    println!("the majority's first confirm came {failover:?} after the cut");
    assert!(failover < Duration::from_secs(20), "{failover:?}");
    // No answer at all within the wait is no confirm either.
    if let Ok(acked) = minority.await.unwrap() {
        assert!(acked.is_empty(), "the cut-off leader confirmed {acked:?}");
    }
    assert!(cut_at.elapsed() > Duration::from_secs(1));

    net.rejoin(0);
    let after = numbered(200, 50);
    let (confirmed, _) = publish_until_confirmed(&specs[0], &after, Duration::from_secs(30)).await;
    assert_eq!(confirmed, after);
    let got = everything(&specs[2], 250).await;
    for body in before.iter().chain(&during).chain(&after) {
        assert!(got.contains(body), "{body} was confirmed and is lost");
    }
    // Nothing but what was published.
    assert!(got
        .iter()
        .all(|b| b.starts_with('m') || b.starts_with("minority")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_the_election_is_replaced_and_follows_when_resumed() {
    let place = Place::new("quorum-pause");
    let net = network(3);
    let specs = specs_in(&place, &net, 3);
    let nodes = start_all(&specs);
    declare_quorum(&specs[0], "qq").await;
    let before = numbered(0, 100);
    let (confirmed, _) = publish_until_confirmed(&specs[1], &before, Duration::from_secs(20)).await;
    assert_eq!(confirmed, before);

    nodes[0].pause();
    let during = numbered(100, 100);
    let (confirmed, first) =
        publish_until_confirmed(&specs[2], &during, Duration::from_secs(40)).await;
    assert_eq!(confirmed.len(), during.len());
    println!(
        "the first confirm came {:?} after the leader paused",
        first.unwrap()
    );
    nodes[0].resume();
    // The resumed node follows: publishing through it is confirmed (by the new leader).
    let after = numbered(200, 50);
    let (confirmed, _) = publish_until_confirmed(&specs[0], &after, Duration::from_secs(30)).await;
    assert_eq!(confirmed, after);
    let got = everything(&specs[1], 250).await;
    let mut expected: Vec<String> = before.into_iter().chain(during).chain(after).collect();
    expected.sort();
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique, expected);
}

/// What the clients of the quorum nemesis saw: every body published (each unique),
/// those confirmed, and every delivery (body, redelivered) in the order it came.
#[derive(Default)]
struct History {
    published: std::collections::HashSet<String>,
    confirmed: std::collections::HashSet<String>,
    delivered: Vec<(String, bool)>,
}

/// The checker's verdict on a history.
#[derive(Debug)]
struct Verdict {
    published: usize,
    confirmed: usize,
    delivered: usize,
    /// Confirmed, never delivered.
    lost: Vec<String>,
    /// Delivered, never published.
    unexpected: Vec<String>,
    /// Deliveries of a body already delivered.
    duplicates: usize,
    /// Of those, deliveries not marked redelivered.
    unmarked_duplicates: Vec<String>,
}

fn check(history: &History) -> Verdict {
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0;
    let mut unmarked_duplicates = Vec::new();
    for (body, redelivered) in &history.delivered {
        if !seen.insert(body.clone()) {
            duplicates += 1;
            if !redelivered {
                unmarked_duplicates.push(body.clone());
            }
        }
    }
    let mut lost: Vec<String> = history
        .confirmed
        .iter()
        .filter(|body| !seen.contains(*body))
        .cloned()
        .collect();
    lost.sort();
    let mut unexpected: Vec<String> = seen
        .iter()
        .filter(|body| !history.published.contains(*body))
        .cloned()
        .collect();
    unexpected.sort();
    Verdict {
        published: history.published.len(),
        confirmed: history.confirmed.len(),
        delivered: history.delivered.len(),
        lost,
        unexpected,
        duplicates,
        unmarked_duplicates,
    }
}

/// A producer on node `spec`: batches of ten unique bodies with confirms, until told to
/// stop; a batch not confirmed in time (or nacked) is never sent again (new bodies go).
async fn produce(
    spec: NodeSpec,
    tag: String,
    history: std::sync::Arc<std::sync::Mutex<History>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let mut sequence = 0usize;
    while !stop.load(Ordering::Acquire) {
        let publisher =
            match tokio::time::timeout(Duration::from_secs(5), try_confirming(&spec)).await {
                Ok(Some(publisher)) => publisher,
                _ => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            };
        while !stop.load(Ordering::Acquire) {
            let bodies: Vec<String> = (sequence..sequence + 10)
                .map(|i| format!("{tag}-{i}"))
                .collect();
            sequence += 10;
            history
                .lock()
                .unwrap()
                .published
                .extend(bodies.iter().cloned());
            match tokio::time::timeout(
                Duration::from_secs(20),
                try_publish_all(&publisher, &bodies),
            )
            .await
            {
                Ok(Some(acked)) => history.lock().unwrap().confirmed.extend(acked),
                // The channel or connection went, or no answer: a new one.
                _ => break,
            }
        }
    }
}

/// A consumer on node `spec`, manual acks, prefetch 50, reconnecting when its connection
/// goes, until told to stop.
async fn consume(
    spec: NodeSpec,
    history: std::sync::Arc<std::sync::Mutex<History>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use futures_lite::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    use std::sync::atomic::Ordering;
    while !stop.load(Ordering::Acquire) {
        let setup = tokio::time::timeout(Duration::from_secs(10), async {
            let connection = try_connect(&spec).await.ok()?;
            let channel = connection.create_channel().await.ok()?;
            channel
                .basic_qos(50, BasicQosOptions::default())
                .await
                .ok()?;
            let consumer = channel
                .basic_consume(
                    "qq",
                    "",
                    BasicConsumeOptions::default(),
                    lapin::types::FieldTable::default(),
                )
                .await
                .ok()?;
            Some((connection, consumer))
        })
        .await;
        let Ok(Some((_connection, mut consumer))) = setup else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        while !stop.load(Ordering::Acquire) {
            match tokio::time::timeout(Duration::from_millis(500), consumer.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(delivery))) => {
                    let body = String::from_utf8_lossy(&delivery.data).to_string();
                    history
                        .lock()
                        .unwrap()
                        .delivered
                        .push((body, delivery.redelivered));
                    if delivery.ack(BasicAckOptions::default()).await.is_err() {
                        break;
                    }
                }
                Ok(_) => break,
            }
        }
    }
}

/// The quorum nemesis: for `WHARF_QUORUM_NEMESIS_SECONDS` (120 in CI, run by `.ci/run`;
/// ignored by a plain `cargo test`), one fault at a time on a random node (killed and
/// restarted, paused, cut off from everyone, or from the other nodes only, for 1 to 4 s)
/// while a producer with confirms and a consumer with manual acks run on every node.
/// Then every fault is undone, the consumers drain the queue, and the checker proves that
/// every confirmed message was delivered (lost = 0), that nothing was delivered that was
/// not published; it counts the duplicates and reports those not marked redelivered.
/// The seed is printed (`WHARF_QUORUM_NEMESIS_SEED` replays its faults); the
/// history and the verdict are written to a file named in the output.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a long randomized run: .ci/run runs it with WHARF_QUORUM_NEMESIS_SECONDS=120"]
async fn quorum_nemesis_loses_no_confirmed_message() {
    use rand::{Rng, SeedableRng};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let seconds: u64 = std::env::var("WHARF_QUORUM_NEMESIS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let seed: u64 = std::env::var("WHARF_QUORUM_NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("quorum nemesis: {seconds} s, seed {seed}");
    let mut random = rand::rngs::StdRng::seed_from_u64(seed);

    let place = Place::new("quorum-nemesis");
    let net = network(3);
    let specs = specs_in(&place, &net, 3);
    let seeds = seeds(&specs);
    let mut nodes: Vec<Option<Node>> = start_all(&specs).into_iter().map(Some).collect();
    declare_quorum(&specs[0], "qq").await;

    let history = Arc::new(Mutex::new(History::default()));
    let stop_producing = Arc::new(AtomicBool::new(false));
    let stop_consuming = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        producers.push(tokio::spawn(produce(
            spec.clone(),
            format!("p{i}"),
            history.clone(),
            stop_producing.clone(),
        )));
        consumers.push(tokio::spawn(consume(
            spec.clone(),
            history.clone(),
            stop_consuming.clone(),
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut faults = Vec::new();
    let mut restarted = vec![false; nodes.len()];
    while Instant::now() < deadline {
        let victim = random.gen_range(0..nodes.len());
        let hold = Duration::from_millis(random.gen_range(1000..4000));
        match random.gen_range(0..4) {
            0 => {
                faults.push(format!("kill n{victim} for {hold:?}"));
                let spec = nodes[victim].take().unwrap().kill();
                tokio::time::sleep(hold).await;
                nodes[victim] = Some(Node::spawn(&spec, &seeds));
                restarted[victim] = true;
            }
            1 => {
                faults.push(format!("pause n{victim} for {hold:?}"));
                nodes[victim].as_ref().unwrap().pause();
                tokio::time::sleep(hold).await;
                nodes[victim].as_ref().unwrap().resume();
            }
            2 => {
                faults.push(format!("cut n{victim} for {hold:?}"));
                net.cut(victim);
                tokio::time::sleep(hold).await;
                net.heal(victim);
            }
            _ => {
                faults.push(format!("isolate n{victim} from the nodes for {hold:?}"));
                net.isolate(victim);
                tokio::time::sleep(hold).await;
                net.rejoin(victim);
            }
        }
        tokio::time::sleep(Duration::from_millis(random.gen_range(200..1500))).await;
    }
    stop_producing.store(true, Ordering::Release);
    for producer in producers {
        let _ = tokio::time::timeout(Duration::from_secs(30), producer).await;
    }
    let nodes: Vec<Node> = nodes.into_iter().flatten().collect();
    for (node, restarted) in nodes.iter().zip(restarted) {
        if restarted {
            node.wait_for_line("wharf ready", Duration::from_secs(60));
        }
    }
    // The consumers drain what is left: until every confirmed message came, or nothing
    // new came for a while.
    let drain_deadline = Instant::now() + Duration::from_secs(90);
    let mut last = (0usize, Instant::now());
    loop {
        let verdict = check(&history.lock().unwrap());
        if verdict.lost.is_empty() && last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        if verdict.delivered != last.0 {
            last = (verdict.delivered, Instant::now());
        }
        if Instant::now() > drain_deadline || last.1.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop_consuming.store(true, Ordering::Release);
    for consumer in consumers {
        let _ = tokio::time::timeout(Duration::from_secs(10), consumer).await;
    }
    let history = history.lock().unwrap();
    let verdict = check(&history);
    let record = std::env::temp_dir().join(format!("wharf-quorum-nemesis-{seed}.txt"));
    let mut text = format!("seed {seed}, {seconds} s\nfaults:\n");
    for fault in &faults {
        text.push_str(&format!("  {fault}\n"));
    }
    text.push_str(&format!("verdict: {verdict:#?}\ndeliveries:\n"));
    for (body, redelivered) in &history.delivered {
        text.push_str(&format!(
            "  {body}{}\n",
            if *redelivered { " (redelivered)" } else { "" }
        ));
    }
    let _ = std::fs::write(&record, text);
    println!(
        "quorum nemesis: {} faults; {} published, {} confirmed, {} delivered ({} duplicates, all redelivered: {}); lost {}, unexpected {}; history in {}",
        faults.len(),
        verdict.published,
        verdict.confirmed,
        verdict.delivered,
        verdict.duplicates,
        verdict.unmarked_duplicates.is_empty(),
        verdict.lost.len(),
        verdict.unexpected.len(),
        record.display()
    );
    assert!(
        verdict.lost.is_empty(),
        "seed {seed}: confirmed and lost: {:?}",
        verdict.lost
    );
    assert!(
        verdict.unexpected.is_empty(),
        "seed {seed}: never published: {:?}",
        verdict.unexpected
    );
    // Reported, not asserted: a leader cut off from the other nodes but not from its
    // clients delivers from its own queue until it learns it was replaced, and a message
    // the new leader delivered first (marked redelivered) may then come from it unmarked
    // (docs/clustering.md, *Guarantees*). At-least-once holds either way.
    if !verdict.unmarked_duplicates.is_empty() {
        println!(
            "quorum nemesis: seed {seed}: delivered again without the redelivered flag: {:?}",
            verdict.unmarked_duplicates
        );
    }
    assert!(verdict.confirmed > 0, "seed {seed}: nothing was confirmed");
}
