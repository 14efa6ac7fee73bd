//! Push hints: PostgreSQL's LISTEN/NOTIFY. Every write of a PostgreSQL store sends
//! `NOTIFY {prefix}_changes, 'namespace/dictionary'` inside its transaction (see its bump);
//! one `LISTEN` connection per store, outside the pool, forwards them to the subscribed
//! backends. The other dialects have no push hints: their handles poll (the default
//! [`Dialect::subscribe`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use durable_core::{Hint, HintSender, Hints, Operation, Result};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use crate::SqlOptions;
use crate::dialect::Dialect;
use crate::postgres::{Postgres, PostgresBackend};
use crate::store::Shared;

/// A PostgreSQL store's `LISTEN` side.
pub struct Listen {
    /// One connection for `LISTEN`, separate from the pool so it never starves writers.
    pool: PgPool,
    /// The channel every write signals.
    pub(crate) channel: String,
    listeners: tokio::sync::Mutex<Listeners>,
}

impl fmt::Debug for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listen")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Listen {
    /// The `LISTEN` side of a store connecting with `connect`, on `channel` (connects on the
    /// first subscription).
    pub(crate) fn new(connect: &PgConnectOptions, options: &SqlOptions, channel: String) -> Listen {
        Listen {
            pool: PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(options.acquire_timeout())
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_lazy_with(connect.clone()),
            channel,
            listeners: tokio::sync::Mutex::new(Listeners::default()),
        }
    }
}

#[derive(Default)]
struct Listeners {
    running: bool,
    /// Subscribers by `namespace/dictionary`.
    subscribers: HashMap<String, Vec<HintSender>>,
}

/// Subscribes `backend` to the hints of its dictionary; the first subscriber of a store starts
/// listening (before this returns, so that a write right after it is seen).
pub(crate) async fn subscribe(backend: &PostgresBackend) -> Result<Hints> {
    let (sender, hints) = Hints::channel();
    let shared = &backend.shared;
    let mut listeners = shared.push.listeners.lock().await;
    if !listeners.running {
        let op = Operation::Subscribe;
        if shared.push.pool.size() == 0 {
            shared
                .gate
                .pass(&shared.target, op, || shared.probe())
                .await?;
        }
        let listener = connect_listener(shared)
            .await
            .map_err(|e| shared.target.explain(op, e))?;
        listeners.running = true;
        tokio::spawn(listen_task(shared.clone(), listener));
    }
    listeners
        .subscribers
        .entry(format!("{}/{}", backend.ns(), backend.dict()))
        .or_default()
        .push(sender);
    Ok(hints)
}

async fn connect_listener(shared: &Shared<Postgres>) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(&shared.push.pool).await?;
    listener.listen(&shared.push.channel).await?;
    Ok(listener)
}

/// Reads notifications and forwards them as hints, until no subscriber is left.
async fn listen_task(shared: Arc<Shared<Postgres>>, mut listener: PgListener) {
    const IDLE_CHECK: Duration = Duration::from_secs(30);
    let listen = &shared.push;
    loop {
        let event = tokio::time::timeout(IDLE_CHECK, listener.try_recv()).await;
        let mut lost = false;
        match event {
            Err(_idle) => {}
            Ok(Ok(Some(notification))) => {
                let listeners = listen.listeners.lock().await;
                if let Some(senders) = listeners.subscribers.get(notification.payload()) {
                    for sender in senders {
                        sender.send(Hint::Changed);
                    }
                }
            }
            // The connection was lost and is back (sqlx reconnects eagerly): notifications
            // sent in between are gone.
            Ok(Ok(None)) => lost = true,
            Ok(Err(error)) => {
                let error = shared.target.explain(Operation::Subscribe, error);
                tracing::warn!(backend = Postgres::NAME, %error, "LISTEN connection failed; reconnecting");
                drop(listener);
                for sender in listen.listeners.lock().await.subscribers.values().flatten() {
                    sender.send(Hint::Lost);
                }
                let mut delay = Duration::from_millis(100);
                listener = loop {
                    if listen
                        .listeners
                        .lock()
                        .await
                        .subscribers
                        .values()
                        .all(|s| s.iter().all(HintSender::is_closed))
                    {
                        listen.listeners.lock().await.running = false;
                        return;
                    }
                    match connect_listener(&shared).await {
                        Ok(listener) => break listener,
                        Err(error) => {
                            let error = shared.target.explain(Operation::Subscribe, error);
                            tracing::debug!(backend = Postgres::NAME, %error, "LISTEN reconnect failed");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                };
                lost = true;
            }
        }
        let mut listeners = listen.listeners.lock().await;
        listeners.subscribers.retain(|_, senders| {
            senders.retain(|s| !s.is_closed());
            !senders.is_empty()
        });
        if lost {
            tracing::info!(backend = Postgres::NAME, "LISTEN connection re-established");
            for sender in listeners.subscribers.values().flatten() {
                sender.send(Hint::Resubscribed);
            }
        }
        if listeners.subscribers.is_empty() {
            listeners.running = false;
            return;
        }
    }
}
