//! Durable sets: a thin layer over [`Dict`] whose keys are the members.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::backend::Backend;
use crate::dict::Dict;
use crate::encoding::{Encoding, Json};
use crate::error::{Error, Result};
use crate::options::Options;
use crate::snapshot::Snapshot;
use crate::types::Version;

/// A replicated durable set of members of type `T`.
///
/// Each member is stored as one dictionary entry: the key is the member's JSON text (so equal
/// members give equal keys) and the value is the member encoded with `E`, which the engine decodes
/// once per sync, like any dictionary value. Everything a [`Dict`] does applies unchanged: the
/// same modes, version tokens, deltas, push hints, backup file and change listeners
/// ([`dict`](Self::dict) gives the underlying handle).
///
/// Members must serialize deterministically: structs, enums, numbers, strings, sequences and
/// `BTreeMap` do; a `HashMap` inside a member does not (its order varies), so two equal members
/// could get different keys.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> durable_core::Result<()> {
/// use durable_core::{DurableSet, Json, MemoryStore, Options};
///
/// let store = MemoryStore::new();
/// let admins: DurableSet<String> =
///     DurableSet::open(store.backend("app", "admins")?, Json, Options::new()).await?;
/// assert!(admins.insert("ada".to_owned()).await?);
/// assert!(!admins.insert("ada".to_owned()).await?, "already a member");
/// assert!(admins.contains(&"ada".to_owned()).await);
/// assert_eq!(admins.len().await, 1);
/// # Ok(()) }
/// ```
pub struct DurableSet<T, E = Json> {
    dict: Dict<T, E>,
}

impl<T, E> Clone for DurableSet<T, E> {
    fn clone(&self) -> Self {
        DurableSet {
            dict: self.dict.clone(),
        }
    }
}

impl<T, E> fmt::Debug for DurableSet<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableSet")
            .field("dict", &self.dict)
            .finish()
    }
}

/// The key a member is stored under: its JSON text.
fn member_key<T: Serialize>(member: &T) -> serde_json::Result<String> {
    serde_json::to_string(member)
}

/// [`member_key`], with an error naming the backend.
fn checked_member_key<T: Serialize>(backend: &str, member: &T) -> Result<String> {
    member_key(member).map_err(|e| Error::Encode {
        backend: backend.to_owned(),
        key: "(set member)".to_owned(),
        encoding: "json member key",
        source: Arc::new(e),
    })
}

impl<T, E> DurableSet<T, E>
where
    T: Serialize + Send + Sync + 'static,
    E: Encoding<T>,
{
    /// Opens the set held by `backend` (see [`Dict::open`]).
    pub async fn open<B: Backend>(backend: B, encoding: E, options: Options) -> Result<Self> {
        Ok(DurableSet {
            dict: Dict::open(backend, encoding, options).await?,
        })
    }

    /// The underlying dictionary handle, for [`Dict::sync`]-level control, statistics, health and
    /// change listeners (keys are the members' JSON text).
    pub fn dict(&self) -> &Dict<T, E> {
        &self.dict
    }

    fn key(&self, member: &T) -> Result<String> {
        checked_member_key(self.dict.backend_name(), member)
    }

    /// Adds `member`; true if it was not already a member. Adding a present member writes
    /// nothing and bumps nothing where the backend has insert-if-absent (all built-in backends).
    pub async fn insert(&self, member: T) -> Result<bool> {
        let key = self.key(&member)?;
        if self.dict.capabilities().insert_if_absent {
            return self.dict.insert_if_absent(&key, member).await;
        }
        let present = self.dict.snapshot().contains_key(&key);
        self.dict.insert(&key, member).await?;
        Ok(!present)
    }

    /// Removes `member`; true if it was a member.
    pub async fn remove(&self, member: &T) -> Result<bool> {
        Ok(self.dict.remove(&self.key(member)?).await?.is_some())
    }

    /// Adds every member in one atomic step with one version bump (capability `batch`).
    pub async fn insert_many(
        &self,
        members: impl IntoIterator<Item = T>,
    ) -> Result<Option<Version>> {
        let entries = members
            .into_iter()
            .map(|member| Ok((self.key(&member)?, member)))
            .collect::<Result<Vec<_>>>()?;
        self.dict.insert_many(entries).await
    }

    /// Removes every listed member in one atomic step with one version bump (capability
    /// `batch`); bumps nothing if none was a member.
    pub async fn remove_many<'a>(
        &self,
        members: impl IntoIterator<Item = &'a T>,
    ) -> Result<Option<Version>>
    where
        T: 'a,
    {
        let keys = members
            .into_iter()
            .map(|member| self.key(member))
            .collect::<Result<Vec<_>>>()?;
        self.dict.remove_many(keys).await
    }

    /// True if `member` is in the set, read as [`Dict::read`] does (checked first in autosync
    /// mode; never fails).
    pub async fn contains(&self, member: &T) -> bool {
        self.read().await.contains(member)
    }

    /// The number of members, read as [`Dict::read`] does.
    pub async fn len(&self) -> usize {
        self.read().await.len()
    }

    /// True if the set has no member, read as [`Dict::read`] does.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// The local snapshot, without any check (see [`Dict::snapshot`]).
    pub fn snapshot(&self) -> SetSnapshot<T> {
        SetSnapshot {
            inner: self.dict.snapshot(),
        }
    }

    /// The snapshot to read according to the mode (see [`Dict::read`]).
    pub async fn read(&self) -> SetSnapshot<T> {
        SetSnapshot {
            inner: self.dict.read().await,
        }
    }

    /// Brings the snapshot up to date and returns it (see [`Dict::sync`]).
    pub async fn sync(&self) -> Result<SetSnapshot<T>> {
        Ok(SetSnapshot {
            inner: self.dict.sync().await?,
        })
    }
}

/// A consistent, read-only view of a whole [`DurableSet`] at one version.
pub struct SetSnapshot<T> {
    inner: Snapshot<T>,
}

impl<T: Serialize> SetSnapshot<T> {
    /// True if `member` is in the set (false for a member that cannot be serialized, which no
    /// insert could have stored).
    pub fn contains(&self, member: &T) -> bool {
        member_key(member).is_ok_and(|key| self.inner.contains_key(&key))
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// True if there is no member.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Every member, in no particular order (decoded once per sync, not per call).
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.inner.values()
    }

    /// The version token this snapshot reflects.
    pub fn version(&self) -> Version {
        self.inner.version()
    }
}

impl<T> fmt::Debug for SetSnapshot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SetSnapshot").field(&self.inner).finish()
    }
}
