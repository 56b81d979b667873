//! The samples a detail gives when asked with `lengths_age`/`lengths_incr`,
//! `msg_rates_age`/`msg_rates_incr` and `data_rates_age`/`data_rates_incr` (RabbitMQ's
//! web UI charts them): `*_details` carry `samples` (newest first, every `incr` seconds
//! over `age`), `avg` and `avg_rate`; bad ranges are refused as RabbitMQ refuses them.
//! Samples are taken every 5 s, so each test waits for a sampling round or two.

mod common;

use common::*;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::ExchangeKind;
use serde_json::{json, Value};
use wharf_integration::management::{segment, Management};
use wharf_integration::start_broker_with_management;

/// What RabbitMQ's web UI asks of the overview and a queue: the last minute, every 5 s.
const LAST_MINUTE: &str = "lengths_age=60&lengths_incr=5&msg_rates_age=60&msg_rates_incr=5";

const INCR_MS: u64 = 5000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// How the newest slot of a range sits against now.
#[derive(Clone, Copy)]
enum Ends {
    /// At the last whole increment at or before now (RabbitMQ's ranges).
    AtOrBeforeNow,
    /// At the first whole increment at or after now (a queue's lengths).
    AtOrAfterNow,
}

/// The samples of a `_details` object over the last minute every 5 s, after checking
/// them as RabbitMQ gives them: newest first, 5 s apart on whole increments, the newest
/// where `ends` says (the request went out at `asked_ms`, was answered by
/// `answered_ms`); `rate` between the two newest, `avg` their mean and `avg_rate` the
/// change per second from the oldest to the newest. RabbitMQ gives 12 or 13 slots for a
/// minute (it sometimes leaves the oldest out); Wharf 13.
fn samples_of(details: &Value, ends: Ends, asked_ms: u64, answered_ms: u64) -> Vec<f64> {
    let samples = details["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no samples in {details}"));
    assert!((12..=13).contains(&samples.len()), "{details}");
    let stamps: Vec<u64> = samples
        .iter()
        .map(|s| s["timestamp"].as_u64().unwrap())
        .collect();
    let values: Vec<f64> = samples
        .iter()
        .map(|s| s["sample"].as_f64().unwrap())
        .collect();
    for pair in stamps.windows(2) {
        assert_eq!(pair[0] - pair[1], INCR_MS, "{details}");
    }
    let newest = stamps[0];
    assert_eq!(newest % INCR_MS, 0, "{details}");
    match ends {
        Ends::AtOrBeforeNow => {
            assert!(
                newest <= answered_ms && newest + INCR_MS > asked_ms,
                "{newest} {asked_ms}"
            )
        }
        Ends::AtOrAfterNow => {
            assert!(
                newest >= asked_ms && newest < answered_ms + INCR_MS,
                "{newest} {asked_ms}"
            )
        }
    }
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    let rate = (values[0] - values[1]) * 1000.0 / (stamps[0] - stamps[1]) as f64;
    assert!(close(details["rate"].as_f64().unwrap(), rate), "{details}");
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    assert!(close(details["avg"].as_f64().unwrap(), mean), "{details}");
    let last = values.len() - 1;
    let avg_rate = (values[0] - values[last]) * 1000.0 / (stamps[0] - stamps[last]) as f64;
    assert!(
        close(details["avg_rate"].as_f64().unwrap(), avg_rate),
        "{details}"
    );
    values
}

/// GETs `path` until its body satisfies `ready` (see [`Management::until`]), with the
/// clock read either side of the last request.
async fn until_timed(
    api: &Management,
    path: &str,
    ready: impl Fn(&Value) -> bool,
) -> (Value, u64, u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let asked_ms = now_ms();
        let body = api.get(path).await.expect(200);
        let answered_ms = now_ms();
        if ready(&body) || std::time::Instant::now() > deadline {
            return (body, asked_ms, answered_ms);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The newest sample of a `_details` object (None without samples).
fn newest(details: &Value) -> Option<f64> {
    details["samples"][0]["sample"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_charts_its_lengths_and_message_rates() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let (_connection, channel) = confirming_channel(&broker).await;
    let queue = unique("charted");
    channel
        .queue_declare(&queue, QueueDeclareOptions::default(), Default::default())
        .await
        .unwrap();
    let path = format!("/api/queues/%2F/{}?{LAST_MINUTE}", segment(&queue));
    // Asked while empty (Wharf keeps a queue's history from then on; RabbitMQ has it
    // once it sampled the queue).
    let (empty, asked_ms, answered_ms) =
        until_timed(&api, &path, |q| newest(&q["messages_details"]).is_some()).await;
    let depths = samples_of(
        &empty["messages_details"],
        Ends::AtOrAfterNow,
        asked_ms,
        answered_ms,
    );
    assert!(depths.iter().all(|d| *d == 0.0), "{empty}");
    for _ in 0..3 {
        channel
            .basic_publish("", &queue, Default::default(), b"m", Default::default())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let (shown, asked_ms, answered_ms) = until_timed(&api, &path, |q| {
        newest(&q["messages_details"]) == Some(3.0)
            && newest(&q["message_stats"]["publish_details"]) == Some(3.0)
    })
    .await;
    // The depths rise from 0 to 3 within the minute shown.
    for name in ["messages_details", "messages_ready_details"] {
        let depths = samples_of(&shown[name], Ends::AtOrAfterNow, asked_ms, answered_ms);
        assert_eq!(depths[0], 3.0, "{name}: {shown}");
        assert_eq!(*depths.last().unwrap(), 0.0, "{name}: {shown}");
        assert!(shown[name]["avg_rate"].as_f64().unwrap() > 0.0, "{shown}");
    }
    let unacked = samples_of(
        &shown["messages_unacknowledged_details"],
        Ends::AtOrAfterNow,
        asked_ms,
        answered_ms,
    );
    assert!(unacked.iter().all(|d| *d == 0.0), "{shown}");
    // The publishes, counted, end the minute at whole increments up to now.
    let stats = &shown["message_stats"];
    let published = samples_of(
        &stats["publish_details"],
        Ends::AtOrBeforeNow,
        asked_ms,
        answered_ms,
    );
    assert_eq!(published[0], 3.0, "{shown}");
    assert_eq!(*published.last().unwrap(), 0.0, "{shown}");
    // Without the parameters: rates alone, as before.
    let plain = api
        .get(&format!("/api/queues/%2F/{}", segment(&queue)))
        .await
        .expect(200);
    assert!(
        plain["messages_details"].get("samples").is_none(),
        "{plain}"
    );
    assert!(plain["messages_details"]["rate"].is_number(), "{plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_charts_queue_totals_message_rates_and_churn() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let (_connection, channel) = confirming_channel(&broker).await;
    let queue = unique("overview-charted");
    channel
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    channel
        .basic_publish("", &queue, Default::default(), b"m", Default::default())
        .await
        .unwrap()
        .await
        .unwrap();
    // Other tests may publish meanwhile (an external broker serves them all): the
    // totals reach at least this test's.
    let path = format!("/api/overview?{LAST_MINUTE}");
    let (overview, asked_ms, answered_ms) = until_timed(&api, &path, |o| {
        newest(&o["queue_totals"]["messages_details"]).is_some_and(|n| n >= 1.0)
            && newest(&o["message_stats"]["publish_details"]).is_some_and(|n| n >= 1.0)
    })
    .await;
    let totals = &overview["queue_totals"];
    for name in [
        "messages_details",
        "messages_ready_details",
        "messages_unacknowledged_details",
    ] {
        samples_of(&totals[name], Ends::AtOrBeforeNow, asked_ms, answered_ms);
    }
    assert!(
        newest(&totals["messages_details"]).unwrap() >= 1.0,
        "{overview}"
    );
    let stats = &overview["message_stats"];
    // (RabbitMQ shows deliveries and acks once there were some.)
    for name in ["publish_details", "confirm_details"] {
        samples_of(&stats[name], Ends::AtOrBeforeNow, asked_ms, answered_ms);
    }
    assert!(
        newest(&stats["publish_details"]).unwrap() >= 1.0,
        "{overview}"
    );
    // Churn follows the message rates' range, as in RabbitMQ.
    let churn = &overview["churn_rates"]["connection_created_details"];
    let opened = samples_of(churn, Ends::AtOrBeforeNow, asked_ms, answered_ms);
    assert!(opened[0] >= 1.0, "{overview}");
    // Lengths alone: the totals are sampled, the message rates are not.
    let lengths_only = api
        .get("/api/overview?lengths_age=60&lengths_incr=5")
        .await
        .expect(200);
    assert!(lengths_only["queue_totals"]["messages_details"]["samples"].is_array());
    assert!(lengths_only["message_stats"]["publish_details"]
        .get("samples")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_charts_what_it_took_in_and_routed_out() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let (_connection, channel) = confirming_channel(&broker).await;
    let (exchange, queue) = (unique("x-charted"), unique("q-charted"));
    channel
        .exchange_declare(
            &exchange,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    channel
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            &queue,
            &exchange,
            "",
            QueueBindOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    for _ in 0..2 {
        channel
            .basic_publish(&exchange, "", Default::default(), b"m", Default::default())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let path = format!(
        "/api/exchanges/%2F/{}?msg_rates_age=60&msg_rates_incr=5",
        segment(&exchange)
    );
    let (shown, asked_ms, answered_ms) = until_timed(&api, &path, |x| {
        newest(&x["message_stats"]["publish_in_details"]) == Some(2.0)
            && newest(&x["message_stats"]["publish_out_details"]) == Some(2.0)
    })
    .await;
    for name in ["publish_in_details", "publish_out_details"] {
        let counts = samples_of(
            &shown["message_stats"][name],
            Ends::AtOrBeforeNow,
            asked_ms,
            answered_ms,
        );
        assert_eq!(counts[0], 2.0, "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_charts_its_bytes() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let client_name = unique("charted-client");
    let properties = lapin::ConnectionProperties::default()
        .with_connection_name(client_name.as_str().into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let connection = lapin::Connection::connect(&broker.url(), properties)
        .await
        .expect("connect");
    let _channel = connection.create_channel().await.unwrap();
    let mine = |list: &Value| {
        list.as_array()?
            .iter()
            .find(|c| c["user_provided_name"] == client_name.as_str())
            .and_then(|c| c["name"].as_str())
            .map(str::to_string)
    };
    let listed = api.until("/api/connections", |l| mine(l).is_some()).await;
    let name = mine(&listed).unwrap_or_else(|| panic!("{client_name} not in {listed}"));
    let path = format!(
        "/api/connections/{}?data_rates_age=60&data_rates_incr=5",
        segment(&name)
    );
    // The handshake's bytes, both ways, once sampled.
    let (shown, asked_ms, answered_ms) = until_timed(&api, &path, |c| {
        newest(&c["recv_oct_details"]).is_some_and(|n| n > 0.0)
            && newest(&c["send_oct_details"]).is_some_and(|n| n > 0.0)
    })
    .await;
    for name in ["recv_oct_details", "send_oct_details"] {
        let bytes = samples_of(&shown[name], Ends::AtOrBeforeNow, asked_ms, answered_ms);
        assert!(bytes[0] > 0.0, "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhost_charts_its_queues_by_the_message_rates_range() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let vhost = unique("charted-vhost");
    let vhost_path = format!("/api/vhosts/{}", segment(&vhost));
    api.put(&vhost_path, json!({})).await.expect(201);
    let queue_path = format!("/api/queues/{}/q", segment(&vhost));
    api.put(&queue_path, json!({})).await.expect(201);
    let publish =
        json!({"properties": {}, "routing_key": "q", "payload": "m", "payload_encoding": "string"});
    let publish_path = format!("/api/exchanges/{}/amq.default/publish", segment(&vhost));
    for _ in 0..2 {
        api.post(&publish_path, publish.clone()).await.expect(200);
    }
    let path = format!("{vhost_path}?{LAST_MINUTE}");
    let (shown, asked_ms, answered_ms) =
        until_timed(&api, &path, |v| newest(&v["messages_details"]) == Some(2.0)).await;
    let depths = samples_of(
        &shown["messages_details"],
        Ends::AtOrBeforeNow,
        asked_ms,
        answered_ms,
    );
    assert_eq!(depths[0], 2.0, "{shown}");
    // As in RabbitMQ, a vhost's depths follow msg_rates_age: lengths_age alone gives
    // none.
    let lengths_only = api
        .get(&format!("{vhost_path}?lengths_age=60&lengths_incr=5"))
        .await
        .expect(200);
    assert!(
        lengths_only["messages_details"].get("samples").is_none(),
        "{lengths_only}"
    );
    let rates_only = api
        .get(&format!("{vhost_path}?msg_rates_age=60&msg_rates_incr=5"))
        .await
        .expect(200);
    assert!(
        rates_only["messages_details"]["samples"].is_array(),
        "{rates_only}"
    );
    api.delete(&vhost_path).await.expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ranges_are_refused_as_rabbitmq_refuses_them() {
    let broker = start_broker_with_management().await;
    let api = Management::of(&broker);
    let queue = unique("ranged");
    let queue_path = format!("/api/queues/%2F/{}", segment(&queue));
    api.put(&queue_path, json!({"auto_delete": false}))
        .await
        .expect(201);

    let zero_incr = "lengths_age=60&lengths_incr=0";
    let reason = json!("Invalid range parameters: age 60, incr 0");
    // A detail, the overview, connections and channels: bad_request.
    for path in [
        "/api/overview".to_string(),
        queue_path.clone(),
        "/api/exchanges/%2F/amq.direct".to_string(),
        "/api/vhosts/%2F".to_string(),
        "/api/connections".to_string(),
        "/api/channels".to_string(),
        "/api/connections/no-such-connection".to_string(),
    ] {
        let refused = api.get(&format!("{path}?{zero_incr}")).await;
        assert_eq!(refused.refused(400, "bad_request"), reason, "{path}");
    }
    // The lists of queues, exchanges and vhosts name it otherwise.
    for path in [
        "/api/queues",
        "/api/queues/%2F",
        "/api/exchanges",
        "/api/vhosts",
    ] {
        let refused = api.get(&format!("{path}?{zero_incr}")).await;
        assert_eq!(
            refused.refused(400, "invalid_range_parameters"),
            reason,
            "{path}"
        );
    }
    // Every prefix is checked, in order; the first refused is named.
    for (query, reason) in [
        ("msg_rates_age=0&msg_rates_incr=5", "age 0, incr 5"),
        ("data_rates_age=-60&data_rates_incr=5", "age -60, incr 5"),
        ("node_stats_age=60&node_stats_incr=0", "age 60, incr 0"),
        // At most 500 increments.
        ("lengths_age=2505&lengths_incr=5", "age 2505, incr 5"),
        (
            "msg_rates_age=70&msg_rates_incr=0&lengths_age=60&lengths_incr=0",
            "age 60, incr 0",
        ),
    ] {
        let refused = api.get(&format!("/api/overview?{query}")).await;
        let expected = format!("Invalid range parameters: {reason}");
        assert_eq!(
            refused.refused(400, "bad_request"),
            json!(expected),
            "{query}"
        );
    }
    // A missing queue is missing first.
    let missing = format!("/api/queues/%2F/{}?{zero_incr}", unique("missing"));
    api.get(&missing).await.refused(404, "Object Not Found");
    // Not integers, half a range, or a list RabbitMQ does not sample: ignored.
    for query in [
        "lengths_age=abc&lengths_incr=5",
        "lengths_age=60",
        "lengths_age=60.0&lengths_incr=5",
        "lengths_age=60&lengths_incr=",
    ] {
        let shown = api.get(&format!("{queue_path}?{query}")).await.expect(200);
        assert!(
            shown["messages_details"].get("samples").is_none(),
            "{query}: {shown}"
        );
    }
    api.get(&format!("/api/users?{zero_incr}"))
        .await
        .expect(200);
    // The most RabbitMQ allows (once it sampled the new queue).
    let most = api
        .until(
            &format!("{queue_path}?lengths_age=2500&lengths_incr=5"),
            |q| newest(&q["messages_details"]).is_some(),
        )
        .await;
    let slots = most["messages_details"]["samples"]
        .as_array()
        .unwrap()
        .len();
    assert!((500..=501).contains(&slots), "{slots}");
    if !broker.is_external() {
        // Lists show rates without samples: a list would have to keep a history for
        // every object it shows (RabbitMQ keeps every object's; docs/management.md).
        let listed = api
            .get(&format!("/api/queues/%2F?{LAST_MINUTE}"))
            .await
            .expect(200);
        let mine = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == queue.as_str())
            .unwrap();
        assert!(mine["messages_details"].get("samples").is_none(), "{mine}");
        assert_eq!(slots, 501);
    }
    api.delete(&queue_path).await.expect(204);
}
