//! `kafka_tools::flush_promptly`, which every Kafka commit of the engine
//! and of the bench's passthrough waits on: against the broker, it returns
//! only once each message of the transaction is delivered; with no broker,
//! it gives up at its timeout with rdkafka's flush error. Its flush sends
//! what `linger.ms` still holds at once.

mod common;

use accrual::kafka_tools::{self, Connection};
use common::kafka::{brokers, unique};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// Sends `sent` messages in a transaction with a linger far longer than
/// the flush's timeout, flushes, commits, and reads them back.
fn flush_a_transaction(sent: usize, reports_only_errors: bool) {
    let topic = unique("flush");
    kafka_tools::create_topics(&Connection::plain(&brokers()), &[(&topic, 4)]).expect("topic");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("transactional.id", unique("flush-txn"))
        .set("linger.ms", "30000")
        .set("delivery.report.only.error", reports_only_errors.to_string())
        .create()
        .expect("producer");
    producer.init_transactions(T).expect("init_transactions");
    producer.begin_transaction().expect("begin");
    for i in 0..sent {
        let key = format!("k{i}");
        kafka_tools::send(&producer, BaseRecord::<[u8], [u8]>::to(&topic).key(key.as_bytes()).payload(b"x"))
            .expect("send");
    }
    assert!(producer.in_flight_count() > 0, "the linger keeps messages queued");
    // Within T (10 s) although the linger is 30 s: the flush sends at once.
    kafka_tools::flush_promptly(&producer, T).expect("flushed before the linger ended");
    assert_eq!(producer.in_flight_count(), 0, "nothing left in flight or unreported");
    kafka_tools::commit_transaction(&producer, T).expect("commit");
    let read = kafka_tools::read_topic(&Connection::plain(&brokers()), &topic, true, Duration::from_secs(3))
        .expect("read back");
    assert_eq!(read.len(), sent, "every message committed once");
}

#[test]
fn every_message_of_the_transaction_is_delivered_when_it_returns() {
    flush_a_transaction(5_000, false);
}

#[test]
fn with_reports_of_failures_only_too() {
    // A setting users may pass in `producer_properties`: then there are no
    // reports of delivered messages to serve.
    flush_a_transaction(5_000, true);
}

#[test]
fn without_a_broker_it_gives_up_at_its_timeout() {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    kafka_tools::send(&producer, BaseRecord::<[u8], [u8]>::to("nowhere").payload(b"x")).expect("queued");
    let started = Instant::now();
    let result = kafka_tools::flush_promptly(&producer, Duration::from_millis(300));
    assert!(
        matches!(result, Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))),
        "timed out: {result:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300), "not before its timeout");
    assert_eq!(producer.in_flight_count(), 1, "the message is still queued");
}
