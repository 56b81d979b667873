use bytes::BytesMut;
use wharf_amqp::frame::{Frame, FramePayload};
use wharf_amqp::Method;

use super::*;

/// What a flush wrote, as (ack?, tag, multiple) per frame.
fn flush(confirms: &Confirms) -> Vec<(bool, u64, bool)> {
    let mut out = BytesMut::new();
    let flushed = confirms.flush(&mut out);
    let mut frames = Vec::new();
    while let Some(frame) = Frame::decode(&mut out, 0).unwrap() {
        assert_eq!(frame.channel, 7);
        match frame.payload {
            FramePayload::Method(Method::BasicAck(ack)) => {
                frames.push((true, ack.delivery_tag, ack.multiple))
            }
            FramePayload::Method(Method::BasicNack(nack)) => {
                assert!(!nack.multiple, "nacks are exact");
                assert!(!nack.requeue);
                frames.push((false, nack.delivery_tag, false))
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(flushed.frames, frames.len());
    frames
}

fn published(n: u64) -> Confirms {
    let confirms = Confirms::new(7);
    for expected in 1..=n {
        assert_eq!(confirms.publish(), expected);
    }
    confirms
}

#[test]
fn consecutive_acks_ready_together_go_as_one_multiple_ack() {
    let confirms = published(5);
    assert!(
        confirms.ready(1, true),
        "the first ready confirm queues the channel"
    );
    for tag in 2..=5 {
        assert!(!confirms.ready(tag, true), "already queued");
    }
    assert_eq!(flush(&confirms), [(true, 5, true)]);
    assert_eq!(flush(&confirms), [], "nothing twice");
    assert_eq!(confirms.publish(), 6);
    assert!(confirms.ready(6, true), "queued again after a flush");
    assert_eq!(
        flush(&confirms),
        [(true, 6, false)],
        "one confirm: multiple=false"
    );
}

#[test]
fn a_multiple_ack_stops_below_a_tag_that_still_waits() {
    let confirms = published(6);
    for tag in [1, 2, 4, 5] {
        confirms.ready(tag, true);
    }
    // 3 waits (say, for the disk): 1..2 as one, 4 and 5 each on their own.
    assert_eq!(
        flush(&confirms),
        [(true, 2, true), (true, 4, false), (true, 5, false)]
    );
    confirms.ready(3, true);
    confirms.ready(6, true);
    // 3 and 6 are fresh; 4 and 5 were acks, so one multiple ack at 6 may cover them.
    assert_eq!(flush(&confirms), [(true, 6, true)]);
}

#[test]
fn nacks_are_exact_and_never_covered_by_a_multiple_ack() {
    let confirms = published(7);
    for tag in [1, 2] {
        confirms.ready(tag, true);
    }
    confirms.ready(3, false);
    for tag in [4, 5] {
        confirms.ready(tag, true);
    }
    assert_eq!(
        flush(&confirms),
        [(true, 2, true), (false, 3, false), (true, 5, true)]
    );
    // A nack sent ahead of a waiting tag stops the next run too.
    confirms.ready(7, false);
    assert_eq!(flush(&confirms), [(false, 7, false)]);
    confirms.ready(6, true);
    assert_eq!(flush(&confirms), [(true, 6, false)]);
    assert_eq!(confirms.publish(), 8);
    assert_eq!(confirms.publish(), 9);
    confirms.ready(9, true);
    confirms.ready(8, true);
    assert_eq!(
        flush(&confirms),
        [(true, 9, true)],
        "7 is behind, not covered"
    );
}

#[test]
fn every_tag_is_answered_exactly_once_whatever_the_order() {
    // A fixed shuffle of 1..=200, readied in steps, with a flush after each step.
    let confirms = published(200);
    let mut order: Vec<u64> = (1..=200).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..order.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        order.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    // The client's view: what it still waits for, and what each answer must be.
    let mut outstanding: std::collections::BTreeSet<u64> = (1..=200).collect();
    let mut readied = std::collections::HashMap::new();
    for (step, chunk) in order.chunks(13).enumerate() {
        for &tag in chunk {
            let ok = tag % 17 != 0;
            confirms.ready(tag, ok);
            readied.insert(tag, ok);
        }
        for (ack, tag, multiple) in flush(&confirms) {
            if multiple {
                let covered: Vec<u64> = outstanding.range(..=tag).copied().collect();
                assert!(
                    covered.len() > 1,
                    "step {step}: multiple ack {tag} covers {covered:?}"
                );
                for t in covered {
                    // Never a nack, never a message that still waits.
                    assert_eq!(
                        readied.get(&t),
                        Some(&true),
                        "step {step}: ack {tag} covers {t}"
                    );
                    outstanding.remove(&t);
                }
            } else {
                assert!(
                    outstanding.remove(&tag),
                    "step {step}: {tag} answered twice"
                );
                assert_eq!(readied.get(&tag), Some(&ack), "step {step}: {tag}");
            }
        }
        // Everything ready was answered by this flush.
        for tag in readied.keys() {
            assert!(
                !outstanding.contains(tag),
                "step {step}: {tag} left unanswered"
            );
        }
    }
    assert!(outstanding.is_empty());
}

#[test]
fn a_closed_channel_sends_nothing() {
    let confirms = published(3);
    confirms.ready(1, true);
    confirms.close();
    assert!(!confirms.ready(2, true));
    assert_eq!(flush(&confirms), []);
}

#[test]
fn unknown_and_repeated_tags_are_ignored() {
    let confirms = published(2);
    assert!(!confirms.ready(0, true));
    assert!(!confirms.ready(3, true));
    confirms.ready(1, true);
    assert!(!confirms.ready(1, false), "already ready");
    assert_eq!(flush(&confirms), [(true, 1, false)]);
    assert!(!confirms.ready(1, true), "already answered");
    assert_eq!(flush(&confirms), []);
}

#[test]
fn confirms_ready_at_publish_share_the_ring_with_waiting_ones() {
    let confirms = Confirms::new(7);
    assert_eq!(confirms.publish_ready(true), (1, true));
    assert_eq!(confirms.publish(), 2);
    assert_eq!(confirms.publish_ready(true), (3, false), "already queued");
    assert_eq!(confirms.publish_ready(false), (4, false));
    assert_eq!(
        flush(&confirms),
        [(true, 1, false), (true, 3, false), (false, 4, false)]
    );
    assert!(confirms.ready(2, true));
    assert_eq!(confirms.publish_ready(true), (5, false));
    assert_eq!(flush(&confirms), [(true, 2, false), (true, 5, false)]);
    confirms.close();
    assert_eq!(
        confirms.publish_ready(true),
        (6, false),
        "closed: nothing is queued"
    );
    assert_eq!(flush(&confirms), []);
}
