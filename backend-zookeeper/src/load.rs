//! Full loads and deltas: every entry read in pipelined windows, made consistent with one
//! token through the change log when the dictionary moved meanwhile.

use std::collections::HashMap;

use durable_core::{Changes, Delta, Load, Operation, StoredEntry, Unreadable, Version};
use zookeeper_client as zk;

use crate::ZooKeeperBackend;
use crate::changelog::CatchUp;
use crate::dictionary::{Current, Read};
use crate::error::Failure;
use crate::keys;

/// Attempts of a full load before it gives up with [`Error::Contention`](durable_core::Error::Contention).
const MAX_LOADS: u32 = 8;

/// Entries fetched per pipelined window in a full load or a sweep.
const LOAD_WINDOW: usize = 8192;

/// Every child of `entries`, as [`ZooKeeperBackend::read_all`] read them.
#[derive(Debug)]
pub(crate) struct Listing {
    /// The entries, by znode name.
    pub(crate) entries: Vec<(String, Current)>,
    /// The children that are no entry or cannot be read, by znode name.
    pub(crate) unreadable: Vec<(String, Unreadable)>,
}

impl ZooKeeperBackend {
    /// Lists and reads every entry (pipelined in windows), by znode name. `None`: the tree is
    /// missing. Entries deleted meanwhile are left out; callers check the version afterwards.
    /// A child of `entries` that is no entry (its name is not an encoded key, written by another
    /// program) or whose data cannot be read is listed in [`Listing::unreadable`] instead.
    pub(crate) async fn read_all(&self, client: &zk::Client) -> Result<Option<Listing>, Failure> {
        let names = match client.list_children(&self.paths.entries).await {
            Ok(names) => names,
            Err(zk::Error::NoNode) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut listing = Listing {
            entries: Vec::with_capacity(names.len()),
            unreadable: Vec::new(),
        };
        for window in names.chunks(LOAD_WINDOW) {
            let reads: Vec<_> = window
                .iter()
                .filter_map(|name| {
                    if keys::decode(name).is_none() {
                        // Not read: its name alone makes it no entry (and may not even be a
                        // path this client accepts).
                        let row = self.unreadable(name, keys::why_not_a_key(name));
                        listing.unreadable.push((name.clone(), row));
                        return None;
                    }
                    Some((name, client.get_data(&self.paths.entry(name))))
                })
                .collect();
            for (name, read) in reads {
                match read.await {
                    Ok((data, stat)) => match self.read_row(name, data, &stat) {
                        Ok(entry) => listing.entries.push((
                            name.clone(),
                            Current {
                                entry,
                                znode_version: stat.version,
                            },
                        )),
                        Err(row) => listing.unreadable.push((name.clone(), row)),
                    },
                    Err(zk::Error::NoNode) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(Some(listing))
    }

    /// A full load: the record (after a read barrier), every entry, the record again; if it
    /// moved, a catch-up through the change log to a consistent state. Tried again from the
    /// start when the catch-up cannot serve (too old, too busy), at most [`MAX_LOADS`] times.
    pub(crate) async fn load_once(&self, client: &zk::Client) -> Result<Load, Failure> {
        let operation = Operation::Load;
        for _ in 0..MAX_LOADS {
            let first = self.read_node(client, operation, false).await?;
            let Some(listing) = self.read_all(client).await? else {
                // `entries` is missing under a record: damaged, unless the tree was just
                // wiped or repaired.
                if matches!(self.read_version(client, false).await?, Read::Node(node) if node == first)
                {
                    let what = format!("znode {} is missing", self.paths.entries);
                    return Err(self.damaged(operation, what).into());
                }
                continue;
            };
            let mut entries: HashMap<String, StoredEntry> = listing
                .entries
                .into_iter()
                .map(|(_, current)| (current.entry.key.clone(), current.entry))
                .collect();
            let mut unreadable: HashMap<String, Unreadable> =
                listing.unreadable.into_iter().collect();
            let last = match self.read_version(client, false).await? {
                Read::Node(node) => node,
                Read::Missing => continue,
                Read::Damaged { what, .. } => return Err(self.damaged(operation, what).into()),
            };
            let node = if last == first {
                first
            } else {
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
                    CatchUp::Reached(node) => node,
                    CatchUp::TooOld | CatchUp::TooBusy => continue,
                }
            };
            // Every write records its counter as its entries' revision: an entry above the
            // record's counter means the record is behind what is stored.
            if let Some(entry) = entries
                .values()
                .find(|e| e.revision.0 > node.record.counter)
            {
                let what = format!(
                    "entry {:?} has revision {}, above the version record's counter {}",
                    entry.key, entry.revision.0, node.record.counter
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
                entries: entries.into_values().collect(),
                unreadable: unreadable.into_values().collect(),
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
