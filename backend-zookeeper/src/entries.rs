//! Entry znodes: their data (the revision, a time to live, the value: [`entry_data`],
//! [`parse_entry`]), the entry operations a write multi carries ([`EntryWrite`]) and the size
//! of such a multi, which ZooKeeper bounds.

use std::time::Duration;

use bytes::Bytes;
use durable_core::{Operation, Revision, StoreTime, StoredEntry, Unreadable};
use zookeeper_client as zk;

use crate::error::corrupt;
use crate::record;

/// The largest value stored, in bytes: ZooKeeper refuses requests above `jute.maxbuffer`
/// (1 MiB by default), and a write also carries the entry's path, its header (revision and
/// time to live) and a change-log line, so values are capped a little below.
pub const MAX_VALUE_SIZE: usize = 1_000_000;

/// The estimated size of one multi request that is refused before sending (below ZooKeeper's
/// default `jute.maxbuffer` of 1,048,575 bytes).
pub(crate) const MAX_REQUEST: usize = 1_040_000;

/// Set in the revision field of an entry's header when the entry has a time to live: 8 more
/// bytes follow, the TTL in milliseconds. Revisions (znode data versions) stay below 2^31.
const HAS_TTL: u64 = 1 << 63;

/// One entry operation of a write multi. `ttl`: the entry expires that long after the write.
#[derive(Debug)]
pub(crate) enum EntryWrite {
    Create {
        name: String,
        value: Bytes,
        ttl: Option<Duration>,
    },
    Set {
        name: String,
        value: Bytes,
        ttl: Option<Duration>,
        expected: Option<i32>,
    },
    Delete {
        name: String,
        expected: Option<i32>,
    },
}

impl EntryWrite {
    pub(crate) fn name(&self) -> &str {
        match self {
            EntryWrite::Create { name, .. }
            | EntryWrite::Set { name, .. }
            | EntryWrite::Delete { name, .. } => name,
        }
    }

    pub(crate) fn size(&self) -> usize {
        let value = match self {
            EntryWrite::Create { value, .. } | EntryWrite::Set { value, .. } => value.len() + 16,
            EntryWrite::Delete { .. } => 0,
        };
        // The path twice (entry and change log) and the op header with ACLs.
        2 * self.name().len() + value + 96
    }
}

/// The estimated size of the multi request of `writes`: the entry operations, the version
/// record, the head znodes and the change-log node. [`commit`](crate::ZooKeeperBackend::commit)
/// refuses one above [`MAX_REQUEST`].
pub(crate) fn request_size(writes: &[EntryWrite]) -> usize {
    writes.iter().map(EntryWrite::size).sum::<usize>() + 640
}

/// Refuses `writes` if their multi request would pass [`MAX_REQUEST`] (estimated by
/// [`request_size`]), saying what to do instead: a clear cannot be split, its entries can.
pub(crate) fn check_request(
    operation: Operation,
    writes: &[EntryWrite],
) -> Result<(), durable_core::Error> {
    let size = request_size(writes);
    if size <= MAX_REQUEST {
        return Ok(());
    }
    let instead = if operation == Operation::Clear {
        "delete the entries in batches instead"
    } else {
        "split it"
    };
    Err(corrupt(
        operation,
        format!(
            "the write needs a multi of about {size} bytes, more than ZooKeeper accepts in one \
             request ({MAX_REQUEST}): {instead}"
        ),
    ))
}

/// How many of `writes`, from the first, fit in one multi request (see [`request_size`]).
pub(crate) fn fitting(writes: &[EntryWrite]) -> usize {
    let mut size = request_size(&[]);
    writes
        .iter()
        .take_while(|write| {
            size += write.size();
            size <= MAX_REQUEST
        })
        .count()
}

/// An entry znode's data: the revision (8 bytes, big-endian; [`HAS_TTL`] set if a TTL follows),
/// the TTL in milliseconds if any (8 bytes), then the value.
pub(crate) fn entry_data(revision: u64, ttl: Option<Duration>, value: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(16 + value.len());
    match ttl {
        Some(ttl) => {
            data.extend_from_slice(&(revision | HAS_TTL).to_be_bytes());
            data.extend_from_slice(&millis(ttl).to_be_bytes());
        }
        None => data.extend_from_slice(&revision.to_be_bytes()),
    }
    data.extend_from_slice(value);
    data
}

/// `ttl` in whole milliseconds, saturating.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// The server's time of the write that last changed a znode.
pub(crate) fn mtime(stat: &zk::Stat) -> StoreTime {
    StoreTime(u64::try_from(stat.mtime).unwrap_or(0))
}

/// An entry znode as read: its entry, or why it cannot be read (see
/// [`ZooKeeperBackend::read_row`](crate::ZooKeeperBackend::read_row)).
pub(crate) type Row = Result<StoredEntry, Unreadable>;

/// Reads an entry znode's data (see [`entry_data`]); an entry with a TTL expires that long after
/// the znode's `mtime`, the server's time of the write that stored it. The error says what is
/// wrong with the data.
pub(crate) fn parse_entry(
    key: String,
    data: Vec<u8>,
    stat: &zk::Stat,
) -> Result<StoredEntry, String> {
    let word = |at: usize| {
        data.get(at..at + 8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    };
    let Some(first) = word(0) else {
        return Err(format!(
            "the entry holds {} bytes, shorter than its 8-byte header",
            data.len()
        ));
    };
    let (revision, expires_at, len) = if first & HAS_TTL == 0 {
        (first, None, 8)
    } else {
        let Some(ttl) = word(8) else {
            return Err(format!(
                "the entry holds {} bytes, shorter than its 16-byte header (revision and time \
                 to live)",
                data.len()
            ));
        };
        let ttl = Duration::from_millis(ttl);
        (first & !HAS_TTL, Some(mtime(stat).add(ttl)), 16)
    };
    if revision >= record::MAX_COUNTER {
        return Err(format!(
            "the revision in its header, {revision}, is out of range (at least 2^53)"
        ));
    }
    Ok(StoredEntry {
        key,
        // Copied out: the client's buffer is larger than the data, and a slice of it would hold
        // all of it until the value is decoded (a 100k-entry load of 9-byte values held 292 B
        // per entry that way, 129 B with the copy).
        value: Bytes::copy_from_slice(&data[len..]),
        revision: Revision(revision),
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(mtime: i64) -> zk::Stat {
        zk::Stat {
            czxid: 1,
            mzxid: 2,
            pzxid: 2,
            ctime: mtime,
            mtime,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 0,
            num_children: 0,
        }
    }

    #[test]
    fn fitting_counts_the_writes_commit_accepts() {
        let delete = |i: usize| EntryWrite::Delete {
            name: format!("k{i:04}{}", "x".repeat(995)),
            expected: None,
        };
        let writes: Vec<EntryWrite> = (0..1000).map(delete).collect();
        assert!(request_size(&writes) > MAX_REQUEST);
        let fit = fitting(&writes);
        assert!(fit > 0 && fit < writes.len());
        assert!(request_size(&writes[..fit]) <= MAX_REQUEST);
        assert!(request_size(&writes[..=fit]) > MAX_REQUEST);
        assert_eq!(fitting(&writes[..fit]), fit);
        assert_eq!(fitting(&[]), 0);
    }

    #[test]
    fn entry_header_carries_revision_and_ttl() {
        let plain = parse_entry("k".into(), entry_data(7, None, b"v"), &stat(1000)).unwrap();
        assert_eq!(
            (plain.revision, plain.expires_at, &plain.value[..]),
            (Revision(7), None, &b"v"[..])
        );
        let ttl = Some(Duration::from_millis(1500));
        let expiring = parse_entry("k".into(), entry_data(7, ttl, b""), &stat(1000)).unwrap();
        assert_eq!(
            (expiring.revision, expiring.expires_at, &expiring.value[..]),
            (Revision(7), Some(StoreTime(2500)), &b""[..])
        );
        let cases: [(&[u8], &str); 4] = [
            (b"123", "3 bytes, shorter than its 8-byte header"),
            (
                &(7 | HAS_TTL).to_be_bytes(),
                "8 bytes, shorter than its 16-byte header",
            ),
            (
                &(1_u64 << 53).to_be_bytes(),
                "9007199254740992, is out of range",
            ),
            (&u64::MAX.to_be_bytes(), "shorter than its 16-byte header"),
        ];
        for (bad, expected) in cases {
            let error = parse_entry("k".into(), bad.to_vec(), &stat(0)).expect_err(expected);
            assert!(error.contains(expected), "{error}");
        }
        let mut huge = ((1_u64 << 60) | HAS_TTL).to_be_bytes().to_vec();
        huge.extend_from_slice(&5u64.to_be_bytes());
        let error = parse_entry("k".into(), huge, &stat(0)).expect_err("out of range");
        assert!(error.contains("out of range"), "{error}");
        // The longest TTL saturates instead of overflowing.
        let mut forever = (3 | HAS_TTL).to_be_bytes().to_vec();
        forever.extend_from_slice(&u64::MAX.to_be_bytes());
        let entry = parse_entry("k".into(), forever, &stat(1000)).expect("reads");
        assert_eq!(entry.expires_at, Some(StoreTime(u64::MAX)));
    }
}
