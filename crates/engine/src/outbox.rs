//! The outbox: for each input offset, the Kafka messages it must publish
//! (accrual records, dead letters). Written to RocksDB in the same batch as
//! the state, so a crash between the RocksDB commit and the Kafka commit
//! loses nothing: recovery publishes the outbox again.
//!
//! A cycle stores one value per partition, under the offset the cycle
//! started from: every input offset's entry, each with its offset
//! ([`CYCLE_FORMAT`]), one RocksDB write instead of one per offset. Values
//! of [`OUTBOX_FORMAT`] (one offset's entry, under that offset: earlier
//! versions wrote those) are still read.

use accrual_core::accrue::{AccrualRecord, DerivedEvent, NoEffect};
use accrual_core::events::Event;
use accrual_core::pipeline::{Input, Sink};
pub use accrual_core::state::codec::CodecError;
use accrual_core::state::codec::{Reader, Writer};
use accrual_core::time::Timestamp;
use std::collections::BTreeMap;

/// One input offset's messages.
const OUTBOX_FORMAT: u8 = 1;
/// A cycle's entries of one partition: (offset, entry) after (offset, entry).
pub const CYCLE_FORMAT: u8 = 2;

pub const HEADER_SOURCE_PARTITION: &str = "accrual.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "accrual.source.offset";
pub const HEADER_DLQ_REASON: &str = "accrual.dlq.reason";
pub const HEADER_DLQ_DETAIL: &str = "accrual.dlq.detail";
/// On a dead letter cut to [`MAX_DEAD_LETTER_PAYLOAD`]: the original
/// payload's size in bytes and its SHA-256 (hex). The whole message stays
/// findable in the input topic by its source partition and offset.
pub const HEADER_DLQ_ORIGINAL_SIZE: &str = "accrual.dlq.original_size";
pub const HEADER_DLQ_SHA256: &str = "accrual.dlq.sha256";
/// Names the producer transaction that published a message:
/// `<instance>:<epoch>:<sequence>` (see `docs/exactly-once.md`).
pub const HEADER_TXN: &str = "accrual.txn";

/// The most of an input's payload a dead letter carries. With the key and
/// the detail bounded too, a dead letter stays far below the default
/// message size limit (1 MB), so an input near that limit (key, value and
/// headers together) cannot make its own dead letter unpublishable and
/// fail every transaction that carries it.
pub const MAX_DEAD_LETTER_PAYLOAD: usize = 64 * 1024;
/// The most of an input's key, and of the reason's detail, a dead letter
/// carries.
pub const MAX_DEAD_LETTER_KEY: usize = 1024;
pub const MAX_DEAD_LETTER_DETAIL: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Accruals,
    DeadLetter,
    /// Back to the input topic: an event for another account (a referrer's
    /// bonus), keyed by that account.
    Input,
    /// A change of the partition's state, to the changelog topic's
    /// partition of the same number (see `accrual_store::changelog`).
    Changelog,
    /// A deleted key of the partition's state: a tombstone in the changelog.
    ChangelogTombstone,
}

impl Destination {
    fn byte(self) -> u8 {
        match self {
            Destination::Accruals => 0,
            Destination::DeadLetter => 1,
            Destination::Input => 2,
            Destination::Changelog => 3,
            Destination::ChangelogTombstone => 4,
        }
    }
}

/// One message to publish, borrowed from its encoded outbox entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub destination: Destination,
    pub key: &'a [u8],
    pub payload: &'a [u8],
    /// The encoded headers (already checked by [`messages`]).
    headers: &'a [u8],
    header_count: usize,
}

impl<'a> Message<'a> {
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + use<'a> {
        let mut r = Reader::new(self.headers);
        (0..self.header_count).map_while(move |_| Some((r.str().ok()?, r.bytes().ok()?)))
    }
}

/// The messages of one encoded outbox entry, borrowing its bytes.
pub fn messages(bytes: &[u8]) -> Result<Vec<Message<'_>>, CodecError> {
    let mut r = Reader::new(bytes);
    r.version(OUTBOX_FORMAT)?;
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let destination = match r.u8()? {
            0 => Destination::Accruals,
            1 => Destination::DeadLetter,
            2 => Destination::Input,
            3 => Destination::Changelog,
            4 => Destination::ChangelogTombstone,
            _ => return Err(CodecError::Corrupt("outbox destination")),
        };
        let key = r.bytes()?;
        let payload = r.bytes()?;
        let header_count = r.count()?;
        let start = r.position();
        for _ in 0..header_count {
            r.str()?;
            r.bytes()?;
        }
        out.push(Message { destination, key, payload, headers: &bytes[start..r.position()], header_count });
    }
    if !r.is_empty() {
        return Err(CodecError::Corrupt("outbox entry has trailing bytes"));
    }
    Ok(out)
}

/// The entries of a stored outbox value, with their input offsets;
/// `key_offset` is the offset it is stored under.
pub fn stored_entries(key_offset: u64, value: &[u8]) -> Result<Vec<(u64, &[u8])>, CodecError> {
    match value.first() {
        Some(&OUTBOX_FORMAT) => Ok(vec![(key_offset, value)]),
        Some(&CYCLE_FORMAT) => {
            let mut r = Reader::new(&value[1..]);
            let mut out = Vec::new();
            while !r.is_empty() {
                let offset = r.u64()?;
                out.push((offset, r.bytes()?));
            }
            Ok(out)
        }
        Some(&v) => Err(CodecError::Version(v, CYCLE_FORMAT)),
        None => Err(CodecError::Truncated),
    }
}

/// Collects what each input offset of one partition's batch publishes,
/// encoded once as the outbox value RocksDB stores; the producer sends
/// from the same bytes.
pub struct OutboxSink {
    partition: u32,
    /// The value to store ([`CYCLE_FORMAT`]): each entry with its offset
    /// and length; `entries` has their offsets and where they are.
    buf: Writer,
    entries: Vec<(u64, std::ops::Range<usize>)>,
    /// The messages of the offset being collected (not yet in `buf`).
    open: Option<(u64, usize)>,
    messages: Writer,
    json: String,
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
            buf: Writer { buf: vec![CYCLE_FORMAT] },
            entries: Vec::new(),
            open: None,
            messages: Writer::with_capacity(4096),
            json: String::with_capacity(512),
            no_effect: 0,
            duplicates: 0,
            records: crate::metrics::RecordTally::default(),
            dead: BTreeMap::new(),
        }
    }

    /// The same sink, emptied for another cycle of `partition`: its buffers
    /// keep their capacity, so a cycle's outbox (megabytes) is not grown
    /// from nothing, page fault by page fault, every time.
    pub fn recycle(self, partition: u32) -> OutboxSink {
        let OutboxSink { mut buf, mut entries, mut messages, json, .. } = self;
        buf.buf.truncate(1);
        entries.clear();
        messages.buf.clear();
        // Everything else (counters, tallies) starts as a new sink's does.
        OutboxSink { buf, entries, messages, json, ..OutboxSink::new(partition) }
    }

    /// Each input offset's encoded entry, in input order.
    pub fn entries(&mut self) -> impl Iterator<Item = (u64, &[u8])> {
        self.close();
        self.entries.iter().map(|(offset, range)| (*offset, &self.buf.buf[range.clone()]))
    }

    /// The outbox value to store for this batch: every entry with its
    /// offset; `None` if no input offset publishes anything.
    pub fn stored(&mut self) -> Option<&[u8]> {
        self.close();
        (!self.entries.is_empty()).then_some(&self.buf.buf[..])
    }

    /// Writes the open offset's entry: its offset and length, then the
    /// entry (version, count, messages).
    fn close(&mut self) {
        let Some((offset, count)) = self.open.take() else { return };
        // The entry's head (version, count) is written straight after its
        // length, which counts it: one byte, plus the count's varint.
        let count = count as u64;
        let head = 1 + (u64::BITS - (count | 1).leading_zeros()).div_ceil(7) as usize;
        self.buf.u64(offset);
        self.buf.u64((head + self.messages.buf.len()) as u64);
        let start = self.buf.buf.len();
        self.buf.u8(OUTBOX_FORMAT);
        self.buf.u64(count);
        debug_assert_eq!(self.buf.buf.len() - start, head);
        self.buf.buf.extend_from_slice(&self.messages.buf);
        self.messages.buf.clear();
        self.entries.push((offset, start..self.buf.buf.len()));
    }

    /// Adds a message of an input offset (one outbox entry per offset),
    /// with the source headers and `extra` ones.
    fn push(
        &mut self,
        offset: u64,
        destination: Destination,
        key: &[u8],
        payload: &[u8],
        extra: &[(&str, &[u8])],
    ) {
        match self.open {
            Some((open, ref mut count)) if open == offset => *count += 1,
            _ => {
                self.close();
                self.open = Some((offset, 1));
            }
        }
        let w = &mut self.messages;
        w.u8(destination.byte());
        w.bytes(key);
        w.bytes(payload);
        if matches!(destination, Destination::Changelog | Destination::ChangelogTombstone) {
            // A changelog message is a key and a value: the partition is
            // in its key, and nothing reads headers there.
            w.u64(0);
            return;
        }
        w.u64(2 + extra.len() as u64);
        let mut digits = [0; 20];
        w.str(HEADER_SOURCE_PARTITION);
        w.bytes(decimal_text(self.partition.into(), &mut digits));
        w.str(HEADER_SOURCE_OFFSET);
        w.bytes(decimal_text(offset, &mut digits));
        for (k, v) in extra {
            w.str(k);
            w.bytes(v);
        }
    }
}

impl OutboxSink {
    /// Adds the changes a batch staged (captured by the ledger batch,
    /// `accrual_store::changelog`) as changelog messages of `offset`, the
    /// batch's last input: they publish in the transaction that commits
    /// it, and again with the rest of its entry after a crash.
    pub fn changelog(&mut self, offset: u64, changes: &[u8]) -> Result<(), CodecError> {
        let mut key = Vec::new();
        for change in accrual_store::changelog::changes(changes)? {
            accrual_store::changelog::message_key(&change, &mut key);
            match change.value {
                Some(value) => self.push(offset, Destination::Changelog, &key, value, &[]),
                None => self.push(offset, Destination::ChangelogTombstone, &key, &[], &[]),
            }
        }
        Ok(())
    }
}

/// `n` in decimal digits, written into `buf` (without allocating).
fn decimal_text(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

impl Sink for OutboxSink {
    fn accrued(&mut self, offset: u64, _event: &Event<'_>, records: &[AccrualRecord]) {
        let mut json = std::mem::take(&mut self.json);
        for r in records {
            self.records.add(r);
            json.clear();
            r.push_json(&mut json);
            self.push(offset, Destination::Accruals, r.account_id().as_bytes(), json.as_bytes(), &[]);
        }
        self.json = json;
    }

    fn derived(&mut self, offset: u64, event: &DerivedEvent) {
        self.push(offset, Destination::Input, event.account_id.as_bytes(), &event.payload, &[]);
    }

    fn no_effect(&mut self, _offset: u64, _event: &Event<'_>, _why: NoEffect) {
        self.no_effect += 1;
    }

    fn duplicate(&mut self, _offset: u64, _event: &Event<'_>, _first_seen: Timestamp) {
        self.duplicates += 1;
    }

    fn dead_letter(&mut self, input: &Input<'_>, reason: &'static str, detail: &str) {
        *self.dead.entry(reason).or_default() += 1;
        let detail = cut(detail.as_bytes(), MAX_DEAD_LETTER_DETAIL);
        let key = cut(input.key, MAX_DEAD_LETTER_KEY);
        let mut extra: Vec<(&str, &[u8])> =
            vec![(HEADER_DLQ_REASON, reason.as_bytes()), (HEADER_DLQ_DETAIL, detail)];
        let (size, digest);
        let payload = if input.payload.len() > MAX_DEAD_LETTER_PAYLOAD {
            size = input.payload.len().to_string();
            digest = sha256_hex(input.payload);
            extra.push((HEADER_DLQ_ORIGINAL_SIZE, size.as_bytes()));
            extra.push((HEADER_DLQ_SHA256, digest.as_bytes()));
            &input.payload[..MAX_DEAD_LETTER_PAYLOAD]
        } else {
            input.payload
        };
        self.push(input.offset, Destination::DeadLetter, key, payload, &extra);
    }
}

/// At most `max` bytes of `bytes` (a detail cut inside a character is
/// still shown, lossily, by readers).
fn cut(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_is_cut_to_its_bound_with_the_original_size_and_digest() {
        let mut sink = OutboxSink::new(0);
        let payload = vec![b'x'; 900_000];
        let key = vec![b'k'; 100_000];
        let detail = "d".repeat(50_000);
        sink.dead_letter(
            &Input { offset: 3, key: &key, payload: &payload, timestamp: None },
            "too_large",
            &detail,
        );
        let small = b"{}".to_vec();
        sink.dead_letter(
            &Input { offset: 4, key: b"a", payload: &small, timestamp: None },
            "not_an_object",
            "x",
        );
        let entries: Vec<(u64, Vec<u8>)> = sink.entries().map(|(o, b)| (o, b.to_vec())).collect();
        let cut = messages(&entries[0].1).unwrap();
        assert_eq!(cut[0].payload.len(), MAX_DEAD_LETTER_PAYLOAD);
        assert_eq!(cut[0].key.len(), MAX_DEAD_LETTER_KEY);
        let headers: BTreeMap<&str, &[u8]> = cut[0].headers().collect();
        assert_eq!(headers[HEADER_DLQ_DETAIL].len(), MAX_DEAD_LETTER_DETAIL);
        assert_eq!(headers[HEADER_DLQ_ORIGINAL_SIZE], b"900000");
        assert_eq!(headers[HEADER_DLQ_SHA256], sha256_hex(&payload).as_bytes());
        assert_eq!(headers[HEADER_SOURCE_OFFSET], b"3");
        let size: usize =
            cut[0].key.len() + cut[0].payload.len() + headers.values().map(|v| v.len() + 32).sum::<usize>();
        assert!(size < 100_000, "{size} bytes");
        // A small one travels whole, without the extra headers.
        let whole = messages(&entries[1].1).unwrap();
        assert_eq!(whole[0].payload, b"{}");
        assert!(whole[0].headers().all(|(k, _)| k != HEADER_DLQ_ORIGINAL_SIZE && k != HEADER_DLQ_SHA256));
    }

    #[test]
    fn decimal_text_is_display() {
        let mut buf = [0; 20];
        for n in [0, 7, 10, 12_345, u64::MAX] {
            assert_eq!(decimal_text(n, &mut buf), n.to_string().as_bytes());
        }
    }

    #[test]
    fn entries_round_trip_and_corruption_is_an_error() {
        let mut sink = OutboxSink::new(3);
        let input = Input { offset: 7, key: b"acc-1", payload: &[0xff, 0], timestamp: None };
        sink.dead_letter(&input, "invalid_json", "bad");
        let derived =
            DerivedEvent { event_id: "d".into(), account_id: "acc-2".into(), payload: b"{}".to_vec() };
        sink.derived(7, &derived);
        sink.derived(9, &derived);
        let entries: Vec<(u64, Vec<u8>)> = sink.entries().map(|(o, b)| (o, b.to_vec())).collect();
        assert_eq!(entries.iter().map(|e| e.0).collect::<Vec<_>>(), vec![7, 9], "one entry per offset");
        let first = messages(&entries[0].1).expect("decodes");
        assert_eq!(first.len(), 2);
        assert_eq!(
            (first[0].destination, first[0].key, first[0].payload),
            (Destination::DeadLetter, &b"acc-1"[..], &[0xff, 0][..])
        );
        let headers: Vec<_> = first[0].headers().collect();
        assert_eq!(
            headers,
            vec![
                (HEADER_SOURCE_PARTITION, &b"3"[..]),
                (HEADER_SOURCE_OFFSET, &b"7"[..]),
                (HEADER_DLQ_REASON, &b"invalid_json"[..]),
                (HEADER_DLQ_DETAIL, &b"bad"[..]),
            ]
        );
        assert_eq!(
            (first[1].destination, first[1].key, first[1].payload),
            (Destination::Input, &b"acc-2"[..], &b"{}"[..])
        );
        assert_eq!(first[1].headers().count(), 2);
        let stored = sink.stored().expect("entries to store").to_vec();
        let read: Vec<(u64, Vec<u8>)> =
            stored_entries(3, &stored).expect("decodes").into_iter().map(|(o, b)| (o, b.to_vec())).collect();
        assert_eq!(read, entries, "the stored value holds every entry with its offset");
        assert_eq!(
            stored_entries(7, &entries[0].1).expect("one offset's entry"),
            vec![(7, &entries[0].1[..])]
        );
        for cut in 1..stored.len() {
            if let Ok(partial) = stored_entries(3, &stored[..cut]) {
                assert!(partial.len() < 2, "a cut value never decodes whole (cut at {cut})");
            }
        }
        assert!(stored_entries(3, &[9]).is_err() && stored_entries(3, &[]).is_err());
        let mut recycled = sink.recycle(4);
        assert!(recycled.entries.is_empty());
        assert!(recycled.stored().is_none(), "nothing to store for a batch that publishes nothing");
        let bytes = &entries[0].1;
        for cut in 0..bytes.len() {
            assert!(messages(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(messages(&longer).is_err());
        let mut wrong = bytes.clone();
        wrong[2] = 9;
        assert_eq!(messages(&wrong), Err(CodecError::Corrupt("outbox destination")));
    }
}
