//! Full loads and deltas: every entry read in pipelined windows, made consistent with one
//! token through the change log when the dictionary moved meanwhile.

use std::collections::HashMap;

use durable_core::{
    Changes, Delta, Load, LoadParts, Operation, Rows, StoredEntry, Unreadable, Version,
};
use parking_lot::Mutex;
use zookeeper_client as zk;

use crate::ZooKeeperBackend;
use crate::changelog::CatchUp;
use crate::dictionary::{Current, Read};
use crate::error::Failure;
use crate::keys;

/// Attempts of a full load before it gives up with [`Error::Contention`](durable_core::Error::Contention).
const MAX_LOADS: u32 = 8;

/// Entries fetched per pipelined window in a full load or a sweep: enough to keep the server
/// busy (8,192 loaded 100k entries no faster), few enough that the requests in flight stay
/// small beside the entries (they raised a 100k-entry load's heap peak from 1.17x to 1.29x).
const LOAD_WINDOW: usize = 1024;

impl ZooKeeperBackend {
    /// Lists and reads every entry (pipelined in windows), handing each to `keep` with its znode
    /// name as it arrives, so that a caller holds only what it keeps; `listed` learns how many
    /// children there are before the first is read. Returns the children that are no entry or
    /// cannot be read, by znode name (a name that is not an encoded key, written by another
    /// program, or data that cannot be read); `None`: the tree is missing. Entries deleted
    /// meanwhile are left out; callers check the version afterwards.
    pub(crate) async fn read_all(
        &self,
        client: &zk::Client,
        listed: impl FnOnce(usize),
        mut keep: impl FnMut(String, Current),
    ) -> Result<Option<Vec<(String, Unreadable)>>, Failure> {
        let names = match client.list_children(&self.paths.entries).await {
            Ok(names) => names,
            Err(zk::Error::NoNode) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        listed(names.len());
        let mut unreadable = Vec::new();
        let mut names = names.into_iter().peekable();
        while names.peek().is_some() {
            let reads: Vec<_> = names
                .by_ref()
                .take(LOAD_WINDOW)
                .filter_map(|name| {
                    if keys::decode(&name).is_none() {
                        // Not read: its name alone makes it no entry (and may not even be a
                        // path this client accepts).
                        let row = self.unreadable(&name, keys::why_not_a_key(&name));
                        unreadable.push((name, row));
                        return None;
                    }
                    let read = client.get_data(&self.paths.entry(&name));
                    Some((name, read))
                })
                .collect();
            for (name, read) in reads {
                match read.await {
                    Ok((data, stat)) => match self.read_row(&name, data, &stat) {
                        Ok(entry) => keep(
                            name,
                            Current {
                                entry,
                                znode_version: stat.version,
                            },
                        ),
                        Err(row) => unreadable.push((name, row)),
                    },
                    Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(Some(unreadable))
    }

    /// A full load: the record (after a read barrier), every entry, the record again; if it
    /// moved, a catch-up through the change log to a consistent state. Tried again from the
    /// start when the catch-up cannot serve (too old, too busy), at most [`MAX_LOADS`] times.
    ///
    /// With `parts`, rows are handed over in windows as they are read. The catch-up needs every
    /// row by key, so a load whose record moved restarts `parts` and keeps its rows from then on.
    pub(crate) async fn load_once(
        &self,
        client: &zk::Client,
        mut parts: Option<&Mutex<&mut dyn LoadParts>>,
    ) -> Result<Load, Failure> {
        let operation = Operation::Load;
        for _ in 0..MAX_LOADS {
            if let Some(parts) = parts {
                parts.lock().restart();
            }
            let first = self.read_node(client, operation, false).await?;
            let mut rows = Rows::new();
            // The first entry above the record's counter: damage, unless the record moved.
            let mut above = None;
            let hint = |rows| {
                if let Some(parts) = parts {
                    parts.lock().size_hint(rows);
                }
            };
            let listed = self.read_all(client, hint, |_, current| {
                let entry = current.entry;
                if above.is_none() && entry.revision.0 > first.record.counter {
                    above = Some((entry.key.clone(), entry.revision));
                }
                rows.push(entry);
                if let Some(parts) = parts.filter(|_| rows.len() >= LOAD_WINDOW) {
                    parts.lock().rows(std::mem::take(&mut rows));
                }
            });
            let Some(unreadable) = listed.await? else {
                // `entries` is missing under a record: damaged, unless the tree was just
                // wiped or repaired.
                if matches!(self.read_version(client, false).await?, Read::Node(node) if node == first)
                {
                    let what = format!("znode {} is missing", self.paths.entries);
                    return Err(self.damaged(operation, what).into());
                }
                continue;
            };
            let last = match self.read_version(client, false).await? {
                Read::Node(node) => node,
                Read::Missing => continue,
                Read::Damaged { what, .. } => return Err(self.damaged(operation, what).into()),
            };
            // Most loads see no write meanwhile: the entries go out as they were read. Only a
            // catch-up needs them by key.
            let (node, entries, unreadable) = if last == first {
                (first, rows, unreadable)
            } else if let Some(handed) = parts.take() {
                handed.lock().restart();
                continue;
            } else {
                let mut entries: HashMap<String, StoredEntry> =
                    rows.into_iter().map(|e| (e.key.clone(), e)).collect();
                let mut unreadable: HashMap<String, Unreadable> = unreadable.into_iter().collect();
                let mut removed = HashMap::new();
                let caught = self
                    .catch_up(
                        client,
                        operation,
                        first.token(),
                        last,
                        &mut entries,
                        &mut removed,
                        &mut unreadable,
                    )
                    .await?;
                match caught {
                    CatchUp::Reached(node) => (
                        node,
                        entries.into_values().collect(),
                        unreadable.into_iter().collect(),
                    ),
                    CatchUp::TooOld | CatchUp::TooBusy => continue,
                }
            };
            // Every write records its counter as its entries' revision: an entry above the
            // record's counter means the record is behind what is stored. (Without a catch-up,
            // `node` is `first`, which the rows were checked against as they were read.)
            let above = if node == first {
                above
            } else {
                entries
                    .iter()
                    .find(|e| e.revision.0 > node.record.counter)
                    .map(|e| (e.key.clone(), e.revision))
            };
            if let Some((key, revision)) = above {
                let what = format!(
                    "entry {key:?} has revision {}, above the version record's counter {}",
                    revision.0, node.record.counter
                );
                return Err(self.damaged(operation, what).into());
            }
            self.remember(Some(node));
            if !unreadable.is_empty() {
                tracing::debug!(
                    path = %self.paths.base,
                    rows = unreadable.len(),
                    "zookeeper: load found entries that cannot be read"
                );
            }
            return Ok(Load {
                version: node.token(),
                entries,
                unreadable: unreadable.into_iter().map(|(_, row)| row).collect(),
            });
        }
        // Writers kept the dictionary moving faster than every attempt could follow.
        Err(Self::contention(""))
    }

    pub(crate) async fn changes_once(
        &self,
        client: &zk::Client,
        since: Version,
    ) -> Result<Changes, Failure> {
        let operation = Operation::Changes;
        let node = self.read_node(client, operation, false).await?;
        let mut entries = HashMap::new();
        let mut removed = HashMap::new();
        let mut unreadable = HashMap::new();
        let caught = self
            .catch_up(
                client,
                operation,
                since,
                node,
                &mut entries,
                &mut removed,
                &mut unreadable,
            )
            .await?;
        Ok(match caught {
            CatchUp::Reached(node) => Changes::Delta(Delta {
                version: node.token(),
                upserts: entries.into_values().collect(),
                removals: removed.into_keys().collect(),
                unreadable: unreadable.into_values().collect(),
            }),
            CatchUp::TooOld => Changes::TooOld,
            CatchUp::TooBusy => {
                // Writers kept changing new keys: a full load (consistent through its own
                // catch-up, retried) serves instead of failing the sync.
                tracing::debug!(path = %self.paths.base, "zookeeper: delta too busy to follow, falling back to a full load");
                Changes::TooOld
            }
        })
    }
}
