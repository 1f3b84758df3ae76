//! Record formats of the internal `__consumer_offsets` topic (Kafka's
//! `GroupMetadataManager`), the consumer protocol's subscription/assignment bytes, and the
//! group → partition mapping.
//!
//! Keys (big-endian, strings as int16 length + UTF-8):
//! - offset commit, key version 1: `group, topic, partition:i32`
//! - group metadata, key version 2: `group`
//!
//! Offset commit value, version 3: `offset:i64, leader_epoch:i32, metadata:string,
//! commit_timestamp:i64` (v1 adds `expire_timestamp` after commit_timestamp and has no
//! epoch; v0 has neither — both read). Group metadata value, version 3: protocol type,
//! generation, protocol (nullable), leader (nullable), state timestamp, members (each:
//! member id, group instance id (nullable), client id, client host, rebalance timeout,
//! session timeout, subscription bytes, assignment bytes; v0 has no rebalance timeout and
//! no instance id, v1–v2 no instance id, v0–v1 no state timestamp — all read). A null
//! value is a tombstone. Pure functions over bytes; malformed input is an error, never a
//! panic.

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OffsetsKey {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<MemberValue>,
}

/// One member of a group record: what a coordinator that loads the group needs to keep
/// the generation going without a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the group's protocol.
    pub subscription: Vec<u8>,
    pub assignment: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub &'static str);

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed __consumer_offsets record: {}", self.0)
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(FormatError("truncated"))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn i16(&mut self) -> Result<i16, FormatError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, FormatError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Result<i64, FormatError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
    fn nullable_string(&mut self) -> Result<Option<String>, FormatError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let b = self.take(len as usize)?;
        String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|_| FormatError("string is not UTF-8"))
    }
    fn string(&mut self) -> Result<String, FormatError> {
        self.nullable_string()?.ok_or(FormatError("null string"))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, FormatError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Vec::new());
        }
        Ok(self.take(len as usize)?.to_vec())
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let len = s.len().min(i16::MAX as usize);
    out.extend_from_slice(&(len as i16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = i32::try_from(b.len()).expect("a record value is far below 2 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
}

fn put_nullable_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_string(out, s),
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

impl OffsetsKey {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            OffsetsKey::Offset {
                group,
                topic,
                partition,
            } => {
                out.extend_from_slice(&1i16.to_be_bytes());
                put_string(&mut out, group);
                put_string(&mut out, topic);
                out.extend_from_slice(&partition.to_be_bytes());
            }
            OffsetsKey::Group { group } => {
                out.extend_from_slice(&2i16.to_be_bytes());
                put_string(&mut out, group);
            }
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<OffsetsKey, FormatError> {
        let mut r = Reader { buf, at: 0 };
        match r.i16()? {
            0 | 1 => Ok(OffsetsKey::Offset {
                group: r.string()?,
                topic: r.string()?,
                partition: r.i32()?,
            }),
            2 => Ok(OffsetsKey::Group { group: r.string()? }),
            _ => Err(FormatError("unknown key version")),
        }
    }

    pub fn group(&self) -> &str {
        match self {
            OffsetsKey::Offset { group, .. } | OffsetsKey::Group { group } => group,
        }
    }
}

impl OffsetValue {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.metadata.len());
        out.extend_from_slice(&3i16.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.leader_epoch.to_be_bytes());
        put_string(&mut out, &self.metadata);
        out.extend_from_slice(&self.commit_timestamp_ms.to_be_bytes());
        out
    }

    pub fn decode(buf: &[u8]) -> Result<OffsetValue, FormatError> {
        let mut r = Reader { buf, at: 0 };
        let version = r.i16()?;
        let offset = r.i64()?;
        let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
        let metadata = r.string()?;
        let commit_timestamp_ms = r.i64()?;
        match version {
            0 | 2 | 3 => {}
            1 => {
                r.i64()?; // expire timestamp
            }
            _ => return Err(FormatError("unknown offset value version")),
        }
        Ok(OffsetValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp_ms,
        })
    }
}

impl GroupValue {
    /// Version 3, members included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&3i16.to_be_bytes());
        put_string(&mut out, &self.protocol_type);
        out.extend_from_slice(&self.generation_id.to_be_bytes());
        put_nullable_string(&mut out, self.protocol.as_deref());
        put_nullable_string(&mut out, self.leader.as_deref());
        out.extend_from_slice(&self.state_timestamp_ms.to_be_bytes());
        let count = i32::try_from(self.members.len()).expect("a group's size is an i32");
        out.extend_from_slice(&count.to_be_bytes());
        for m in &self.members {
            put_string(&mut out, &m.member_id);
            put_nullable_string(&mut out, m.group_instance_id.as_deref());
            put_string(&mut out, &m.client_id);
            put_string(&mut out, &m.client_host);
            out.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
            out.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
            put_bytes(&mut out, &m.subscription);
            put_bytes(&mut out, &m.assignment);
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<GroupValue, FormatError> {
        let mut r = Reader { buf, at: 0 };
        let version = r.i16()?;
        if !(0..=3).contains(&version) {
            return Err(FormatError("unknown group value version"));
        }
        let protocol_type = r.string()?;
        let generation_id = r.i32()?;
        let protocol = r.nullable_string()?;
        let leader = r.nullable_string()?;
        let state_timestamp_ms = if version >= 2 { r.i64()? } else { -1 };
        let count = r.i32()?;
        // Grown as members parse (never reserved from the count): at most a few bytes of
        // memory per byte of input.
        let mut members = Vec::new();
        for _ in 0..count.max(0) {
            let member_id = r.string()?;
            let group_instance_id = if version >= 3 {
                r.nullable_string()?
            } else {
                None
            };
            let client_id = r.string()?;
            let client_host = r.string()?;
            let rebalance_timeout_ms = if version >= 1 { Some(r.i32()?) } else { None };
            let session_timeout_ms = r.i32()?;
            members.push(MemberValue {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms: rebalance_timeout_ms.unwrap_or(session_timeout_ms),
                session_timeout_ms,
                subscription: r.bytes()?,
                assignment: r.bytes()?,
            });
        }
        Ok(GroupValue {
            protocol_type,
            generation_id,
            protocol,
            leader,
            state_timestamp_ms,
            members,
        })
    }
}

/// Java's `String.hashCode` over UTF-16 code units, as Kafka uses for partitioning groups.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The `__consumer_offsets` partition of a group: `abs(hash) % partitions` (Kafka's
/// `Utils.abs` masks the sign bit).
pub fn partition_for_group(group: &str, partitions: i32) -> i32 {
    assert!(partitions > 0);
    (java_string_hash(group) & 0x7fff_ffff) % partitions
}

/// The topics of a `ConsumerProtocolSubscription` (version, topics[], ...).
pub fn subscription_topics(bytes: &[u8]) -> Result<Vec<String>, FormatError> {
    let mut r = Reader { buf: bytes, at: 0 };
    let _version = r.i16()?;
    let n = r.i32()?;
    (0..n.max(0)).map(|_| r.string()).collect()
}

/// The partitions of a `ConsumerProtocolAssignment` (version, [topic, partitions[]], ...).
pub fn assignment_partitions(bytes: &[u8]) -> Result<Vec<(String, i32)>, FormatError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader { buf: bytes, at: 0 };
    let _version = r.i16()?;
    let topics = r.i32()?;
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let topic = r.string()?;
        let n = r.i32()?;
        for _ in 0..n.max(0) {
            out.push((topic.clone(), r.i32()?));
        }
    }
    let _user_data = r.bytes();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_known_values() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99162322);
        assert_eq!(
            java_string_hash("console-consumer-12345"),
            "console-consumer-12345"
                .encode_utf16()
                .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
        );
        assert_eq!(
            partition_for_group("my-group", 50),
            (java_string_hash("my-group") & 0x7fffffff) % 50
        );
    }

    #[test]
    fn keys_and_values_round_trip() {
        let k = OffsetsKey::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        assert_eq!(OffsetsKey::decode(&k.encode()), Ok(k));
        let g = OffsetsKey::Group { group: "g".into() };
        assert_eq!(OffsetsKey::decode(&g.encode()), Ok(g));
        let v = OffsetValue {
            offset: 42,
            leader_epoch: 1,
            metadata: "m".into(),
            commit_timestamp_ms: 7,
        };
        assert_eq!(OffsetValue::decode(&v.encode()), Ok(v));
        let gv = GroupValue {
            protocol_type: "consumer".into(),
            generation_id: 3,
            protocol: Some("range".into()),
            leader: None,
            state_timestamp_ms: 1,
            members: Vec::new(),
        };
        assert_eq!(GroupValue::decode(&gv.encode()), Ok(gv.clone()));
        let with_members = GroupValue {
            leader: Some("m-1".into()),
            members: vec![
                MemberValue {
                    member_id: "m-1".into(),
                    group_instance_id: Some("i-1".into()),
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 300_000,
                    session_timeout_ms: 10_000,
                    subscription: vec![0, 1, 2],
                    assignment: vec![9; 40],
                },
                MemberValue {
                    member_id: "m-2".into(),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: "/127.0.0.2".into(),
                    rebalance_timeout_ms: 1,
                    session_timeout_ms: 2,
                    subscription: Vec::new(),
                    assignment: Vec::new(),
                },
            ],
            ..gv
        };
        let bytes = with_members.encode();
        assert_eq!(GroupValue::decode(&bytes), Ok(with_members));
        for cut in 0..bytes.len() {
            assert!(GroupValue::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(OffsetsKey::decode(&[0, 1, 0]).is_err());
        assert!(OffsetValue::decode(&[0, 9]).is_err());
    }

    #[test]
    fn older_group_values_are_read() {
        // Version 0: no state timestamp, no rebalance timeout (it is the session timeout),
        // no instance id; version 1 adds the rebalance timeout.
        for version in [0i16, 1] {
            let mut b = version.to_be_bytes().to_vec();
            put_string(&mut b, "consumer");
            b.extend_from_slice(&7i32.to_be_bytes());
            put_nullable_string(&mut b, Some("range"));
            put_nullable_string(&mut b, Some("m"));
            b.extend_from_slice(&1i32.to_be_bytes());
            put_string(&mut b, "m");
            put_string(&mut b, "client");
            put_string(&mut b, "/h");
            if version == 1 {
                b.extend_from_slice(&60_000i32.to_be_bytes());
            }
            b.extend_from_slice(&6_000i32.to_be_bytes());
            put_bytes(&mut b, &[1]);
            b.extend_from_slice(&(-1i32).to_be_bytes()); // a null assignment
            let v = GroupValue::decode(&b).expect("decodes");
            assert_eq!((v.generation_id, v.state_timestamp_ms), (7, -1));
            let m = &v.members[0];
            assert_eq!(m.group_instance_id, None);
            assert_eq!(m.session_timeout_ms, 6_000);
            let rebalance = if version == 1 { 60_000 } else { 6_000 };
            assert_eq!(m.rebalance_timeout_ms, rebalance);
            assert_eq!(
                (m.subscription.as_slice(), m.assignment.len()),
                (&[1u8][..], 0)
            );
        }
    }

    #[test]
    fn consumer_protocol_parsing() {
        let mut sub = vec![0, 1, 0, 0, 0, 2];
        for t in ["a", "bb"] {
            put_string(&mut sub, t);
        }
        sub.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            subscription_topics(&sub).expect("ok"),
            vec!["a".to_string(), "bb".to_string()]
        );
        let mut asg = vec![0, 1, 0, 0, 0, 1];
        put_string(&mut asg, "a");
        asg.extend_from_slice(&2i32.to_be_bytes());
        asg.extend_from_slice(&0i32.to_be_bytes());
        asg.extend_from_slice(&5i32.to_be_bytes());
        assert_eq!(
            assignment_partitions(&asg).expect("ok"),
            vec![("a".to_string(), 0), ("a".to_string(), 5)]
        );
        assert!(assignment_partitions(&[0, 1, 0, 0, 0, 9]).is_err());
    }
}
