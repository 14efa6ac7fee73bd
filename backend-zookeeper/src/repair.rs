//! Creating a dictionary's tree, and repairing a damaged one as a wipe would (a new epoch, the
//! counter at the highest revision stored), so that no token and no revision repeats.

use durable_core::Operation;
use zookeeper_client as zk;

use crate::ZooKeeperBackend;
use crate::dictionary::{CONTAINERS, Node, Read};
use crate::error::Failure;
use crate::record::{self, Record};

impl ZooKeeperBackend {
    /// Creates the dictionary when its znode is missing, in one multi: the znode with a fresh
    /// version record (a new epoch, counter 0: nothing can be stored below a missing znode),
    /// `entries`, `log`, `stamp` with the head of the new stamp, and the change-log node of
    /// counter 0 carrying that stamp (so a delta can start from the first token).
    pub(crate) async fn ensure_tree(&self, client: &zk::Client) -> Result<(), Failure> {
        let options = self.store.inner.options.create_options();
        client.mkdir(&self.paths.namespace, &options).await?;
        let record = Record::fresh(0);
        let mut multi = client.new_multi_writer();
        multi.add_create(&self.paths.base, &record.encode(), &options)?;
        for name in CONTAINERS {
            multi.add_create(&self.paths.container(name), b"", &options)?;
        }
        multi.add_create(&self.paths.head(record.stamp), b"", &options)?;
        multi.add_create(
            &self.paths.log_node(record.counter),
            &record::log_data(record.stamp, ""),
            &options,
        )?;
        match multi.commit().await {
            // Created; or another process created it meanwhile, or a concurrent wipe removed the
            // namespace again: the caller reads again.
            Ok(_)
            | Err(zk::MultiWriteError::OperationFailed {
                source: zk::Error::NodeExists | zk::Error::NoNode,
                ..
            }) => Ok(()),
            Err(
                zk::MultiWriteError::OperationFailed { source, .. }
                | zk::MultiWriteError::RequestFailed { source },
            ) => Err(source.into()),
        }
    }

    /// Repairs a damaged version record as a wipe would: a fresh epoch and stamp, and the
    /// counter at the highest revision still stored (entries and change-log nodes), so that no
    /// token and no revision repeats. One multi, conditional on the data version `zversion` at
    /// which the damage was seen (so nothing moved meanwhile): the record, whatever container
    /// is missing, the head of the new stamp (old heads deleted) and the change-log node of the
    /// new counter with the new stamp. Returns `Ok` also when another process changed the
    /// record meanwhile: the caller reads again.
    pub(crate) async fn repair(
        &self,
        client: &zk::Client,
        operation: Operation,
        zversion: i32,
        what: &str,
    ) -> Result<(), Failure> {
        self.remember(None);
        let children = match client.list_children(&self.paths.base).await {
            Ok(children) => children,
            Err(zk::Error::NoNode) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let has = |name: &str| children.iter().any(|c| c == name);
        let list = |path: &str| {
            let listed = client.list_children(path);
            async move {
                match listed.await {
                    Ok(names) => Ok(names),
                    Err(zk::Error::NoNode) => Ok(Vec::new()),
                    Err(e) => Err(Failure::from(e)),
                }
            }
        };
        let mut highest = 0;
        // Entries that cannot be read hold no revision: they cannot stand in the way.
        if has("entries") {
            self.read_all(
                client,
                |_| (),
                |_, current| {
                    highest = highest.max(current.entry.revision.0);
                },
            )
            .await?;
        }
        let logs: Vec<u64> = if has("log") {
            list(&self.paths.log)
                .await?
                .iter()
                .filter_map(|name| name.parse().ok())
                .collect()
        } else {
            Vec::new()
        };
        highest = highest.max(logs.iter().copied().max().unwrap_or(0));
        let heads = if has("stamp") {
            list(&self.paths.stamps).await?
        } else {
            Vec::new()
        };
        if highest >= record::MAX_COUNTER {
            return Err(self
                .damaged(
                    operation,
                    format!(
                        "{what}; it cannot be repaired: a stored revision, {highest}, is out of \
                         range"
                    ),
                )
                .into());
        }
        let record = Record::fresh(highest);
        let options = self.store.inner.options.create_options();
        let mut multi = client.new_multi_writer();
        multi.add_set_data(&self.paths.version, &record.encode(), Some(zversion))?;
        for name in CONTAINERS {
            if !has(name) {
                multi.add_create(&self.paths.container(name), b"", &options)?;
            }
        }
        for head in &heads {
            multi.add_delete(&format!("{}/{head}", self.paths.stamps), None)?;
        }
        multi.add_create(&self.paths.head(record.stamp), b"", &options)?;
        if logs.contains(&highest) {
            multi.add_delete(&self.paths.log_node(highest), None)?;
        }
        multi.add_create(
            &self.paths.log_node(highest),
            &record::log_data(record.stamp, ""),
            &options,
        )?;
        match multi.commit().await {
            Ok(results) => {
                if let Some(zk::MultiWriteResult::SetData { stat }) = results.first() {
                    self.remember(Some(Node {
                        record,
                        zversion: stat.version,
                    }));
                }
                tracing::warn!(
                    path = %self.paths.base,
                    damage = what,
                    epoch = %format!("{:016x}", record.epoch),
                    counter = highest,
                    "zookeeper: repaired a damaged version record as a wipe (a new epoch)"
                );
                Ok(())
            }
            // The record moved meanwhile (another process repaired it, or wrote): read again.
            Err(zk::MultiWriteError::OperationFailed { .. }) => Ok(()),
            Err(zk::MultiWriteError::RequestFailed { source }) => Err(source.into()),
        }
    }

    /// After a write found part of the tree missing: creates the dictionary if its znode is
    /// gone; repairs it (a new epoch) if one of its containers is gone, since a missing
    /// `entries` means entries vanished without a version bump, and a missing `stamp` or `log`
    /// means the record's history is gone.
    pub(crate) async fn fix_tree(
        &self,
        client: &zk::Client,
        operation: Operation,
    ) -> Result<(), Failure> {
        let stat = match client.check_stat(&self.paths.version).await? {
            Some(stat) => stat,
            None => return self.ensure_tree(client).await,
        };
        let children = match client.list_children(&self.paths.base).await {
            Ok(children) => children,
            Err(zk::Error::NoNode) => return self.ensure_tree(client).await,
            Err(e) => return Err(e.into()),
        };
        let missing: Vec<String> = CONTAINERS
            .into_iter()
            .filter(|name| !children.iter().any(|c| c == name))
            .map(|name| self.paths.container(name))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let what = format!("znode {} is missing", missing.join(" and "));
        self.repair(client, operation, stat.version, &what).await
    }

    /// After a write found the head of its expected stamp missing: if the head of the current
    /// record's stamp is missing too, it was deleted by hand and the record is repaired;
    /// otherwise the dictionary moved on (or to another history) and the caller reads again.
    pub(crate) async fn check_head(
        &self,
        client: &zk::Client,
        operation: Operation,
    ) -> Result<(), Failure> {
        let Read::Node(node) = self.read_version(client, true).await? else {
            // Missing or damaged: the caller's next read deals with it.
            return Ok(());
        };
        let head = self.paths.head(node.record.stamp);
        if client.check_stat(&head).await?.is_some() {
            return Ok(());
        }
        let what = format!("the head znode {head} of the record's stamp is missing");
        self.repair(client, operation, node.zversion, &what).await
    }
}
