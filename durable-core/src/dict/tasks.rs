//! Background work: push hints, polling with back-off, and the backup file.

use super::*;

impl<V, E> Inner<V, E>
where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    /// Starts from the backup file after the store failed with `error`. The file is read off the
    /// runtime within the open timeout, and must hold this dictionary in this encoding.
    pub(super) async fn start_from_backup(&self, path: &Path, error: Error) -> Result<()> {
        let read = {
            let path = path.to_owned();
            let max = self.options.max_backup_size;
            tokio::task::spawn_blocking(move || backup::read(&path, max))
        };
        let refused = |reason: String| Error::Backup {
            path: path.to_owned(),
            reason,
            source: None,
        };
        let data = match tokio::time::timeout(self.options.open_timeout, read).await {
            Ok(Ok(read)) => read?,
            Ok(Err(panicked)) => return Err(refused(format!("reading failed: {panicked}"))),
            Err(_) => {
                return Err(refused(format!(
                    "not read within the open timeout of {:?}",
                    self.options.open_timeout
                )));
            }
        };
        let Some(data) = data else {
            return Err(error);
        };
        let location = self.backend.location();
        if data.location != location {
            return Err(refused(format!(
                "holds dictionary {}, this handle opens {location}",
                data.location
            )));
        }
        if data.encoding != self.encoding.name() {
            return Err(refused(format!(
                "written with encoding {}, this dictionary uses {}",
                data.encoding,
                self.encoding.name()
            )));
        }
        let version = data.version();
        let age = data.age();
        let (entries, bad) = self.decode_all(data.into_entries().collect())?;
        let mut state = State::new(
            Map::from_entries(entries),
            version,
            self.origin,
            self.clock.clone(),
            Instant::now(),
        );
        state.bad = Arc::new(bad.into_iter().collect());
        state.set_age(age);
        state.from_backup = true;
        warn!(
            %error,
            path = %path.display(),
            entries = state.map.len(),
            "store unavailable, starting from the backup file (stale)"
        );
        self.state.store(Arc::new(state));
        Ok(())
    }

    /// Writes the current snapshot to the backup file (blocking I/O).
    pub(super) fn write_backup(&self, path: &Path) -> Result<()> {
        let state = self.state.load_full();
        if state.from_backup {
            return Ok(());
        }
        let confirmed = SystemTime::now() - state.age();
        let mut data = BackupData::new(
            self.backend.location(),
            state.version,
            confirmed,
            self.encoding.name(),
        );
        data.entries.reserve(state.map.len());
        for entry in state.map.iter() {
            let bytes = self.encoded(entry.key(), entry.shared())?;
            data.entries.push((
                entry.key().to_owned(),
                bytes.to_vec(),
                entry.shared().revision().0,
                entry.expires_at().map(|at| at.0),
            ));
        }
        backup::write(path, &data)
    }
}

pub(super) async fn hint_loop<V, E>(inner: Arc<Inner<V, E>>, mut hints: Hints)
where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    while let Some(hint) = hints.next().await {
        debug!(?hint, "push hint");
        bump(&inner.counters.hints);
        inner.wake.notify_one();
    }
    warn!(dictionary = %inner.location, "push hints stopped, polling only");
    inner.wake.notify_one();
}

/// The background poller (and, with `until_ok`, the recovery loop after starting from a backup).
pub(super) async fn poll_loop<V, E>(
    inner: &Inner<V, E>,
    interval: Duration,
    max_backoff: Duration,
    until_ok: bool,
) where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    let mut delay = interval;
    loop {
        let jittered = delay.mul_f64(rand::random_range(0.9..1.1));
        tokio::select! {
            () = tokio::time::sleep(jittered) => {}
            () = inner.wake.notified() => {}
        }
        match inner.check().await {
            Ok(()) if until_ok => return,
            Ok(()) => {
                delay = interval;
                inner.sweep_lazily();
            }
            Err(_) => delay = (delay * 2).min(max_backoff),
        }
    }
}

/// Rewrites the backup file when woken, at most once per [`Options::with_backup_interval`].
pub(super) async fn backup_loop<V, E>(inner: Arc<Inner<V, E>>, path: PathBuf)
where
    V: Send + Sync + 'static,
    E: Encoding<V>,
{
    loop {
        inner.backup_wake.notified().await;
        let writer = inner.clone();
        let file = path.clone();
        match tokio::task::spawn_blocking(move || writer.write_backup(&file)).await {
            Ok(Ok(())) => debug!(path = %path.display(), "backup written"),
            Ok(Err(error)) => warn!(%error, "backup not written"),
            Err(error) => warn!(%error, "backup writer failed"),
        }
        // Changes published meanwhile leave a permit in `backup_wake`: one write covers them.
        tokio::time::sleep(inner.options.backup_interval).await;
    }
}
