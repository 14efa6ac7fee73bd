//! Increments: native ones combined per key into one store write, and the compare-and-swap loop
//! behind `update` and emulated increments.

use super::*;

impl<V, E> Inner<V, E>
where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    /// One native increment in the store, published locally; returns the new value and token.
    pub(super) async fn increment_now(&self, key: &str, delta: i64) -> Result<(i64, Version)> {
        let (value, version) = self
            .write(Operation::Increment, self.backend.increment(key, delta))
            .await?;
        let bytes = Bytes::from(value.to_string());
        let decoded = self.decode(key, &bytes)?;
        self.publish_local(
            version,
            vec![self.entry(key, decoded, bytes.len(), version)],
        )
        .await;
        Ok((value, version))
    }

    /// The compare-and-swap retry loop behind `update` and `increment`. `current` is the caller's
    /// view of the entry; `step` computes the new encoded value (and decoded value) from it,
    /// `None` to delete. Returns the value written and the write's token; `None` if there was
    /// nothing to write (deleting an absent key).
    pub(super) async fn swap_loop<T>(
        &self,
        key: &str,
        mut current: Option<(T, Revision)>,
        read: impl Fn(StoredEntry) -> Result<T>,
        mut step: impl FnMut(Option<&T>) -> Result<Option<(Bytes, V)>>,
    ) -> Result<Option<(Option<Shared<V>>, Version)>> {
        self.require(self.caps.compare_and_swap, Operation::CompareAndSwap)?;
        for _ in 0..self.options.max_update_attempts {
            let new = step(current.as_ref().map(|(value, _)| value))?;
            if new.is_none() && current.is_none() {
                return Ok(None);
            }
            let expected = current.as_ref().map(|(_, revision)| *revision);
            let (bytes, value) = match new {
                Some((bytes, value)) => (Some(bytes), Some(value)),
                None => (None, None),
            };
            if let Some(bytes) = &bytes {
                self.check_size(key, bytes)?;
            }
            let size = bytes.as_ref().map_or(0, Bytes::len);
            let outcome = self
                .write(
                    Operation::CompareAndSwap,
                    self.backend.compare_and_swap(key, expected, bytes),
                )
                .await?;
            match outcome {
                Swap::Swapped(version) => {
                    let write = match value {
                        Some(value) => self.entry(key, value, size, version),
                        None => (key.into(), None),
                    };
                    let written = write.1.as_ref().map(|e| e.shared().clone());
                    self.publish_local(version, vec![write]).await;
                    return Ok(Some((written, version)));
                }
                Swap::Conflict(now) => {
                    current = match now {
                        Some(entry) => {
                            let revision = entry.revision;
                            Some((read(entry)?, revision))
                        }
                        None => None,
                    };
                }
            }
        }
        Err(Error::Contention {
            backend: self.name().to_owned(),
            key: key.to_owned(),
            attempts: self.options.max_update_attempts,
        })
    }
}

/// Writes the queued increments of `key` as one store increment of their sum, batch after
/// batch, until none is waiting.
pub(super) async fn flush_increments<V, E>(inner: Arc<Inner<V, E>>, key: String)
where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    loop {
        let batch = {
            let mut queued = inner.increments.lock();
            let Some(waiting) = queued.get_mut(&key) else {
                return;
            };
            if waiting.is_empty() {
                queued.remove(&key);
                return;
            }
            std::mem::take(waiting)
        };
        let sum = batch
            .iter()
            .try_fold(0i64, |sum, (delta, _)| sum.checked_add(*delta));
        let result = match sum {
            Some(sum) => inner.increment_now(&key, sum).await,
            None => Err(Error::NotAnInteger {
                backend: inner.name().to_owned(),
                key: key.clone(),
            }),
        };
        match result {
            Ok((total, version)) => {
                // The last caller sees the total; each earlier one, the total minus the deltas
                // after its own. All share the one write's token.
                let mut value = total;
                for (delta, sender) in batch.into_iter().rev() {
                    let _ = sender.send(Ok((value, version)));
                    value = value.wrapping_sub(delta);
                }
            }
            Err(error) => {
                for (_, sender) in batch {
                    let _ = sender.send(Err(error.clone()));
                }
            }
        }
    }
}
