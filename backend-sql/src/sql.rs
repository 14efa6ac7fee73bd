//! The SQL text: every statement a backend runs, built once per store from the table prefix
//! and what its dialect writes differently ([`DialectSql`]).

use crate::dialect::Dialect;
use crate::options::{MAX_KEY_LEN, SWEEP_STEP};
use crate::record::COUNTER_LIMIT;

/// How many parameters one row of a multi-row upsert binds.
pub(crate) const UPSERT_PARAMS: usize = 7;

/// The table names of one prefix.
#[derive(Debug, Clone)]
pub struct Tables {
    /// The prefix (an identifier, see [`SqlOptions`](crate::SqlOptions)).
    #[cfg(feature = "postgres")]
    pub(crate) prefix: String,
    /// `{prefix}_entries`.
    pub(crate) entries: String,
    /// `{prefix}_versions`.
    pub(crate) versions: String,
    /// `{prefix}_stamps`.
    pub(crate) stamps: String,
}

impl Tables {
    fn new(prefix: &str) -> Tables {
        Tables {
            #[cfg(feature = "postgres")]
            prefix: prefix.to_owned(),
            entries: format!("{prefix}_entries"),
            versions: format!("{prefix}_versions"),
            stamps: format!("{prefix}_stamps"),
        }
    }

    /// What a valid version record meets where columns hold only integers: its counter can be
    /// bumped and stays below 2^53; stamp 0 (or NULL) means "written before stamps existed".
    pub(crate) fn valid_counter(&self) -> String {
        format!("counter >= 0 AND counter < {COUNTER_LIMIT} AND stamp <> 0")
    }

    /// A revision a version record's counter may take where columns hold only integers: rows
    /// written by another program with a revision out of this range are reported unreadable,
    /// and never chosen as a counter or as the oldest served token.
    pub(crate) fn valid_revision(&self) -> String {
        format!("revision >= 0 AND revision < {COUNTER_LIMIT}")
    }

    /// The bump of a valid version record (`valid`), parameters (stamp, ns, dict): the counter
    /// goes up by one, the old stamp becomes the parent (assignments run left to right).
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    pub(crate) fn bump_update(&self, valid: &str) -> String {
        format!(
            "UPDATE {} SET counter = counter + 1, parent = stamp, stamp = ? WHERE namespace = ? \
             AND dictionary = ? AND {valid}",
            self.versions
        )
    }

    /// The tables and indexes where the database has partial indexes and `ON CONFLICT`
    /// (PostgreSQL, SQLite): `int` and `bytes` are its column types, `stamps_options` ends the
    /// stamp history's definition.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn schema(&self, int: &str, bytes: &str, stamps_options: &str) -> Vec<String> {
        let (e, v, s) = (&self.entries, &self.versions, &self.stamps);
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {v} (namespace TEXT NOT NULL, dictionary TEXT NOT \
                 NULL, epoch {int} NOT NULL, counter {int} NOT NULL, oldest_served {int} NOT NULL \
                 DEFAULT 0, stamp {int}, parent {int} NOT NULL DEFAULT 0, PRIMARY KEY (namespace, \
                 dictionary))"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {e} (namespace TEXT NOT NULL, dictionary TEXT NOT \
                 NULL, entry_key TEXT NOT NULL, value {bytes} NOT NULL, revision {int} NOT NULL, \
                 tombstone BOOLEAN NOT NULL DEFAULT FALSE, written_at {int} NOT NULL DEFAULT 0, \
                 expires_at {int}, PRIMARY KEY (namespace, dictionary, entry_key))"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {e}_revision ON {e} (namespace, dictionary, revision)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {e}_expiry ON {e} (namespace, dictionary, expires_at) \
                 WHERE expires_at IS NOT NULL"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {s} (namespace TEXT NOT NULL, dictionary TEXT NOT \
                 NULL, slot {int} NOT NULL, counter {int} NOT NULL, stamp {int} NOT NULL, PRIMARY \
                 KEY (namespace, dictionary, slot)){stamps_options}"
            ),
        ]
    }

    /// The ends of the upsert of an entry and of a stamp history row, where the database has
    /// `ON CONFLICT` (PostgreSQL, SQLite).
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn on_conflict_updates(&self) -> (String, String) {
        (
            " ON CONFLICT (namespace, dictionary, entry_key) DO UPDATE SET value = \
             excluded.value, revision = excluded.revision, tombstone = FALSE, written_at = \
             excluded.written_at, expires_at = excluded.expires_at"
                .to_owned(),
            " ON CONFLICT (namespace, dictionary, slot) DO UPDATE SET counter = excluded.counter, \
             stamp = excluded.stamp"
                .to_owned(),
        )
    }

    /// The start of an insert into the stamp history.
    pub(crate) fn stamp_insert(&self) -> String {
        format!(
            "INSERT INTO {} (namespace, dictionary, slot, counter, stamp)",
            self.stamps
        )
    }
}

/// How a dialect bumps a version record (see `Sql::bump`).
#[derive(Debug, Clone)]
pub(crate) enum Bump {
    /// One call that bumps, records the new stamp in the history and returns epoch, counter,
    /// parent of the new state (no row: the record is missing, damaged or unstamped).
    /// PostgreSQL does it in one statement, SQLite in two statements of one call.
    #[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
    Returning(String),
    /// An `UPDATE` that returns nothing (MySQL), then `read` (ns, dict) -> epoch, counter,
    /// parent when it changed a row; the stamp is recorded by `Sql::record_stamp`.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    ReadBack {
        /// The `UPDATE`.
        update: String,
        /// The read back.
        read: String,
    },
}

/// What a dialect writes differently, for [`Sql::new`].
#[derive(Debug)]
pub struct DialectSql {
    /// The row lock suffix of a `SELECT` in a write transaction.
    pub(crate) lock: &'static str,
    /// DDL statements, run in order.
    pub(crate) schema: Vec<String>,
    /// (table name) -> the name of each of its columns.
    pub(crate) columns: &'static str,
    /// `INSERT` that does nothing on a duplicate primary key: its start and its end.
    pub(crate) insert_or_ignore: (&'static str, &'static str),
    /// The end of an upsert of an entry.
    pub(crate) upsert_tail: String,
    /// The end of an upsert of a stamp history row.
    pub(crate) stamp_upsert_tail: String,
    /// The conditions a revision a counter may take meets ([`Tables::valid_revision`]).
    pub(crate) valid_revision: String,
    /// The database's clock in milliseconds since the Unix epoch.
    pub(crate) clock: &'static str,
    /// The bump of a version record.
    pub(crate) bump: Bump,
}

/// `sql` with its `?` placeholders numbered `$1`, `$2`, ...
fn number(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// Every statement a backend runs, with the table names filled in. Placeholders are written `?`
/// in the templates and numbered (`$1`, `$2`, ...) for PostgreSQL.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    /// The table names.
    pub(crate) tables: Tables,
    /// DDL statements, run in order.
    pub(crate) schema: Vec<String>,
    /// (table name) -> the name of each of its columns.
    pub(crate) columns: String,
    /// Columns the versions table gained after its first release, each with the statement that
    /// adds it to a table created before (run by the migration when the column is missing).
    pub(crate) added_columns: Vec<(&'static str, String)>,
    /// (ns) -> the name of every dictionary of the namespace that has a version record, sorted.
    pub(crate) list_dictionaries: String,
    /// (ns, dict) -> epoch, counter, stamp, parent, oldest_served (read loosely, see
    /// [`RawRecord`](crate::record::RawRecord)).
    pub(crate) select_version: String,
    /// `select_version` that also locks the row in a write transaction.
    pub(crate) lock_version: String,
    /// (slot, ns, dict) -> the columns of `select_version`, then the counter and stamp the stamp
    /// history holds in that slot (NULL if none).
    pub(crate) select_version_at: String,
    /// (stamp, ns, dict): if the version record is valid (the rows
    /// [`RawRecord::check`](crate::record::RawRecord::check) accepts), adds one to its counter,
    /// moves its stamp to `parent` and stores the new stamp, which locks the row until the
    /// transaction ends (see [`Bump`]).
    pub(crate) bump: Bump,
    /// (ns, dict, slot, counter, stamp): stores the stamp of `counter` in the history.
    pub(crate) record_stamp: String,
    /// (ns, dict) -> the highest valid revision stored (tombstones included), NULL if none.
    pub(crate) max_revision: String,
    /// (ns, dict, epoch, counter, oldest_served, stamp): creates the version record unless one
    /// exists (then it affects no row).
    pub(crate) insert_version: String,
    /// (epoch, counter, oldest_served, stamp, ns, dict): replaces the version record's values.
    pub(crate) reset_version: String,
    /// () -> the database's clock: milliseconds since the Unix epoch, a BIGINT.
    pub(crate) now: String,
    /// (ns, dict, key) -> key, value, revision, expires_at of a live entry; locks it in a write
    /// transaction.
    pub(crate) select_entry: String,
    /// (ns, dict, key, value, revision, written_at, expires_at): one row of `upsert_head`.
    pub(crate) upsert_entry: String,
    /// The start of a multi-row upsert: append [`upsert_row`](Sql::upsert_row)s, then
    /// `upsert_tail`.
    pub(crate) upsert_head: String,
    /// The end of a multi-row upsert.
    pub(crate) upsert_tail: String,
    /// (value, revision, written_at, ns, dict, key): turns a live entry into a tombstone.
    pub(crate) tombstone_entry: String,
    /// (ns, dict): deletes every live entry (a clear writes no tombstones: see
    /// `SqlBackend::clear`).
    pub(crate) clear: String,
    /// (ns, dict, now) -> the expiry of the last of the (at most [`SWEEP_STEP`]) live entries
    /// that expired first, at or before `now`; NULL if none did.
    pub(crate) sweep_cutoff: String,
    /// (ns, dict, at) -> key of every live entry expiring at or before `at`; locks them in a
    /// write transaction.
    pub(crate) select_expired: String,
    /// (value, revision, written_at, ns, dict, at): tombstones every live entry expiring at or
    /// before `at`.
    pub(crate) sweep: String,
    /// (ns, dict) -> key, value, revision, expires_at of live entries.
    pub(crate) load_entries: String,
    /// (ns, dict, after) -> key, value, revision, expires_at, tombstone.
    pub(crate) changes: String,
    /// (ns, dict, cutoff) -> highest valid revision of tombstones older than the cutoff.
    pub(crate) trim_max: String,
    /// (ns, dict, revision): deletes tombstones up to that revision.
    pub(crate) trim_delete: String,
    /// (oldest, ns, dict)
    pub(crate) set_oldest: String,
    /// (ns, dict)
    pub(crate) delete_entries: String,
    /// (ns, dict)
    pub(crate) delete_version: String,
    /// (ns, dict)
    pub(crate) delete_stamps: String,
    /// Whether placeholders are numbered (`$1`, PostgreSQL).
    numbered: bool,
}

impl Sql {
    /// The statements of dialect `D` over the tables of `prefix`.
    pub(crate) fn new<D: Dialect>(prefix: &str) -> Sql {
        let tables = Tables::new(prefix);
        let d = D::sql(&tables);
        let (e, v, s) = (&tables.entries, &tables.versions, &tables.stamps);
        let lock = d.lock;
        let upsert_head = format!(
            "INSERT INTO {e} (namespace, dictionary, entry_key, value, revision, tombstone, \
             written_at, expires_at) VALUES "
        );
        // What `StoredEntry`s are read from, in this order.
        let columns = "entry_key, value, revision, expires_at";
        let record = "epoch, counter, stamp, parent, oldest_served";
        let stamp_insert = tables.stamp_insert();
        let tombstoning = format!(
            "UPDATE {e} SET tombstone = TRUE, value = ?, revision = ?, written_at = ?, expires_at \
             = NULL WHERE namespace = ? AND dictionary = ? AND tombstone = FALSE"
        );
        let (insert_start, insert_end) = d.insert_or_ignore;
        let mut sql = Sql {
            schema: d.schema,
            columns: d.columns.to_owned(),
            added_columns: vec![
                ("stamp", format!("ALTER TABLE {v} ADD COLUMN stamp BIGINT")),
                (
                    "parent",
                    format!("ALTER TABLE {v} ADD COLUMN parent BIGINT NOT NULL DEFAULT 0"),
                ),
            ],
            list_dictionaries: format!(
                "SELECT dictionary FROM {v} WHERE namespace = ? ORDER BY dictionary"
            ),
            select_version: format!(
                "SELECT {record} FROM {v} WHERE namespace = ? AND dictionary = ?"
            ),
            lock_version: format!(
                "SELECT {record} FROM {v} WHERE namespace = ? AND dictionary = ?{lock}"
            ),
            select_version_at: format!(
                "SELECT v.epoch, v.counter, v.stamp, v.parent, v.oldest_served, s.counter, \
                 s.stamp FROM {v} v LEFT JOIN {s} s ON s.namespace = v.namespace AND \
                 s.dictionary = v.dictionary AND s.slot = ? WHERE v.namespace = ? AND \
                 v.dictionary = ?"
            ),
            bump: d.bump,
            record_stamp: format!(
                "{stamp_insert} VALUES (?, ?, ?, ?, ?){}",
                d.stamp_upsert_tail
            ),
            max_revision: format!(
                "SELECT MAX(revision) FROM {e} WHERE namespace = ? AND dictionary = ? AND \
                 {}",
                d.valid_revision
            ),
            insert_version: format!(
                "{insert_start} {v} (namespace, dictionary, epoch, counter, oldest_served, stamp, \
                 parent) VALUES (?, ?, ?, ?, ?, ?, 0){insert_end}"
            ),
            reset_version: format!(
                "UPDATE {v} SET epoch = ?, counter = ?, oldest_served = ?, stamp = ?, parent = 0 \
                 WHERE namespace = ? AND dictionary = ?"
            ),
            now: format!("SELECT {}", d.clock),
            select_entry: format!(
                "SELECT {columns} FROM {e} WHERE namespace = ? AND dictionary = ? AND entry_key = \
                 ? AND tombstone = FALSE{lock}"
            ),
            // Filled in below, from `upsert_row`.
            upsert_entry: String::new(),
            upsert_head,
            upsert_tail: d.upsert_tail,
            tombstone_entry: format!("{tombstoning} AND entry_key = ?"),
            sweep_cutoff: format!(
                "SELECT MAX(expires_at) FROM (SELECT expires_at FROM {e} WHERE namespace = ? AND \
                 dictionary = ? AND tombstone = FALSE AND expires_at <= ? ORDER BY expires_at \
                 LIMIT {SWEEP_STEP}) due"
            ),
            select_expired: format!(
                "SELECT entry_key FROM {e} WHERE namespace = ? AND dictionary = ? AND tombstone = \
                 FALSE AND expires_at <= ?{lock}"
            ),
            sweep: format!("{tombstoning} AND expires_at <= ?"),
            clear: format!(
                "DELETE FROM {e} WHERE namespace = ? AND dictionary = ? AND tombstone = FALSE"
            ),
            load_entries: format!(
                "SELECT {columns} FROM {e} WHERE namespace = ? AND dictionary = ? AND tombstone = \
                 FALSE"
            ),
            changes: format!(
                "SELECT {columns}, tombstone FROM {e} WHERE namespace = ? AND dictionary = ? AND \
                 revision > ?"
            ),
            trim_max: format!(
                "SELECT MAX(revision) FROM {e} WHERE namespace = ? AND dictionary = ? AND \
                 tombstone = TRUE AND written_at <= ? AND {}",
                d.valid_revision
            ),
            trim_delete: format!(
                "DELETE FROM {e} WHERE namespace = ? AND dictionary = ? AND tombstone = TRUE AND \
                 revision <= ?"
            ),
            set_oldest: format!(
                "UPDATE {v} SET oldest_served = ? WHERE namespace = ? AND dictionary = ? AND \
                 oldest_served < ?"
            ),
            delete_entries: format!("DELETE FROM {e} WHERE namespace = ? AND dictionary = ?"),
            delete_version: format!("DELETE FROM {v} WHERE namespace = ? AND dictionary = ?"),
            delete_stamps: format!("DELETE FROM {s} WHERE namespace = ? AND dictionary = ?"),
            tables,
            numbered: D::NUMBERED,
        };
        sql.upsert_entry = format!(
            "{}{}{}",
            sql.upsert_head,
            sql.upsert_row(0),
            sql.upsert_tail
        );
        sql.numbered()
    }

    /// The placeholders of one row of a multi-row upsert ([`UPSERT_PARAMS`] parameters: ns,
    /// dict, key, value, revision, written_at, expires_at), starting after `bound` parameters.
    pub(crate) fn upsert_row(&self, bound: usize) -> String {
        let [ns, dict, key, value, revision, written_at, expires_at]: [String; UPSERT_PARAMS] =
            std::array::from_fn(|i| self.placeholder(bound + i + 1));
        format!("({ns}, {dict}, {key}, {value}, {revision}, FALSE, {written_at}, {expires_at})")
    }

    /// The `n`th placeholder (1-based).
    pub(crate) fn placeholder(&self, n: usize) -> String {
        if self.numbered {
            format!("${n}")
        } else {
            "?".to_owned()
        }
    }

    /// Numbers the `?` placeholders where the dialect wants it (its bump is written numbered).
    fn numbered(mut self) -> Sql {
        if self.numbered {
            for s in [
                &mut self.columns,
                &mut self.list_dictionaries,
                &mut self.select_version,
                &mut self.lock_version,
                &mut self.select_version_at,
                &mut self.record_stamp,
                &mut self.max_revision,
                &mut self.insert_version,
                &mut self.reset_version,
                &mut self.select_entry,
                &mut self.tombstone_entry,
                &mut self.clear,
                &mut self.sweep_cutoff,
                &mut self.select_expired,
                &mut self.sweep,
                &mut self.load_entries,
                &mut self.changes,
                &mut self.trim_max,
                &mut self.trim_delete,
                &mut self.set_oldest,
                &mut self.delete_entries,
                &mut self.delete_version,
                &mut self.delete_stamps,
            ] {
                *s = number(s);
            }
        }
        self
    }
}

/// The longest key the SQL backends accept ([`MAX_KEY_LEN`]), checked before any round trip.
pub(crate) fn check_key(backend: &str, key: &str) -> durable_core::Result<()> {
    if key.len() > MAX_KEY_LEN {
        let shown: String = key.chars().take(40).collect();
        return Err(durable_core::Error::InvalidKey {
            backend: backend.to_owned(),
            key: format!("{shown}..."),
            reason: format!("{} bytes, the limit is {MAX_KEY_LEN}", key.len()),
        });
    }
    Ok(())
}
