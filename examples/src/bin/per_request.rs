//! Per-request sync in a plain tokio TCP service (no web framework), against PostgreSQL.
//!
//! ```sh
//! cargo run -p durable-examples --bin per_request              # postgres://postgres@127.0.0.1:5432/test
//! cargo run -p durable-examples --bin per_request -- --serve --port 4000
//! curl http://127.0.0.1:4000/tenants/acme
//! cargo run -p durable-examples --bin per_request -- --url sqlite::memory:   # no server needed
//! ```
//!
//! The pattern: every request calls `sync_or_stale()` **once**, then answers from that one
//! snapshot guard. The check is one small query (`SELECT` of the version row); concurrent
//! requests share one check; the reads after it never touch the network and all see the same
//! version of the map.
//!
//! **When the store is down**, `sync_or_stale()` does not fail and does not hang: it returns the
//! last good snapshot and how stale it is. What to do then is the service's choice; this one
//! serves tenants at most `--max-staleness` seconds stale (counted from the store's last
//! confirmation; default 2 s, short so that the demo shows both outcomes), marked with an
//! `x-snapshot-age-ms` header, and answers `503` after that.
//!
//! **Push hints and read-after-write.** A handle can trust push hints for a moment
//! ([`Options::with_trust_hints_for`]): a `sync()` with no hint since the last check skips the
//! round trip. That is cheaper, but a request may then miss a write another process made a few
//! milliseconds earlier, before its notification arrived. This service wants every request to see
//! every write acknowledged before it began, so it keeps the default (off) and pays one small
//! query per request (`--trust-hints` turns trust on; the second request may then miss the
//! upgrade).
//!
//! Without `--serve`, the example starts the service on a free port, acts as its own client and
//! shows a change made by another process (another handle) being served on the very next
//! request, without a restart or a polling delay.

use std::time::Duration;

use clap::Parser;
use durable::{Dict, Freshness, Json, Options, Result, Snapshot};

/// What every connection needs: the dictionary and the service's staleness policy.
#[derive(Clone)]
struct Service {
    tenants: Tenants,
    max_staleness: Duration,
}
use durable_examples::ExampleStore;
use durable_examples::outage::OutageSwitch;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Per-request sync in a plain tokio TCP service")]
struct Args {
    /// The store; meant for PostgreSQL, works with any durable URL or files:DIR.
    #[arg(
        long,
        env = "DURABLE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    url: String,
    /// Keep serving until Ctrl-C instead of running the self-driving demo.
    #[arg(long)]
    serve: bool,
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Namespace of the dictionary.
    #[arg(long, default_value = "examples")]
    namespace: String,
    /// Trust push hints for 1 s (skip the version query when no hint arrived): cheaper, but a
    /// request may miss a write made just before it by another process.
    #[arg(long)]
    trust_hints: bool,
    /// Serve tenants at most this many seconds stale while the store is down; then answer 503.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    max_staleness: f64,
}

type Tenants = Dict<Value>;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    durable_examples::init_logging("warn");
    let max_staleness = Duration::try_from_secs_f64(args.max_staleness).map_err(|_| {
        durable::Error::Config("--max-staleness: give a number of seconds of at least 0".into())
    })?;
    let store = ExampleStore::connect(&args.url).await?;
    // Strict per-request freshness by default: every sync() asks the store (see the module docs).
    let trust = args.trust_hints.then_some(Duration::from_secs(1));
    let options = Options::new().with_trust_hints_for(trust);
    // The Outage wrapper only lets the demo show a store outage; a real service opens
    // `store.backend(..)` directly.
    let outage = OutageSwitch::new();
    let backend = outage.wrap(store.backend(&args.namespace, "tenants")?);
    let tenants: Tenants = Dict::open(backend, Json, options).await?;
    // Another process administering the tenants: a separate handle on the same dictionary.
    let admin: Tenants = store
        .open(&args.namespace, "tenants", Json, Options::new())
        .await?;
    admin
        .insert("acme", json!({"plan": "free", "seats": 3}))
        .await?;
    admin
        .insert("globex", json!({"plan": "pro", "seats": 50}))
        .await?;

    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| durable::Error::Config(format!("cannot listen on port {}: {e}", args.port)))?;
    let address = listener
        .local_addr()
        .map_err(|e| durable::Error::Config(format!("cannot read the listening address: {e}")))?;
    println!(
        "serving tenants from {} on http://{address}/tenants/<name>",
        tenants.backend_name()
    );
    let service = Service {
        tenants: tenants.clone(),
        max_staleness,
    };
    let server = tokio::spawn(serve(listener, service));

    if args.serve {
        let _ = tokio::signal::ctrl_c().await;
        server.abort();
        return Ok(());
    }

    // The self-driving demo: a few requests, and a change by another process in between.
    let base = format!("{address}");
    println!(
        "GET /tenants/acme   -> {}",
        get(&base, "/tenants/acme").await
    );
    admin
        .insert("acme", json!({"plan": "enterprise", "seats": 200}))
        .await?;
    println!("(another process upgraded acme)");
    println!(
        "GET /tenants/acme   -> {}",
        get(&base, "/tenants/acme").await
    );
    println!(
        "GET /tenants/nobody -> {}",
        get(&base, "/tenants/nobody").await
    );
    println!("GET /tenants        -> {}", get(&base, "/tenants").await);
    outage.set_down(true);
    println!("(the store goes down)");
    println!(
        "GET /tenants/acme   -> {}",
        get(&base, "/tenants/acme").await
    );
    tokio::time::sleep(max_staleness + Duration::from_millis(100)).await;
    println!(
        "({:.1} s later, past the {:.1} s this service serves stale data)",
        (max_staleness + Duration::from_millis(100)).as_secs_f64(),
        max_staleness.as_secs_f64()
    );
    println!(
        "GET /tenants/acme   -> {}",
        get(&base, "/tenants/acme").await
    );
    outage.set_down(false);
    println!("(the store is back)");
    println!(
        "GET /tenants/acme   -> {}",
        get(&base, "/tenants/acme").await
    );
    let stats = tenants.stats();
    println!(
        "service handle: {} checks ({} unchanged), {} deltas, {} reloads, {} coalesced, \
         {} skipped on hints",
        stats.checks,
        stats.unchanged,
        stats.deltas,
        stats.reloads,
        stats.coalesced,
        stats.hint_skips
    );
    server.abort();
    Ok(())
}

/// Accepts connections, one task each.
async fn serve(listener: TcpListener, service: Service) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, service.clone()));
            }
            Err(error) => eprintln!("accept failed: {error}"),
        }
    }
}

/// One HTTP/1.1 request: read the head, sync once, answer from that snapshot, close.
async fn handle(mut stream: TcpStream, service: Service) {
    let Some(path) = read_request_path(&mut stream).await else {
        let _ = respond(&mut stream, 400, &[], &json!({"error": "bad request"})).await;
        return;
    };
    // The one version check of this request. It never fails: with the store down it returns the
    // last good snapshot, and says how stale it is.
    let snapshot = service.tenants.sync_or_stale().await;
    let age = snapshot.age().as_millis().to_string();
    // The service's policy: stale data up to `max_staleness`, then 503.
    if !snapshot.is_within(service.max_staleness) {
        let error = match &snapshot.freshness {
            Freshness::Stale { error, .. } | Freshness::FromBackup { error } => error.to_string(),
            _ => "not confirmed by the store".into(),
        };
        let body = json!({"error": format!("tenants too stale to serve: {error}")});
        let _ = respond(&mut stream, 503, &[("x-snapshot-age-ms", &age)], &body).await;
        return;
    }
    let (status, body) = route(&path, &snapshot);
    let version = snapshot.version().to_string();
    let mut headers = vec![("x-dict-version", version.as_str())];
    if !snapshot.is_fresh() {
        headers.push(("x-snapshot-age-ms", &age));
    }
    let _ = respond(&mut stream, status, &headers, &body).await;
}

/// The application: every read comes from the same snapshot.
fn route(path: &str, snapshot: &Snapshot<Value>) -> (u16, Value) {
    match path.strip_prefix("/tenants") {
        Some("" | "/") => {
            let all: serde_json::Map<String, Value> = snapshot
                .iter()
                .map(|(name, settings)| (name.to_owned(), settings.clone()))
                .collect();
            (200, Value::Object(all))
        }
        Some(rest) => match rest.strip_prefix('/').and_then(|name| snapshot.get(name)) {
            Some(settings) => (200, settings.clone()),
            None => (404, json!({"error": "unknown tenant"})),
        },
        None => (404, json!({"error": "not found"})),
    }
}

/// Reads the request head and returns the path of a `GET`; `None` for anything else.
async fn read_request_path(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = stream.read(&mut buffer).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..n]);
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()??;
    let head = String::from_utf8(head).ok()?;
    let mut parts = head.lines().next()?.split(' ');
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(path)) => Some(path.to_owned()),
        _ => None,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    body: &Value,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let body = body.to_string();
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&body);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// A minimal client for the demo: the status line and the body.
async fn get(address: &str, path: &str) -> String {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    match exchange.await {
        Ok(response) => {
            let status = response.lines().next().unwrap_or_default();
            let status = status.strip_prefix("HTTP/1.1 ").unwrap_or(status);
            let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
            let age = response
                .lines()
                .find_map(|l| l.strip_prefix("x-snapshot-age-ms: "))
                .map(|ms| format!(" [stale, x-snapshot-age-ms: {ms}]"))
                .unwrap_or_default();
            format!("{status}{age} {body}")
        }
        Err(error) => format!("request failed: {error}"),
    }
}
