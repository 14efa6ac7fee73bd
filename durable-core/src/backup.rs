//! The backup snapshot file: lets a process start while the store is down.
//!
//! Layout: the magic `DURABLE-BACKUP\n`, the format version (u32, little endian), the payload
//! length (u64), the payload's CRC-32 (u32), then the payload: bincode (serde, standard
//! configuration) of [`BackupData`]. Written to a temporary file in the same directory, flushed
//! and renamed over the old one, so a crash leaves the old or the new file, never half of one.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::{Revision, StoreTime, StoredEntry, Version};

const MAGIC: &[u8; 15] = b"DURABLE-BACKUP\n";
/// Format 2 added each entry's expiry, format 3 the token's stamp and parent and the
/// dictionary's location.
const FORMAT: u32 = 3;
const HEADER: usize = MAGIC.len() + 4 + 8 + 4;
/// The largest payload bincode may decode (the file's size is checked first, against the
/// handle's limit).
const MAX_PAYLOAD: usize = 1 << 32;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BackupData {
    /// The dictionary the snapshot belongs to ([`Backend::location`](crate::Backend::location)).
    pub(crate) location: String,
    pub(crate) epoch: u64,
    pub(crate) counter: u64,
    pub(crate) stamp: u64,
    pub(crate) parent: u64,
    /// Milliseconds since the Unix epoch when the snapshot was last confirmed by the store.
    pub(crate) confirmed_unix_ms: u64,
    pub(crate) encoding: String,
    /// Key, encoded value, revision, expiry (store time in milliseconds).
    pub(crate) entries: Vec<(String, Vec<u8>, u64, Option<u64>)>,
}

impl BackupData {
    pub(crate) fn new(
        location: String,
        version: Version,
        confirmed: SystemTime,
        encoding: &str,
    ) -> Self {
        BackupData {
            location,
            epoch: version.epoch(),
            counter: version.counter(),
            stamp: version.stamp(),
            parent: version.parent(),
            confirmed_unix_ms: confirmed
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            encoding: encoding.to_owned(),
            entries: Vec::new(),
        }
    }

    pub(crate) fn version(&self) -> Version {
        Version::stamped(self.epoch, self.counter, self.stamp, self.parent)
    }

    /// How long before now the store last confirmed this snapshot.
    pub(crate) fn age(&self) -> Duration {
        let confirmed = UNIX_EPOCH + Duration::from_millis(self.confirmed_unix_ms);
        SystemTime::now()
            .duration_since(confirmed)
            .unwrap_or_default()
    }

    pub(crate) fn into_entries(self) -> impl Iterator<Item = StoredEntry> {
        self.entries
            .into_iter()
            .map(|(key, value, revision, expires_at)| StoredEntry {
                key,
                value: value.into(),
                revision: Revision(revision),
                expires_at: expires_at.map(StoreTime),
            })
    }
}

fn backup_error(path: &Path, reason: impl Into<String>, source: Option<std::io::Error>) -> Error {
    Error::Backup {
        path: path.to_owned(),
        reason: reason.into(),
        source: source.map(|e| Arc::new(e) as crate::error::Source),
    }
}

/// Writes `data` to `path` atomically.
pub(crate) fn write(path: &Path, data: &BackupData) -> Result<()> {
    let payload = bincode::serde::encode_to_vec(data, bincode::config::standard())
        .map_err(|e| backup_error(path, format!("cannot encode: {e}"), None))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let io = |e: std::io::Error| backup_error(path, "cannot write", Some(e));
    let mut file = tempfile::NamedTempFile::new_in(&dir).map_err(io)?;
    file.write_all(MAGIC).map_err(io)?;
    file.write_all(&FORMAT.to_le_bytes()).map_err(io)?;
    file.write_all(&(payload.len() as u64).to_le_bytes())
        .map_err(io)?;
    file.write_all(&crc32fast::hash(&payload).to_le_bytes())
        .map_err(io)?;
    file.write_all(&payload).map_err(io)?;
    file.as_file().sync_all().map_err(io)?;
    file.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Reads a backup file of at most `max_size` bytes (blocking I/O); `Ok(None)` if it does not
/// exist. Anything but a regular file (a fifo, a device, a directory) is refused before it is
/// opened, and the size is checked before anything is read.
pub(crate) fn read(path: &Path, max_size: u64) -> Result<Option<BackupData>> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(backup_error(path, "cannot read", Some(e))),
    };
    if !metadata.is_file() {
        return Err(backup_error(path, "not a regular file", None));
    }
    if metadata.len() > max_size {
        return Err(backup_error(
            path,
            format!(
                "{} bytes, more than the limit of {max_size} (Options::with_max_backup_size)",
                metadata.len()
            ),
            None,
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(max_size + 1).read_to_end(&mut bytes))
        .map_err(|e| backup_error(path, "cannot read", Some(e)))?;
    if bytes.len() as u64 > max_size {
        return Err(backup_error(
            path,
            "grew past the size limit while read",
            None,
        ));
    }
    let corrupt = |reason: &str| backup_error(path, format!("corrupt backup: {reason}"), None);
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a durable backup file"));
    }
    let field = |at: usize, len: usize| &bytes[MAGIC.len() + at..MAGIC.len() + at + len];
    let format = u32::from_le_bytes(field(0, 4).try_into().expect("4 bytes"));
    if format != FORMAT {
        return Err(corrupt(&format!("unknown format version {format}")));
    }
    let len = u64::from_le_bytes(field(4, 8).try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(field(12, 4).try_into().expect("4 bytes"));
    let payload = &bytes[HEADER..];
    if len != payload.len() as u64 {
        return Err(corrupt("truncated or padded"));
    }
    if crc32fast::hash(payload) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let config = bincode::config::standard().with_limit::<MAX_PAYLOAD>();
    let (data, used) = bincode::serde::decode_from_slice::<BackupData, _>(payload, config)
        .map_err(|e| corrupt(&e.to_string()))?;
    if used != payload.len() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.durable-backup");
        assert!(read(&path, 1 << 20).unwrap().is_none());
        let mut data = BackupData::new(
            "memory/ns/d".into(),
            Version::stamped(7, 9, 3, 2),
            SystemTime::now(),
            "json",
        );
        data.entries.push(("k".into(), b"1".to_vec(), 9, Some(5)));
        write(&path, &data).unwrap();
        let back = read(&path, 1 << 20).unwrap().unwrap();
        assert_eq!(back.location, "memory/ns/d");
        assert_eq!(back.version(), Version::stamped(7, 9, 3, 2));
        assert_eq!(back.version().parent(), 2);
        assert_eq!(back.entries, data.entries);

        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(read(&path, 1 << 20), Err(Error::Backup { .. })));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(read(&path, 1 << 20), Err(Error::Backup { .. })));
        let error = read(&path, 3).unwrap_err().to_string();
        assert!(error.contains("more than the limit"), "{error}");
        let error = read(dir.path(), 1 << 20).unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
    }
}
