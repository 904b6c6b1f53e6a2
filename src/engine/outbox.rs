//! The outbox: for each input offset, the Kafka messages it must publish
//! (accrual records, dead letters). Written to RocksDB in the same batch as
//! the state, so a crash between the RocksDB commit and the Kafka commit
//! loses nothing: recovery publishes the outbox again.

use crate::accrue::{AccrualRecord, DerivedEvent, NoEffect};
use crate::events::Event;
use crate::pipeline::{Input, Sink};
use crate::state::codec::{CodecError, Reader, Writer};
use crate::time::Timestamp;
use std::collections::BTreeMap;

const OUTBOX_FORMAT: u8 = 1;

pub const HEADER_SOURCE_PARTITION: &str = "accrual.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "accrual.source.offset";
pub const HEADER_DLQ_REASON: &str = "accrual.dlq.reason";
pub const HEADER_DLQ_DETAIL: &str = "accrual.dlq.detail";
/// Names the producer transaction that published a message:
/// `<instance>:<epoch>:<sequence>` (see `docs/exactly-once.md`).
pub const HEADER_TXN: &str = "accrual.txn";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Accruals,
    DeadLetter,
    /// Back to the input topic: an event for another account (a referrer's
    /// bonus), keyed by that account.
    Input,
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutMessage {
    pub destination: Destination,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Encodes the messages of one input offset.
pub fn encode(messages: &[OutMessage], w: &mut Writer) {
    w.u8(OUTBOX_FORMAT);
    w.u64(messages.len() as u64);
    for m in messages {
        w.u8(match m.destination {
            Destination::Accruals => 0,
            Destination::DeadLetter => 1,
            Destination::Input => 2,
        });
        w.bytes(&m.key);
        w.bytes(&m.payload);
        w.u64(m.headers.len() as u64);
        for (k, v) in &m.headers {
            w.str(k);
            w.bytes(v);
        }
    }
}

pub fn decode(bytes: &[u8]) -> Result<Vec<OutMessage>, CodecError> {
    let mut r = Reader::new(bytes);
    r.version(OUTBOX_FORMAT)?;
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let destination = match r.u8()? {
            0 => Destination::Accruals,
            1 => Destination::DeadLetter,
            2 => Destination::Input,
            _ => return Err(CodecError::Corrupt("outbox destination")),
        };
        let key = r.bytes()?.to_vec();
        let payload = r.bytes()?.to_vec();
        let h = r.count()?;
        let mut headers = Vec::with_capacity(h);
        for _ in 0..h {
            headers.push((r.str()?.to_string(), r.bytes()?.to_vec()));
        }
        out.push(OutMessage { destination, key, payload, headers });
    }
    Ok(out)
}

/// Collects what each input offset of one partition's batch publishes.
pub struct OutboxSink {
    partition: u32,
    /// (input offset, messages), in input order.
    pub entries: Vec<(u64, Vec<OutMessage>)>,
    pub no_effect: u64,
    pub duplicates: u64,
    /// For metrics: the records of the batch.
    pub records: crate::metrics::RecordTally,
    /// For metrics: dead letters per reason.
    pub dead: BTreeMap<&'static str, u64>,
}

impl OutboxSink {
    pub fn new(partition: u32) -> OutboxSink {
        OutboxSink {
            partition,
            entries: Vec::new(),
            no_effect: 0,
            duplicates: 0,
            records: crate::metrics::RecordTally::default(),
            dead: BTreeMap::new(),
        }
    }

    /// Adds messages of an input offset (one outbox entry per offset).
    fn push(&mut self, offset: u64, mut messages: Vec<OutMessage>) {
        match self.entries.last_mut() {
            Some((last, existing)) if *last == offset => existing.append(&mut messages),
            _ => self.entries.push((offset, messages)),
        }
    }

    fn source_headers(&self, offset: u64) -> Vec<(String, Vec<u8>)> {
        vec![
            (HEADER_SOURCE_PARTITION.to_string(), self.partition.to_string().into_bytes()),
            (HEADER_SOURCE_OFFSET.to_string(), offset.to_string().into_bytes()),
        ]
    }
}

impl Sink for OutboxSink {
    fn accrued(&mut self, offset: u64, _event: &Event<'_>, records: &[AccrualRecord]) {
        if records.is_empty() {
            return;
        }
        for r in records {
            self.records.add(r);
        }
        let messages = records
            .iter()
            .map(|r| {
                let mut payload = Vec::with_capacity(384);
                r.write_json(&mut payload);
                payload.pop(); // the trailing newline belongs to files, not messages
                OutMessage {
                    destination: Destination::Accruals,
                    key: r.account_id.as_bytes().to_vec(),
                    payload,
                    headers: self.source_headers(offset),
                }
            })
            .collect();
        self.push(offset, messages);
    }

    fn derived(&mut self, offset: u64, event: &DerivedEvent) {
        let message = OutMessage {
            destination: Destination::Input,
            key: event.account_id.as_bytes().to_vec(),
            payload: event.payload.clone(),
            headers: self.source_headers(offset),
        };
        self.push(offset, vec![message]);
    }

    fn no_effect(&mut self, _offset: u64, _event: &Event<'_>, _why: NoEffect) {
        self.no_effect += 1;
    }

    fn duplicate(&mut self, _offset: u64, _event: &Event<'_>, _first_seen: Timestamp) {
        self.duplicates += 1;
    }

    fn dead_letter(&mut self, input: &Input<'_>, reason: &'static str, detail: &str) {
        *self.dead.entry(reason).or_default() += 1;
        let mut headers = self.source_headers(input.offset);
        headers.push((HEADER_DLQ_REASON.to_string(), reason.as_bytes().to_vec()));
        headers.push((HEADER_DLQ_DETAIL.to_string(), detail.as_bytes().to_vec()));
        let message = OutMessage {
            destination: Destination::DeadLetter,
            key: input.key.to_vec(),
            payload: input.payload.to_vec(),
            headers,
        };
        self.push(input.offset, vec![message]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let messages = vec![
            OutMessage {
                destination: Destination::Accruals,
                key: b"acc-1".to_vec(),
                payload: b"{}".to_vec(),
                headers: vec![("a".into(), b"1".to_vec())],
            },
            OutMessage {
                destination: Destination::DeadLetter,
                key: vec![],
                payload: vec![0xff, 0],
                headers: vec![],
            },
        ];
        let mut w = Writer::default();
        encode(&messages, &mut w);
        assert_eq!(decode(&w.buf), Ok(messages));
        assert!(decode(&w.buf[..w.buf.len() - 1]).is_err());
    }
}
