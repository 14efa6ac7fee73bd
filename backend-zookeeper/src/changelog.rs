//! Reading the change log: a delta (or a load that saw the version move) catches up from a
//! token to a consistent later state through the log nodes and atomic multi-reads of the
//! changed entries; and forgetting the log.

use std::collections::{HashMap, HashSet};

use durable_core::{Operation, Result, Revision, StoredEntry, Unreadable, Version};
use zookeeper_client as zk;

use crate::ZooKeeperBackend;
use crate::dictionary::{Node, Read};
use crate::entries::{MAX_REQUEST, Row};
use crate::error::{Failure, corrupt};
use crate::keys;
use crate::record::{self, Record};

/// Rounds of catching up with concurrent writers before a delta falls back to a full load
/// (or a load starts again).
const MAX_ROUNDS: u32 = 32;

/// How a catch-up through the change log ended.
#[derive(Debug)]
pub(crate) enum CatchUp {
    /// At this version node: the entries read are its state.
    Reached(Node),
    /// The log cannot serve the start: another epoch or history, trimmed, wiped or damaged.
    TooOld,
    /// Writers kept the catch-up from settling for [`MAX_ROUNDS`] rounds (see
    /// [`ZooKeeperBackend::catch_up`]).
    TooBusy,
}

/// What [`ZooKeeperBackend::snapshot`] read.
#[derive(Debug)]
enum Snapshot {
    /// The record and each requested entry's state (`None`: absent) as of one state.
    At(Node, Vec<(String, Option<Row>)>),
    /// Read in several requests, between which the record moved.
    Moved,
    /// The record is missing or damaged.
    Gone,
}

impl ZooKeeperBackend {
    /// Deletes the dictionary's change log, so that only the current token can be served a
    /// delta (older handles reload in full). Returns how many log nodes were deleted.
    pub async fn forget_history(&self) -> Result<usize> {
        self.store
            .run(Operation::Changes, true, |client| async move {
                let names = match client.list_children(&self.paths.log).await {
                    Ok(names) => names,
                    Err(zk::Error::NoNode) => return Ok(0),
                    Err(e) => return Err(e.into()),
                };
                let deletes: Vec<_> = names
                    .iter()
                    .map(|n| client.delete(&format!("{}/{n}", self.paths.log), None))
                    .collect();
                for delete in deletes {
                    match delete.await {
                        Ok(()) | Err(zk::Error::NoNode) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(names.len())
            })
            .await
    }

    /// Brings `entries` (keyed by key) from the state `since` to a consistent later state,
    /// starting with the version node `target`, by reading the change log. Keys found deleted
    /// go to `removed` with the counter of their last change.
    ///
    /// `since` must be a state of the current history: the same epoch, and the stamp logged for
    /// its counter equal to its stamp (a store put back to an earlier state and written again
    /// has other stamps at the same counters); each read of the log checks again that it
    /// continues the states already read, so a restore in the middle ends the catch-up too.
    ///
    /// The log up to the target names the changed keys, all of them "missing" at first. Each
    /// round then reads every changed key together with the record in one multi-read, an
    /// atomic snapshot at some state `v` (see [`snapshot`](Self::snapshot) for more keys than
    /// one request holds), and the log from the target to `v`:
    /// - if no missing key was written after the target, the reads of the missing keys are
    ///   their state at the target: done, at the target (so writers creating new keys all the
    ///   time cannot hold a catch-up off);
    /// - otherwise the snapshot becomes the target: every key read has its state there, and
    ///   the keys logged after the old target that were not read are missing; none missing:
    ///   done (so writers rewriting the same keys cannot either).
    ///
    /// Only writers that, within one round, rewrite a key first seen in the round before and
    /// also write a key never seen, round after round, hold it off, for [`MAX_ROUNDS`] rounds
    /// ([`CatchUp::TooBusy`]).
    ///
    /// A changed entry that cannot be read goes to `unreadable` (by znode name) instead, and
    /// leaves `entries` and `removed`: it costs its key only.
    #[expect(
        clippy::too_many_arguments,
        reason = "the three maps are the caller's state, brought forward together"
    )]
    pub(crate) async fn catch_up(
        &self,
        client: &zk::Client,
        operation: Operation,
        since: Version,
        mut target: Node,
        entries: &mut HashMap<String, StoredEntry>,
        removed: &mut HashMap<String, Revision>,
        unreadable: &mut HashMap<String, Unreadable>,
    ) -> Result<CatchUp, Failure> {
        let from = Record {
            epoch: since.epoch(),
            counter: since.counter(),
            stamp: since.stamp(),
            parent: since.parent(),
        };
        // Per changed key (znode name): its last logged change up to the target; its state at
        // the target (`None`: absent), or missing.
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut resolved: HashMap<String, Option<Row>> = HashMap::new();
        let mut missing: HashSet<String> = HashSet::new();
        let Some(logged) = self.read_log(client, since, from, target.record).await? else {
            return Ok(CatchUp::TooOld);
        };
        for (name, counter) in logged {
            last.insert(name.clone(), counter);
            missing.insert(name);
        }
        for _ in 0..MAX_ROUNDS {
            if missing.is_empty() {
                self.settle(resolved, &last, entries, removed, unreadable);
                return Ok(CatchUp::Reached(target));
            }
            // Every changed key if they fit in one request, else the missing ones only.
            let mut requested: Vec<String> = missing.iter().cloned().collect();
            let all: usize = missing
                .iter()
                .chain(resolved.keys())
                .map(|name| self.read_size(name))
                .sum();
            if all <= MAX_REQUEST {
                requested.extend(resolved.keys().cloned());
            }
            let (at, reads) = match self.snapshot(client, operation, &requested).await? {
                Snapshot::At(at, reads) => (at, reads),
                // Written between the requests of a snapshot too big for one: another round.
                Snapshot::Moved => continue,
                Snapshot::Gone => return Ok(CatchUp::TooOld),
            };
            if at.record == target.record {
                resolved.extend(reads);
                self.settle(resolved, &last, entries, removed, unreadable);
                return Ok(CatchUp::Reached(target));
            }
            let Some(logged) = self
                .read_log(client, since, target.record, at.record)
                .await?
            else {
                return Ok(CatchUp::TooOld);
            };
            let written: HashSet<&String> = logged.iter().map(|(name, _)| name).collect();
            if missing.iter().all(|name| !written.contains(name)) {
                // The missing keys are as they were at the target.
                for (name, read) in reads {
                    if missing.contains(&name) {
                        resolved.insert(name, read);
                    }
                }
                self.settle(resolved, &last, entries, removed, unreadable);
                return Ok(CatchUp::Reached(target));
            }
            // Move to the snapshot: keys written since the target and not read are missing;
            // keys read have their state at the snapshot; the others did not change.
            let requested: HashSet<String> = requested.into_iter().collect();
            for (name, _) in &logged {
                resolved.remove(name);
            }
            missing = written
                .into_iter()
                .filter(|name| !requested.contains(*name))
                .cloned()
                .collect();
            resolved.extend(reads);
            for (name, counter) in logged {
                last.insert(name, counter);
            }
            target = at;
        }
        Ok(CatchUp::TooBusy)
    }

    /// Reads the change log from state `from` to state `to` (pipelined): the keys written by
    /// each write in (from, to], with its counter, in order. `None` if the log cannot serve
    /// it: another epoch than `since`'s, more than `history` writes after `since`, a node
    /// trimmed, or stamps that are not `from`'s and `to`'s (another history). A node that
    /// cannot be parsed (another program's, or one naming something that cannot be a znode)
    /// does not say which keys its write changed, so it cannot serve either: `None`, and the
    /// caller reloads in full, which reads no log.
    async fn read_log(
        &self,
        client: &zk::Client,
        since: Version,
        from: Record,
        to: Record,
    ) -> Result<Option<Vec<(String, u64)>>, Failure> {
        let history = u64::from(self.store.inner.options.history);
        if to.epoch != since.epoch()
            || to.counter < from.counter
            || to.counter - since.counter() > history
        {
            return Ok(None);
        }
        if to.counter == from.counter {
            return Ok((to.stamp == from.stamp).then(Vec::new));
        }
        let reads: Vec<_> = (from.counter..=to.counter)
            .map(|c| (c, client.get_data(&self.paths.log_node(c))))
            .collect();
        let mut logged = Vec::new();
        for (counter, read) in reads {
            let data = match read.await {
                Ok((data, _)) => data,
                Err(zk::Error::NoNode) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let parsed = record::parse_log(&data)
                .map(|(stamp, names)| (stamp, names.collect::<Vec<_>>()))
                .filter(|(_, names)| names.iter().all(|name| valid_name(name)));
            let Some((stamp, names)) = parsed else {
                tracing::warn!(
                    path = %self.paths.log_node(counter),
                    "zookeeper: a change-log node cannot be parsed; deltas across it reload in full"
                );
                return Ok(None);
            };
            let expected = if counter == from.counter {
                from.stamp
            } else if counter == to.counter {
                to.stamp
            } else {
                stamp
            };
            if stamp != expected {
                return Ok(None);
            }
            if counter > from.counter {
                logged.extend(names.into_iter().map(|name| (name.to_owned(), counter)));
            }
        }
        Ok(Some(logged))
    }

    /// The size of reading entry `name` in a multi-read request: its path and some framing.
    fn read_size(&self, name: &str) -> usize {
        self.paths.entries.len() + name.len() + 24
    }

    /// Reads the version record and the entries `names` in one multi-read, an atomic snapshot;
    /// in several (pipelined, each with the record) when they do not fit in one request, which
    /// make a snapshot if every record read is the same.
    async fn snapshot(
        &self,
        client: &zk::Client,
        operation: Operation,
        names: &[String],
    ) -> Result<Snapshot, Failure> {
        let mut windows: Vec<&[String]> = Vec::new();
        let (mut start, mut size) = (0, 0);
        for (i, name) in names.iter().enumerate() {
            let more = self.read_size(name);
            if i > start && size + more > MAX_REQUEST {
                windows.push(&names[start..i]);
                (start, size) = (i, 0);
            }
            size += more;
        }
        windows.push(&names[start..]);
        let mut reads = Vec::new();
        for window in &windows {
            let mut reader = client.new_multi_reader();
            reader.add_get_data(&self.paths.version)?;
            for name in *window {
                reader.add_get_data(&self.paths.entry(name))?;
            }
            reads.push(reader.commit());
        }
        let mut at: Option<Node> = None;
        let mut states = Vec::with_capacity(names.len());
        let mut moved = false;
        for (window, read) in windows.into_iter().zip(reads) {
            let results = read.await?;
            if results.len() != window.len() + 1 {
                return Err(corrupt(
                    operation,
                    format!(
                        "a multi-read of {} znodes returned {} results",
                        window.len() + 1,
                        results.len()
                    ),
                )
                .into());
            }
            let unexpected = |other: &zk::MultiReadResult| {
                Failure::from(corrupt(
                    operation,
                    format!("unexpected multi-read result {other:?}"),
                ))
            };
            let mut results = results.into_iter();
            let node = match results.next() {
                Some(zk::MultiReadResult::Data { data, stat }) => match Read::of(&data, &stat) {
                    Read::Node(node) => node,
                    Read::Damaged { .. } | Read::Missing => return Ok(Snapshot::Gone),
                },
                Some(zk::MultiReadResult::Error {
                    err: zk::Error::NoNode,
                })
                | None => return Ok(Snapshot::Gone),
                Some(zk::MultiReadResult::Error { err }) => return Err(err.into()),
                Some(other) => return Err(unexpected(&other)),
            };
            moved |= at.is_some_and(|at| at != node);
            at = Some(node);
            for (name, result) in window.iter().zip(results) {
                let state = match result {
                    zk::MultiReadResult::Data { data, stat } => {
                        let row = self.read_row(name, data, &stat);
                        if let Ok(entry) = &row
                            && entry.revision.0 > node.record.counter
                        {
                            // Impossible in one snapshot unless the record is behind the entries.
                            let what = format!(
                                "entry {:?} has revision {}, above the version record's counter {}",
                                entry.key, entry.revision.0, node.record.counter
                            );
                            return Err(self.damaged(operation, what).into());
                        }
                        Some(row)
                    }
                    zk::MultiReadResult::Error {
                        err: zk::Error::NoNode,
                    } => None,
                    zk::MultiReadResult::Error { err } => return Err(err.into()),
                    other => return Err(unexpected(&other)),
                };
                states.push((name.clone(), state));
            }
        }
        Ok(match at {
            _ if moved => Snapshot::Moved,
            Some(at) => Snapshot::At(at, states),
            None => Snapshot::Gone,
        })
    }

    /// Applies the states `resolved` (by znode name) to `entries`, `removed` and `unreadable`;
    /// a deleted key's revision is its last logged change. A znode whose name is not an encoded
    /// key was never an entry: its deletion removes no key, only its unreadable row.
    fn settle(
        &self,
        resolved: HashMap<String, Option<Row>>,
        last: &HashMap<String, u64>,
        entries: &mut HashMap<String, StoredEntry>,
        removed: &mut HashMap<String, Revision>,
        unreadable: &mut HashMap<String, Unreadable>,
    ) {
        for (name, state) in resolved {
            let key = keys::decode(&name);
            match state {
                Some(Ok(entry)) => {
                    unreadable.remove(&name);
                    removed.remove(&entry.key);
                    entries.insert(entry.key.clone(), entry);
                }
                Some(Err(row)) => {
                    if let Some(key) = &key {
                        entries.remove(key);
                        removed.remove(key);
                    }
                    unreadable.insert(name, row);
                }
                None => {
                    unreadable.remove(&name);
                    if let Some(key) = key {
                        entries.remove(&key);
                        let revision = last.get(&name).copied().unwrap_or_default();
                        removed.insert(key, Revision(revision));
                    }
                }
            }
        }
    }
}

/// True if `name` can be the name of a znode this client reads: not `.` or `..`, and none of
/// the code points ZooKeeper refuses in paths (as `zookeeper-client` checks them).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.chars().any(|c| {
            matches!(u32::from(c), 0..=0x1f | 0x7f..=0x9f | 0xd800..=0xf8ff | 0xfff0..=0xffff)
                || c == '/'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_names_must_be_znode_names() {
        for name in ["ka", "notakey", "k%FF", "é"] {
            assert!(valid_name(name), "{name}");
        }
        for name in ["", ".", "..", "a\u{0}", "a\u{7f}", "\u{fff0}", "\u{e000}"] {
            assert!(!valid_name(name), "{name:?}");
        }
    }
}
