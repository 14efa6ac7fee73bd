//! Push hints: a dedicated RESP3 pub/sub connection per subscribed dictionary, re-established
//! after every loss (then [`Hint::Resubscribed`] forces a version check).

use std::time::Duration;

use durable_core::{Hint, HintSender, Hints, Operation, Result};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionInfo, ProtocolVersion, PushInfo, PushKind, RedisResult,
};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::error::map_err;
use crate::store::{HintTarget, RedisStore};

/// How often an idle hint connection is checked with a PING (a silently dead TCP connection
/// would otherwise never be noticed).
const PING_EVERY: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Subscription {
    conn: MultiplexedConnection,
    pushes: UnboundedReceiver<PushInfo>,
}

/// Subscribes now (so a write after this returns is hinted), then keeps the subscription in a
/// background task until the engine drops its [`Hints`].
pub(crate) async fn subscribe(store: &RedisStore, channel: &str) -> Result<Hints> {
    let target = store.inner.hint_target.clone();
    let timeout = store.inner.options.response_timeout();
    let connect_timeout = store.inner.options.connection_timeout();
    let subscription = connect(&target, channel, timeout, connect_timeout)
        .await
        .map_err(|e| map_err(Operation::Subscribe, e))?;
    let (sender, hints) = Hints::channel();
    let channel = channel.to_owned();
    tokio::spawn(async move {
        run(
            target,
            channel,
            timeout,
            connect_timeout,
            sender,
            subscription,
        )
        .await;
    });
    Ok(hints)
}

async fn run(
    target: HintTarget,
    channel: String,
    timeout: Duration,
    connect_timeout: Duration,
    sender: HintSender,
    mut subscription: Subscription,
) {
    loop {
        // Deliver hints until the connection is lost.
        loop {
            tokio::select! {
                push = subscription.pushes.recv() => match push.map(|p| p.kind) {
                    Some(PushKind::Message | PushKind::SMessage) => {
                        if !sender.send(Hint::Changed) {
                            return;
                        }
                    }
                    // Lost connection, or the server dropped the subscription (a cluster slot
                    // moved to another node).
                    None | Some(PushKind::Disconnection | PushKind::SUnsubscribe | PushKind::Unsubscribe) => break,
                    Some(_) => {}
                },
                () = tokio::time::sleep(PING_EVERY) => {
                    if sender.is_closed() {
                        return;
                    }
                    let ping = redis::cmd("PING").query_async::<()>(&mut subscription.conn).await;
                    if ping.is_err() {
                        break;
                    }
                }
            }
        }
        tracing::debug!(target: "durable_redis", channel, "hint connection lost, reconnecting");
        // Tell the engine at once: until the subscription is back it must not trust the
        // silence of a dead connection (a no-change sync would otherwise skip its round trip).
        if !sender.send(Hint::Lost) {
            return;
        }
        // Re-establish it, backing off, for as long as the engine listens.
        let mut delay = Duration::from_millis(50);
        loop {
            if sender.is_closed() {
                return;
            }
            match connect(&target, &channel, timeout, connect_timeout).await {
                Ok(s) => {
                    subscription = s;
                    tracing::debug!(target: "durable_redis", channel, "hint connection re-established");
                    if !sender.send(Hint::Resubscribed) {
                        return;
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(target: "durable_redis", channel, error = %e, "hint reconnect failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

fn resp3(info: &ConnectionInfo) -> ConnectionInfo {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    info.clone().set_redis_settings(settings)
}

async fn open(
    info: &ConnectionInfo,
    timeout: Duration,
    connect_timeout: Duration,
) -> RedisResult<Subscription> {
    let (tx, pushes) = unbounded_channel();
    let config = AsyncConnectionConfig::new()
        .set_push_sender(tx)
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(connect_timeout));
    let client = redis::Client::open(resp3(info))?;
    let conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    Ok(Subscription { conn, pushes })
}

async fn connect(
    target: &HintTarget,
    channel: &str,
    timeout: Duration,
    connect_timeout: Duration,
) -> RedisResult<Subscription> {
    match target {
        HintTarget::Single(info) => {
            let mut s = open(info, timeout, connect_timeout).await?;
            s.conn.subscribe(channel).await?;
            Ok(s)
        }
        #[cfg(feature = "cluster")]
        HintTarget::Cluster(nodes) => {
            let mut last = None;
            for node in nodes {
                match ssubscribe(node, channel, timeout, connect_timeout).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Client, "no cluster node given"))
            }))
        }
    }
}

/// `SSUBSCRIBE` on the node serving the channel's slot, following one `MOVED`.
#[cfg(feature = "cluster")]
async fn ssubscribe(
    node: &ConnectionInfo,
    channel: &str,
    timeout: Duration,
    connect_timeout: Duration,
) -> RedisResult<Subscription> {
    let mut s = open(node, timeout, connect_timeout).await?;
    match redis::cmd("SSUBSCRIBE")
        .arg(channel)
        .query_async::<redis::Value>(&mut s.conn)
        .await
    {
        Ok(_) => Ok(s),
        Err(e) => {
            let Some((host, port)) = e.redirect_node() else {
                return Err(e);
            };
            let addr = match node.addr() {
                #[cfg(feature = "tls")]
                redis::ConnectionAddr::TcpTls {
                    insecure,
                    tls_params,
                    ..
                } => redis::ConnectionAddr::TcpTls {
                    host: host.to_owned(),
                    port,
                    insecure: *insecure,
                    tls_params: tls_params.clone(),
                },
                _ => redis::ConnectionAddr::Tcp(host.to_owned(), port),
            };
            let info = node.clone().set_addr(addr);
            let mut s = open(&info, timeout, connect_timeout).await?;
            redis::cmd("SSUBSCRIBE")
                .arg(channel)
                .query_async::<redis::Value>(&mut s.conn)
                .await?;
            Ok(s)
        }
    }
}
