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
    match minority.await.unwrap() {
        Ok(acked) => assert!(acked.is_empty(), "the cut-off leader confirmed {acked:?}"),
        // No answer at all within the wait is no confirm either.
        Err(_) => {}
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
