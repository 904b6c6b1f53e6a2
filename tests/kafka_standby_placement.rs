//! Standby copies are placed where the group's assignor will move a lost
//! member's partitions (`accrual::engine::standby::heirs`), since
//! librdkafka has no pluggable assignor to steer them to the copies. This
//! holds the prediction to the real thing: consumers configured as the
//! engine's (client id, cooperative-sticky) share a group on the broker,
//! one leaves, and its partitions must land where `heirs` said.

mod common;

use accrual::engine::owners::{self, CLIENT_ID_PREFIX};
use accrual::engine::standby::heirs;
use accrual::kafka_tools::{self, Connection};
use common::kafka::{brokers, unique};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const SETTLED_FOR: Duration = Duration::from_millis(1500);

fn consumer(group: &str, instance: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("client.id", format!("{CLIENT_ID_PREFIX}{instance}"))
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    c
}

/// Polls every member until all `partitions` are assigned, each once, to
/// every member, and the assignment has not changed for a while; returns
/// partition -> member.
fn settled(members: &BTreeMap<String, BaseConsumer>, topic: &str, partitions: u32) -> BTreeMap<u32, String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = BTreeMap::new();
    let mut since = Instant::now();
    while Instant::now() < deadline {
        let mut now = BTreeMap::new();
        let mut held = 0;
        for (name, c) in members {
            let _ = c.poll(Duration::from_millis(20));
            for e in c.assignment().expect("assignment").elements_for_topic(topic) {
                now.insert(e.partition() as u32, name.clone());
                held += 1;
            }
        }
        if now != last {
            last = now;
            since = Instant::now();
        } else if held == partitions as usize
            && last.len() == partitions as usize
            && last.values().collect::<BTreeSet<_>>().len() == members.len()
            && since.elapsed() > SETTLED_FOR
        {
            return last;
        }
    }
    panic!("the group did not settle on an assignment of {partitions} partitions: {last:?}");
}

/// Four members share a topic of eight partitions; three leave one by one
/// (from loads 2-2-2-2, then from uneven 3-3-2 the one with three, then
/// from 4-4), and each time the leaver's partitions must land where
/// `heirs` said.
#[test]
fn heirs_match_the_assignor_as_members_leave_one_by_one() {
    let partitions = 8;
    let topic = unique("placement");
    let group = unique("placement-group");
    kafka_tools::create_topics(&Connection::plain(&brokers()), &[(&topic, partitions as i32)])
        .expect("topic");
    let mut members = BTreeMap::new();
    for name in ["node-a", "node-b", "node-c", "node-d"] {
        members.insert(name.to_string(), consumer(&group, name, &topic));
    }
    let mut before = settled(&members, &topic, partitions);
    for lost in ["node-c", "node-a", "node-d"] {
        let any = members.values().next().expect("a member");
        let described = owners::describe(any, &group, &topic, Duration::from_secs(10)).expect("describe");
        assert_eq!(
            described.members.len(),
            members.len(),
            "the group lists every member: {:?}",
            described.members
        );

        drop(members.remove(lost));
        let after = settled(&members, &topic, partitions);
        let mut staying = described.members.clone();
        staying.remove(lost);
        let predicted = heirs(&before, &staying);
        let moved: BTreeMap<u32, String> =
            before.iter().filter(|(_, o)| *o == lost).map(|(p, _)| (*p, after[p].clone())).collect();
        assert_eq!(
            predicted, moved,
            "{lost} lost: predicted heirs differ from the assignor's\n\
             before: {before:?}\nafter: {after:?}\nmember ids: {:?}",
            described.members
        );
        let kept = before.iter().filter(|(_, o)| *o != lost).all(|(p, o)| after[p] == *o);
        assert!(kept, "the staying members' partitions moved: before {before:?}, after {after:?}");
        before = after;
    }
}
