#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Without any database feature the crate only offers `SqlOptions`.
#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code, unreachable_code, unused_imports, unused_variables)
)]
mod common;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
// SQLite URLs hold no credentials.
#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
mod credentials;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod error;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod imp;
#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code)
)]
mod record;

#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
mod mysql;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
mod postgres;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
mod sqlite;

pub use common::{MAX_KEY_LEN, SqlOptions};
#[cfg(feature = "mysql")]
pub use mysql::{MySqlBackend, MySqlStore};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresBackend, PostgresStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteBackend, SqliteStore};

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
        #[cfg(feature = "postgres")]
        assert_send_sync::<crate::PostgresBackend>();
        #[cfg(feature = "mysql")]
        assert_send_sync::<crate::MySqlBackend>();
    }
}
