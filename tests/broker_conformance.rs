//! Does the broker at ACCRUAL_TEST_BROKERS do what the engine relies on?
//! Each Kafka feature is checked on its own and the result printed as a
//! table; the test fails naming every required feature that is missing.
//! Optional features are reported only (the engine and the tests adapt).

mod common;

use accrual::kafka_tools::{self, Connection};
use common::kafka::{brokers, unique};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

type Check = Result<(), String>;

/// (feature, required by the engine, the check)
type Feature = (&'static str, bool, fn() -> Check);

fn err(what: &str) -> impl Fn(KafkaError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn topic(partitions: i32) -> Result<String, String> {
    let name = unique("conformance");
    kafka_tools::create_topics(&Connection::plain(&brokers()), &[(&name, partitions)])
        .map_err(|e| e.to_string())?;
    Ok(name)
}

fn producer(transactional: bool) -> Result<BaseProducer, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers()).set("enable.idempotence", "true");
    if transactional {
        c.set("transactional.id", unique("conformance-txn"));
    }
    let p: BaseProducer = c.create().map_err(err("create producer"))?;
    if transactional {
        p.init_transactions(T).map_err(err("init_transactions"))?;
    }
    Ok(p)
}

fn send(p: &BaseProducer, topic: &str, partition: i32, payload: &str) -> Check {
    p.send(BaseRecord::<str, str>::to(topic).payload(payload).key(payload).partition(partition))
        .map_err(|(e, _)| format!("send: {e}"))
}

fn count(topic: &str, committed: bool) -> Result<usize, String> {
    kafka_tools::read_topic(&Connection::plain(&brokers()), topic, committed, Duration::from_secs(3))
        .map(|m| m.len())
        .map_err(|e| e.to_string())
}

fn group_consumer(group: &str) -> Result<BaseConsumer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "6000")
        .create()
        .map_err(err("create consumer"))
}

fn committed(c: &BaseConsumer, topic: &str, partition: i32) -> Result<(Offset, String), String> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = c.committed_offsets(tpl, T).map_err(err("committed offsets"))?;
    let e = got.find_partition(topic, partition).ok_or("partition missing")?;
    Ok((e.offset(), e.metadata().to_string()))
}

fn topics_and_keyed_produce() -> Check {
    let t = topic(3)?;
    if kafka_tools::partitions(&Connection::plain(&brokers()), &t).map_err(|e| e.to_string())? != 3 {
        return Err("created topic does not have 3 partitions".into());
    }
    let p = producer(false)?;
    for i in 0..30 {
        p.send(BaseRecord::<str, str>::to(&t).payload("x").key(&format!("k{}", i % 3)))
            .map_err(|(e, _)| format!("send: {e}"))?;
    }
    p.flush(T).map_err(err("flush"))?;
    let read = kafka_tools::read_topic(&Connection::plain(&brokers()), &t, false, Duration::from_secs(3))
        .map_err(|e| e.to_string())?;
    if read.len() != 30 {
        return Err(format!("read {} of 30 messages", read.len()));
    }
    for key in ["k0", "k1", "k2"] {
        let parts: BTreeSet<i32> =
            read.iter().filter(|m| m.key == key.as_bytes()).map(|m| m.partition).collect();
        if parts.len() != 1 {
            return Err(format!("key {key} landed in partitions {parts:?}"));
        }
    }
    Ok(())
}

fn transaction_commit_and_abort() -> Check {
    let t = topic(1)?;
    let p = producer(true)?;
    p.begin_transaction().map_err(err("begin"))?;
    send(&p, &t, 0, "committed")?;
    p.commit_transaction(T).map_err(err("commit_transaction"))?;
    p.begin_transaction().map_err(err("begin"))?;
    send(&p, &t, 0, "aborted")?;
    p.flush(T).map_err(err("flush"))?;
    p.abort_transaction(T).map_err(err("abort_transaction"))?;
    p.begin_transaction().map_err(err("begin after abort"))?;
    p.commit_transaction(T).map_err(err("commit after abort"))?;
    if count(&t, true)? < 1 {
        return Err("committed record not visible to read_committed".into());
    }
    Ok(())
}

fn send_offsets_moves_group_offsets_only_on_commit() -> Check {
    let t = topic(1)?;
    let group = unique("conformance-group");
    let c = group_consumer(&group)?;
    c.subscribe(&[&t]).map_err(err("subscribe"))?;
    let started = Instant::now();
    while c.assignment().map_err(err("assignment"))?.count() == 0 {
        c.poll(Duration::from_millis(100));
        if started.elapsed() > T {
            return Err("consumer never got an assignment".into());
        }
    }
    let p = producer(true)?;
    let offsets = |o: i64| -> Result<TopicPartitionList, String> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&t, 0, Offset::Offset(o)).map_err(err("tpl"))?;
        Ok(tpl)
    };
    let meta = c.group_metadata().ok_or("no group metadata")?;
    p.begin_transaction().map_err(err("begin"))?;
    send(&p, &t, 0, "a")?;
    p.send_offsets_to_transaction(&offsets(7)?, &meta, T).map_err(err("send_offsets_to_transaction"))?;
    p.commit_transaction(T).map_err(err("commit"))?;
    if committed(&c, &t, 0)?.0 != Offset::Offset(7) {
        return Err(format!("after commit the group offset is {:?}, not 7", committed(&c, &t, 0)?.0));
    }
    p.begin_transaction().map_err(err("begin"))?;
    p.send_offsets_to_transaction(&offsets(9)?, &c.group_metadata().ok_or("no group metadata")?, T)
        .map_err(err("send_offsets_to_transaction"))?;
    p.abort_transaction(T).map_err(err("abort"))?;
    if committed(&c, &t, 0)?.0 != Offset::Offset(7) {
        return Err("an aborted transaction moved the group offset".into());
    }
    Ok(())
}

fn open_transactions_hidden_from_read_committed() -> Check {
    let t = topic(1)?;
    let p = producer(true)?;
    p.begin_transaction().map_err(err("begin"))?;
    send(&p, &t, 0, "pending")?;
    p.flush(T).map_err(err("flush"))?;
    let seen = count(&t, true)?;
    p.commit_transaction(T).map_err(err("commit"))?;
    if seen != 0 {
        return Err(format!("read_committed saw {seen} record(s) of an open transaction"));
    }
    if count(&t, true)? != 1 {
        return Err("the record is not visible after commit".into());
    }
    Ok(())
}

/// A producer, then a newer one with the same transactional.id.
fn fenced_pair() -> Result<(String, BaseProducer, BaseProducer), String> {
    let t = topic(1)?;
    let id = unique("conformance-fence");
    let make = || -> Result<BaseProducer, String> {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("transactional.id", &id)
            .create()
            .map_err(err("create"))?;
        p.init_transactions(T).map_err(err("init_transactions"))?;
        Ok(p)
    };
    let old = make()?;
    old.begin_transaction().map_err(err("begin"))?;
    send(&old, &t, 0, "before")?;
    old.flush(T).map_err(err("flush"))?;
    let new = make()?;
    Ok((t, old, new))
}

fn zombie_produce_is_fenced() -> Check {
    let (t, old, _new) = fenced_pair()?;
    send(&old, &t, 0, "after")?;
    if old.flush(T).is_ok() && old.commit_transaction(T).is_ok() {
        return Err("an older producer could still produce and commit after a newer one started".into());
    }
    Ok(())
}

fn zombie_commit_is_fenced() -> Check {
    let (t, old, _new) = fenced_pair()?;
    if old.commit_transaction(T).is_ok() {
        let visible = count(&t, true)?;
        return Err(format!(
            "an older producer committed its transaction after a newer one started ({visible} record(s) visible)"
        ));
    }
    Ok(())
}

fn stale_group_generation_is_fenced() -> Check {
    let t = topic(2)?;
    let group = unique("conformance-group");
    let a = group_consumer(&group)?;
    a.subscribe(&[&t]).map_err(err("subscribe"))?;
    let started = Instant::now();
    while a.assignment().map_err(err("assignment"))?.count() < 2 {
        a.poll(Duration::from_millis(50));
        if started.elapsed() > T {
            return Err("no assignment".into());
        }
    }
    let stale = a.group_metadata().ok_or("no group metadata")?;
    // A second member joins: a new generation.
    let b = group_consumer(&group)?;
    b.subscribe(&[&t]).map_err(err("subscribe"))?;
    let started = Instant::now();
    while b.assignment().map_err(err("assignment"))?.count() == 0 {
        a.poll(Duration::from_millis(50));
        b.poll(Duration::from_millis(50));
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the second member got no partition".into());
        }
    }
    let p = producer(true)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&t, 0, Offset::Offset(1)).map_err(err("tpl"))?;
    p.begin_transaction().map_err(err("begin"))?;
    let offsets = p.send_offsets_to_transaction(&tpl, &stale, T);
    let commit = offsets.is_ok() && p.commit_transaction(T).is_ok();
    if commit {
        return Err("offsets committed with an old group generation".into());
    }
    Ok(())
}

fn groups_split_partitions_and_resume() -> Check {
    let t = topic(4)?;
    let group = unique("conformance-group");
    let a = group_consumer(&group)?;
    let b = group_consumer(&group)?;
    a.subscribe(&[&t]).map_err(err("subscribe"))?;
    b.subscribe(&[&t]).map_err(err("subscribe"))?;
    let started = Instant::now();
    loop {
        a.poll(Duration::from_millis(50));
        b.poll(Duration::from_millis(50));
        let pa: BTreeSet<i32> =
            a.assignment().map_err(err("assignment"))?.elements().iter().map(|e| e.partition()).collect();
        let pb: BTreeSet<i32> =
            b.assignment().map_err(err("assignment"))?.elements().iter().map(|e| e.partition()).collect();
        if !pa.is_empty() && !pb.is_empty() && pa.is_disjoint(&pb) && pa.len() + pb.len() == 4 {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("two members did not split 4 partitions (got {pa:?} and {pb:?})"));
        }
    }
    let mut tpl = TopicPartitionList::new();
    for p in a.assignment().map_err(err("assignment"))?.elements() {
        tpl.add_partition_offset(&t, p.partition(), Offset::Offset(3)).map_err(err("tpl"))?;
    }
    a.commit(&tpl, CommitMode::Sync).map_err(err("commit"))?;
    let partition = tpl.elements().first().map(|e| e.partition()).ok_or("no partition")?;
    // Both leave before either is closed: librdkafka's close can block for
    // good while a cooperative rebalance is under way (one member closing
    // while the other, not polling, is asked to give partitions up); it
    // hung this check once in a full suite run.
    a.unsubscribe();
    b.unsubscribe();
    let leaving = Instant::now();
    while leaving.elapsed() < Duration::from_secs(10) {
        a.poll(Duration::from_millis(50));
        b.poll(Duration::from_millis(50));
        let left = |c: &BaseConsumer| c.assignment().is_ok_and(|t| t.count() == 0);
        if left(&a) && left(&b) {
            break;
        }
    }
    drop(a);
    drop(b);
    let c = group_consumer(&group)?;
    if committed(&c, &t, partition)?.0 != Offset::Offset(3) {
        return Err("a new member does not see the group's committed offset".into());
    }
    Ok(())
}

fn aborted_records_hidden_from_read_committed() -> Check {
    let t = topic(1)?;
    let p = producer(true)?;
    p.begin_transaction().map_err(err("begin"))?;
    send(&p, &t, 0, "aborted")?;
    p.flush(T).map_err(err("flush"))?;
    p.abort_transaction(T).map_err(err("abort"))?;
    match count(&t, true)? {
        0 => Ok(()),
        n => Err(format!("read_committed saw {n} record(s) of an aborted transaction")),
    }
}

fn offset_commit_metadata_is_kept() -> Check {
    let t = topic(1)?;
    let c = group_consumer(&unique("conformance-group"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&t, 0, Offset::Offset(5)).map_err(err("tpl"))?;
    if let Some(mut e) = tpl.find_partition(&t, 0) {
        e.set_metadata("txn-id");
    }
    c.commit(&tpl, CommitMode::Sync).map_err(err("commit"))?;
    match committed(&c, &t, 0)?.1.as_str() {
        "txn-id" => Ok(()),
        other => Err(format!("committed metadata came back as {other:?}")),
    }
}

#[test]
fn the_broker_supports_what_the_engine_needs() {
    let checks: [Feature; 10] = [
        ("topics, keyed produce, consume", true, topics_and_keyed_produce),
        ("transactions commit and abort", true, transaction_commit_and_abort),
        (
            "send_offsets_to_transaction commits group offsets, only on commit",
            true,
            send_offsets_moves_group_offsets_only_on_commit,
        ),
        ("open transactions hidden from read_committed", true, open_transactions_hidden_from_read_committed),
        ("zombie producer's produce fenced by a newer producer", true, zombie_produce_is_fenced),
        (
            "groups split partitions; members resume from committed offsets",
            true,
            groups_split_partitions_and_resume,
        ),
        ("aborted records hidden from read_committed", false, aborted_records_hidden_from_read_committed),
        ("offset commit metadata kept", false, offset_commit_metadata_is_kept),
        ("zombie producer's commit fenced by a newer producer", false, zombie_commit_is_fenced),
        ("offsets from an old group generation refused", false, stale_group_generation_is_fenced),
    ];
    let mut missing = Vec::new();
    println!("broker at {}:", brokers());
    for (name, required, check) in checks {
        let result = check();
        let mark = match (&result, required) {
            (Ok(()), _) => "ok",
            (Err(_), true) => "MISSING",
            (Err(_), false) => "missing (optional)",
        };
        println!(
            "  {mark:<20} {name}{}",
            result.as_ref().err().map(|e| format!(": {e}")).unwrap_or_default()
        );
        if required && result.is_err() {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "the broker lacks features the engine relies on: {missing:?}");
}
