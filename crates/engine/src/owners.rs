//! Which instance owns each input partition, as the consumer group says:
//! the group's description (the broker's `DescribeGroups`) lists every
//! member with its client id (`accrual-<instance_id>`) and its assigned
//! partitions. The group stays the only coordinator; nothing else is
//! exchanged between instances. Read by balance lookups for accounts
//! whose partition another instance owns (see `api`).
//!
//! A broker that leaves members' assignments out of the description (the
//! local one does) names no owner; then, with a changelog, the writer of
//! each partition's last progress record (the instance that committed it
//! last, see `accrual_store::owner`) stands for its owner. After a
//! rebalance it names the former owner until the new one commits, which
//! answers that it does not own the partition, so the caller retries.

use crate::config::EngineConfig;
use accrual_store::changelog;
use accrual_store::owner::Stamped;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The client id prefix the engine gives its clients (see `clients`).
pub const CLIENT_ID_PREFIX: &str = "accrual-";

/// Partition owners, as last read from the group.
#[derive(Debug, Default, Clone)]
pub struct Owners {
    /// Input partition -> owning instance id.
    pub by_partition: BTreeMap<u32, String>,
    /// The group's members: instance id -> member id (which the group's
    /// assignor orders them by, see `standby::heirs`).
    pub members: BTreeMap<String, String>,
    pub read_at: Option<Instant>,
}

/// A member's instance id: from its client id, or else from its member id
/// (brokers make it the client id, a dash and a UUID).
fn instance_of(client_id: &str, member_id: &str) -> Option<String> {
    if let Some(instance) = client_id.strip_prefix(CLIENT_ID_PREFIX) {
        return Some(instance.to_string());
    }
    let rest = member_id.strip_prefix(CLIENT_ID_PREFIX)?;
    let cut = rest.len().checked_sub(37).filter(|&i| rest.as_bytes().get(i) == Some(&b'-'))?;
    Some(rest[..cut].to_string()).filter(|s| !s.is_empty())
}

/// The partitions of `topic` a consumer-protocol member assignment holds
/// (Kafka's `ConsumerProtocolAssignment`: a version, then per topic its
/// name and partitions, then user data); `None` if it does not parse.
pub fn assigned_partitions(assignment: &[u8], topic: &str) -> Option<Vec<u32>> {
    let mut r = Bytes(assignment);
    let _version = r.i16()?;
    let mut out = Vec::new();
    for _ in 0..r.count()? {
        let name_len = usize::try_from(r.i16()?).ok()?;
        let name = r.take(name_len)?;
        let partitions = r.count()?;
        for _ in 0..partitions {
            let p = u32::try_from(r.i32()?).ok()?;
            if name == topic.as_bytes() {
                out.push(p);
            }
        }
    }
    Some(out)
}

/// A big-endian reader over Kafka protocol bytes.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    /// An array's length (-1, null, is empty).
    fn count(&mut self) -> Option<usize> {
        Some(usize::try_from(self.i32()?.max(0)).ok()?.min(self.0.len()))
    }
}

/// Reads the group's members and their partitions of `topic`.
pub fn describe(
    consumer: &BaseConsumer,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> rdkafka::error::KafkaResult<Owners> {
    let list = consumer.fetch_group_list(Some(group), timeout)?;
    let mut owners = Owners { read_at: Some(Instant::now()), ..Owners::default() };
    for info in list.groups().iter().filter(|g| g.name() == group) {
        for member in info.members() {
            let Some(instance) = instance_of(member.client_id(), member.id()) else { continue };
            let partitions =
                member.assignment().and_then(|a| assigned_partitions(a, topic)).unwrap_or_default();
            for p in partitions {
                owners.by_partition.insert(p, instance.clone());
            }
            owners.members.insert(instance, member.id().to_string());
        }
    }
    Ok(owners)
}

/// The instance that wrote the last progress record of each of
/// `partitions` to the changelog `topic`, read from its tail.
pub fn last_writers(
    consumer: &crate::clients::ChangelogReader,
    topic: &str,
    partitions: &[u32],
    timeout: Duration,
) -> rdkafka::error::KafkaResult<BTreeMap<u32, String>> {
    let stamps = tail_progress(consumer, topic, partitions, timeout)?;
    Ok(stamps.into_iter().filter_map(|(p, stamped)| Some((p, stamped.owner?.instance))).collect())
}

/// The last progress record of each of `partitions` in the changelog
/// `topic`'s tail, since the last reset there (a snapshot cut short holds
/// no progress after its reset).
pub fn tail_progress(
    consumer: &crate::clients::ChangelogReader,
    topic: &str,
    partitions: &[u32],
    timeout: Duration,
) -> rdkafka::error::KafkaResult<BTreeMap<u32, Stamped>> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        let p = p as i32;
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset((high - TAIL).max(low)))?;
        }
    }
    let mut stamps = BTreeMap::new();
    let mut open = tpl.count();
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    while open > 0 && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let Some(change) = m.key().and_then(|key| changelog::from_message(key, m.payload())) else {
                    continue;
                };
                let p = m.partition() as u32;
                if changelog::is_reset(&change) {
                    stamps.remove(&p);
                }
                if let Some(stamped) = changelog::stamped_of(&change) {
                    stamps.insert(p, stamped);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Ok(stamps)
}

/// Records read from the end of each changelog partition for its last
/// writer: each transaction ends with its partitions' progress records.
const TAIL: i64 = 64;

/// Keeps `owners` up to date on a thread of its own, every `every`.
pub fn watch(config: &EngineConfig, owners: Arc<RwLock<Owners>>, every: Duration) -> std::io::Result<()> {
    let clients = crate::clients::plain_consumer(config)
        .and_then(|c| Ok((c, crate::clients::changelog_reader(config)?)));
    let (consumer, tail_reader) = match clients {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the group's members; lookups of other partitions fail");
            return Ok(());
        }
    };
    let config = config.clone();
    std::thread::Builder::new().name("group-owners".into()).spawn(move || {
        loop {
            match read(&config, &consumer, &tail_reader) {
                Ok(mut read) => {
                    let mut owners = owners.write().unwrap_or_else(|p| p.into_inner());
                    // A partition whose changelog tail showed no progress
                    // record this time (a large transaction still open past
                    // it) keeps the writer read before.
                    for (p, writer) in &owners.by_partition {
                        read.by_partition.entry(*p).or_insert_with(|| writer.clone());
                    }
                    *owners = read;
                }
                Err(e) => tracing::debug!(error = %e, "could not read the partitions' owners"),
            }
            std::thread::sleep(every);
        }
    })?;
    Ok(())
}

/// The owners as the group describes them, completed from the changelog.
fn read(
    config: &EngineConfig,
    consumer: &BaseConsumer,
    tail_reader: &crate::clients::ChangelogReader,
) -> KafkaResult<Owners> {
    let timeout = Duration::from_millis(config.engine.kafka_timeout_ms);
    let topics = &config.kafka.topics;
    let mut owners = describe(consumer, &config.kafka.group_id, &topics.input, timeout)?;
    let Some(changelog) = &topics.changelog else { return Ok(owners) };
    let metadata = consumer.fetch_metadata(Some(&topics.input), timeout)?;
    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len()) as u32;
    if (0..partitions).all(|p| owners.by_partition.contains_key(&p)) {
        return Ok(owners);
    }
    let all: Vec<u32> = (0..partitions).collect();
    for (p, writer) in last_writers(tail_reader, changelog, &all, timeout)? {
        owners.by_partition.entry(p).or_insert(writer);
    }
    Ok(owners)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut out = 1i16.to_be_bytes().to_vec();
        out.extend((topics.len() as i32).to_be_bytes());
        for (name, partitions) in topics {
            out.extend((name.len() as i16).to_be_bytes());
            out.extend(name.as_bytes());
            out.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                out.extend(p.to_be_bytes());
            }
        }
        out.extend((-1i32).to_be_bytes()); // no user data
        out
    }

    #[test]
    fn a_members_instance_comes_from_its_client_id_or_member_id() {
        let uuid = "b591634f-365d-4448-b890-859f8b2b2ff4";
        assert_eq!(instance_of("accrual-node-2", "x").as_deref(), Some("node-2"));
        assert_eq!(instance_of("", &format!("accrual-node-z-{uuid}")).as_deref(), Some("node-z"));
        assert_eq!(instance_of("", "accrual-short"), None);
        assert_eq!(instance_of("other-app", &format!("other-app-{uuid}")), None);
    }

    #[test]
    fn a_members_partitions_of_the_topic_are_read_from_its_assignment() {
        let bytes = assignment(&[("other", &[0, 1]), ("tx", &[2, 5])]);
        assert_eq!(assigned_partitions(&bytes, "tx"), Some(vec![2, 5]));
        assert_eq!(assigned_partitions(&bytes, "none"), Some(vec![]));
        assert_eq!(assigned_partitions(&bytes[..bytes.len() - 10], "tx"), None, "truncated");
        assert_eq!(assigned_partitions(&[], "tx"), None);
    }
}
