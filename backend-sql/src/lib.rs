#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod options;

// Without any database feature the crate only offers `SqlOptions` and `MAX_KEY_LEN`.
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod backend;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod dialect;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod dictionary;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod error;
#[cfg(feature = "postgres")]
mod hints;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod record;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod sql;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod store;

#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
mod mysql;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
mod postgres;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
mod sqlite;

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub use dialect::Dialect;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub use dictionary::SqlBackend;
#[cfg(feature = "mysql")]
pub use mysql::{MySql, MySqlBackend, MySqlStore};
pub use options::{MAX_KEY_LEN, SWEEP_STEP, SqlOptions};
#[cfg(feature = "postgres")]
pub use postgres::{Postgres, PostgresBackend, PostgresStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{Sqlite, SqliteBackend, SqliteStore};
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
pub use store::SqlStore;

/// Re-exported so that users get the sqlx version this crate was built with.
pub use sqlx;

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<crate::SqlOptions>();
        #[cfg(feature = "sqlite")]
        assert_send_sync::<crate::SqliteBackend>();
        #[cfg(feature = "sqlite")]
        assert_send_sync::<crate::SqliteStore>();
        #[cfg(feature = "postgres")]
        assert_send_sync::<crate::PostgresBackend>();
        #[cfg(feature = "postgres")]
        assert_send_sync::<crate::PostgresStore>();
        #[cfg(feature = "mysql")]
        assert_send_sync::<crate::MySqlBackend>();
        #[cfg(feature = "mysql")]
        assert_send_sync::<crate::MySqlStore>();
    }
}
