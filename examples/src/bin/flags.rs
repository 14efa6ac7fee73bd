//! The feature-flag service: a small web service whose flags live in a durable dictionary.
//!
//! ```sh
//! cargo run -p durable-examples --bin flags                       # SQLite file ./flags.sqlite
//! cargo run -p durable-examples --bin flags -- --port 3001 --url redis://127.0.0.1:6379/
//! cargo run -p durable-examples --bin flags -- --demo-outage      # a button to cut the store off
//! ```
//!
//! Every HTTP request reads its flags once, through the [`RequestFlags`] extractor below (the
//! pattern to copy): `sync_or_stale()`, one version check shared by concurrent requests, then
//! reads that never touch the network, all from one snapshot. Run two instances on two ports
//! over one store and each sees the other's changes on its next request.
//!
//! **When the store is down**, `sync_or_stale()` does not fail: it returns the last good
//! snapshot and how stale it is. Serving it is this application's choice, its max-staleness
//! policy: flags at most `--max-staleness` seconds old (default 30; counted from the store's
//! last confirmation) are served, marked `x-flags-stale: true` with their age in
//! `x-snapshot-age-ms`; older than that, requests get `503` with the age.
//!
//! - `GET /api/flags`, `GET|PUT|DELETE /api/flags/{name}`: the JSON API. Values are any JSON.
//! - `GET /admin`: the admin page (toggle booleans, edit values, add and delete flags, version,
//!   snapshot age and sync statistics).
//! - `GET /healthz`: the handle's health as JSON, `503` once the flags are too stale to serve.
//! - `GET /metrics`: the engine's metrics (checks, deltas, reloads, errors, snapshot age, check
//!   and load durations, labelled by backend and dictionary) in Prometheus' text format, through
//!   durable's `metrics` feature and `metrics-exporter-prometheus`.
//! - `POST /demo/outage` (with `--demo-outage` only; form field `down=true|false`): simulate a
//!   store outage, to watch the max-staleness policy at work.
//!
//! Flags with variants, targeting rules and percentage rollouts through the OpenFeature API are
//! in `openfeature/examples/flags_openfeature.rs` (`durable-openfeature`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Deref;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Form, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use durable::{Backend, Dict, Error, Freshness, Options, Synced};
use durable_examples::ExampleStore;
use durable_examples::outage::OutageSwitch;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::{Value, json};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "A feature-flag web service on a durable dictionary")]
struct Args {
    /// Port to serve on (127.0.0.1).
    #[arg(long, env = "FLAGS_PORT", default_value_t = 3000)]
    port: u16,
    /// The store: sqlite://FILE, memory:, redis://, postgres://, mysql://, zk://, files:DIR
    #[arg(long, env = "DURABLE_URL", default_value = "sqlite://flags.sqlite")]
    url: String,
    /// Namespace of the dictionary (isolates environments sharing one store).
    #[arg(long, default_value = "demo")]
    namespace: String,
    /// Keep a backup snapshot in this file, to start while the store is down.
    #[arg(long)]
    backup: Option<PathBuf>,
    /// Serve flags at most this many seconds stale while the store is unreachable; after
    /// that, answer 503.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    max_staleness: f64,
    /// Add `POST /demo/outage` and a button on the admin page that cut this instance off its
    /// store (a simulated outage), to try the max-staleness policy.
    #[arg(long)]
    demo_outage: bool,
}

type Flags = Dict<Value>;

#[derive(Clone)]
struct App {
    flags: Flags,
    /// How stale the flags may be and still be served.
    max_staleness: Duration,
    /// The Prometheus recorder's handle, rendered at `/metrics`.
    metrics: PrometheusHandle,
    /// The simulated outage's switch (`--demo-outage`).
    outage: Option<OutageSwitch>,
}

/// The per-request read: a handler that takes `RequestFlags` gets one snapshot, brought up to
/// date once for this request (concurrent requests share one version check).
///
/// `sync_or_stale()` never fails: when the store cannot be reached it returns the last good
/// snapshot with its [`Freshness`]. The application decides what stale flags are worth: here
/// they are served while the store confirmed them at most `--max-staleness` ago (the response
/// says they are stale), and the request fails with `503` after that.
struct RequestFlags(Synced<Value>);

impl FromRequestParts<App> for RequestFlags {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let flags = app.flags.sync_or_stale().await;
        if flags.is_within(app.max_staleness) {
            Ok(RequestFlags(flags))
        } else {
            Err(ApiError::too_stale(&flags, app.max_staleness))
        }
    }
}

impl Deref for RequestFlags {
    type Target = Synced<Value>;

    fn deref(&self) -> &Synced<Value> {
        &self.0
    }
}

impl RequestFlags {
    /// Response headers that say the flags are stale, and how old they are (none when fresh).
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if !self.is_fresh() {
            headers.insert("x-flags-stale", HeaderValue::from_static("true"));
            headers.insert("x-snapshot-age-ms", age_ms(self.age()));
        }
        headers
    }

    /// Why the flags are not fresh (`None` when they are).
    fn stale_reason(&self) -> Option<String> {
        match &self.freshness {
            Freshness::Fresh => None,
            Freshness::Stale { error, .. } => Some(error.to_string()),
            Freshness::FromBackup { error } => Some(format!("from the backup file: {error}")),
            _ => Some("not confirmed by the store".into()),
        }
    }
}

fn age_ms(age: Duration) -> HeaderValue {
    HeaderValue::from(u64::try_from(age.as_millis()).unwrap_or(u64::MAX))
}

/// An error answered as `{"error": "..."}`.
struct ApiError {
    status: StatusCode,
    message: String,
    snapshot_age: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            snapshot_age: None,
        }
    }

    fn from_store(error: Error, flags: &Flags) -> Self {
        if error.is_unavailable() {
            ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: error.to_string(),
                snapshot_age: Some(flags.snapshot().age()),
            }
        } else {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
        }
    }

    fn unknown(name: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, format!("unknown flag {name:?}"))
    }

    /// Flags older than the service's max staleness: `503`, with their age.
    fn too_stale(flags: &Synced<Value>, max_staleness: Duration) -> Self {
        let why = match &flags.freshness {
            Freshness::Stale { error, .. } | Freshness::FromBackup { error } => error.to_string(),
            _ => "not confirmed by the store".into(),
        };
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "flags are {:.1} s stale, more than the {:.1} s this service serves: {why}",
                flags.age().as_secs_f64(),
                max_staleness.as_secs_f64()
            ),
            snapshot_age: Some(flags.age()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(age) = self.snapshot_age {
            let headers = response.headers_mut();
            headers.insert("x-snapshot-age-ms", age_ms(age));
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

async fn list(flags: RequestFlags) -> impl IntoResponse {
    let all: BTreeMap<&str, &Value> = flags.iter().collect();
    let body = Json(json!({ "version": flags.version().to_string(), "flags": all }));
    (flags.headers(), body)
}

async fn get_flag(
    flags: RequestFlags,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let value = flags.get(&name).ok_or_else(|| ApiError::unknown(&name))?;
    let body = Json(json!({ "name": name, "value": value }));
    Ok((flags.headers(), body))
}

async fn put_flag(
    State(app): State<App>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))?;
    let version = app
        .flags
        .insert(&name, value.clone())
        .await
        .map_err(|e| ApiError::from_store(e, &app.flags))?;
    Ok(Json(
        json!({ "name": name, "value": value, "version": version.to_string() }),
    ))
}

async fn delete_flag(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    match app.flags.remove(&name).await {
        Ok(Some(_)) => Ok(StatusCode::NO_CONTENT),
        Ok(None) => Err(ApiError::unknown(&name)),
        Err(e) => Err(ApiError::from_store(e, &app.flags)),
    }
}

/// The handle's health, after a check (a health probe is a request like any other): `200`
/// while the flags can be served under the max-staleness policy, `503` after.
async fn healthz(State(app): State<App>) -> impl IntoResponse {
    let serving = app.flags.sync_or_stale().await.is_within(app.max_staleness);
    let mut body = json!(app.flags.health());
    body["serving"] = json!(serving);
    body["max_staleness_s"] = json!(app.max_staleness.as_secs_f64());
    let status = if serving {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// The engine's metrics (durable's `metrics` feature), in Prometheus' text format.
async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        app.metrics.render(),
    )
}

#[derive(Deserialize)]
struct OutageForm {
    down: bool,
}

/// `--demo-outage`: cut this instance off its store (`down=true`) or reconnect it.
async fn demo_outage(State(app): State<App>, Form(form): Form<OutageForm>) -> Redirect {
    if let Some(outage) = &app.outage {
        outage.set_down(form.down);
    }
    Redirect::to("/admin")
}

/// Escapes text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment for a flag name (percent-encoded).
fn segment(name: &str) -> String {
    let mut out = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}\
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;\
text-align:left;vertical-align:top}code{background:#f4f4f4;padding:0 .2rem}.meta{color:#555}\
.on{color:#080;font-weight:bold}.off{color:#a00;font-weight:bold}form{display:inline}\
.stale{background:#fff3cd;border:1px solid #e0c060;padding:.5rem}";

async fn admin(State(app): State<App>, snapshot: RequestFlags) -> impl IntoResponse {
    let stats = app.flags.stats();
    let mut rows = String::new();
    let flags: BTreeMap<&str, &Value> = snapshot.iter().collect();
    for (name, value) in flags {
        let (id, path) = (escape(name), segment(name));
        let shown = match value {
            Value::Bool(true) => "<span class=\"on\">on</span>".to_owned(),
            Value::Bool(false) => "<span class=\"off\">off</span>".to_owned(),
            other => format!("<code>{}</code>", escape(&other.to_string())),
        };
        let toggle = if value.is_boolean() {
            format!(
                "<form method=\"post\" action=\"/admin/flags/{path}/toggle\">\
                 <button id=\"toggle-{id}\">toggle</button></form>"
            )
        } else {
            String::new()
        };
        let _ = write!(
            rows,
            "<tr id=\"flag-{id}\"><td>{id}</td><td class=\"value\">{shown}</td><td>{toggle}\
             <form method=\"post\" action=\"/admin/flags/{path}\"><input name=\"value\" \
             value=\"{json}\" size=\"24\"><button>save</button></form> \
             <form method=\"post\" action=\"/admin/flags/{path}/delete\"><button>delete</button>\
             </form></td></tr>",
            json = escape(&value.to_string()),
        );
    }
    let stale = match snapshot.stale_reason() {
        None => String::new(),
        Some(reason) => format!(
            "<p class=\"stale\" id=\"stale\">The store cannot be reached ({}). Serving the \
             last good flags, {:.1} s old; requests get 503 once they are {:.1} s old.</p>",
            escape(&reason),
            snapshot.age().as_secs_f64(),
            app.max_staleness.as_secs_f64()
        ),
    };
    let outage = match &app.outage {
        None => String::new(),
        Some(switch) => {
            let (down, label) = if switch.is_down() {
                ("false", "end the simulated outage")
            } else {
                ("true", "simulate a store outage")
            };
            format!(
                "<form method=\"post\" action=\"/demo/outage\"><input type=\"hidden\" \
                 name=\"down\" value=\"{down}\"><button id=\"outage\">{label}</button></form>"
            )
        }
    };
    let page = Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Feature flags</title>\
         <style>{STYLE}</style></head><body><h1>Feature flags</h1>{stale}{outage}\
         <p class=\"meta\">version <code id=\"version\">{version}</code> · snapshot age \
         <span id=\"age\">{age:.3} s</span> · backend {backend} · {checks} checks, {unchanged} \
         unchanged, {deltas} deltas, {reloads} reloads, {coalesced} coalesced, {hint_skips} \
         skipped by hints, {errors} errors</p>\
         <table><thead><tr><th>flag</th><th>value</th><th>actions</th></tr></thead>\
         <tbody>{rows}</tbody></table>\
         <h2>Add a flag</h2><form method=\"post\" action=\"/admin/flags\">\
         <input name=\"name\" placeholder=\"name\" required> <input name=\"value\" \
         placeholder=\"JSON value, e.g. true\" required> <button>add</button></form>\
         </body></html>",
        version = snapshot.version(),
        age = snapshot.age().as_secs_f64(),
        backend = app.flags.backend_name(),
        checks = stats.checks,
        unchanged = stats.unchanged,
        deltas = stats.deltas,
        reloads = stats.reloads,
        coalesced = stats.coalesced,
        hint_skips = stats.hint_skips,
        errors = stats.errors,
    ));
    (snapshot.headers(), page)
}

#[derive(Deserialize)]
struct ValueForm {
    value: String,
}

#[derive(Deserialize)]
struct NewFlagForm {
    name: String,
    value: String,
}

fn parse_form_value(text: &str) -> Result<Value, ApiError> {
    serde_json::from_str(text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{text:?} is not JSON ({e}); quote strings, e.g. \"hello\""),
        )
    })
}

async fn admin_toggle(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Redirect, ApiError> {
    app.flags
        .update(&name, |value| match value {
            Some(Value::Bool(on)) => Some(Value::Bool(!on)),
            other => other.cloned(),
        })
        .await
        .map_err(|e| ApiError::from_store(e, &app.flags))?;
    Ok(Redirect::to("/admin"))
}

async fn admin_set(
    State(app): State<App>,
    Path(name): Path<String>,
    Form(form): Form<ValueForm>,
) -> Result<Redirect, ApiError> {
    let value = parse_form_value(&form.value)?;
    app.flags
        .insert(&name, value)
        .await
        .map_err(|e| ApiError::from_store(e, &app.flags))?;
    Ok(Redirect::to("/admin"))
}

async fn admin_add(
    State(app): State<App>,
    Form(form): Form<NewFlagForm>,
) -> Result<Redirect, ApiError> {
    let value = parse_form_value(&form.value)?;
    app.flags
        .insert(form.name.trim(), value)
        .await
        .map_err(|e| ApiError::from_store(e, &app.flags))?;
    Ok(Redirect::to("/admin"))
}

async fn admin_delete(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Redirect, ApiError> {
    app.flags
        .remove(&name)
        .await
        .map_err(|e| ApiError::from_store(e, &app.flags))?;
    Ok(Redirect::to("/admin"))
}

fn router(app: App) -> Router {
    let router = if app.outage.is_some() {
        Router::new().route("/demo/outage", post(demo_outage))
    } else {
        Router::new()
    };
    router
        .route("/", get(|| async { Redirect::to("/admin") }))
        .route("/api/flags", get(list))
        .route(
            "/api/flags/{name}",
            get(get_flag).put(put_flag).delete(delete_flag),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/admin", get(admin))
        .route("/admin/flags", post(admin_add))
        .route("/admin/flags/{name}", post(admin_set))
        .route("/admin/flags/{name}/toggle", post(admin_toggle))
        .route("/admin/flags/{name}/delete", post(admin_delete))
        .with_state(app)
}

/// Demo flags, created only where absent (several instances may start at once).
async fn seed(flags: &Flags) -> durable::Result<()> {
    let demo = [
        ("new-checkout", json!(false)),
        ("dark-mode", json!(true)),
        ("banner-text", json!("Welcome to durable!")),
        ("max-upload-mb", json!(25)),
    ];
    for (name, value) in demo {
        if flags.capabilities().insert_if_absent {
            flags.setdefault(name, value).await?;
        } else if !flags.snapshot().contains_key(name) {
            flags.insert(name, value).await?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    durable_examples::init_logging("info");
    if let Err(message) = run(Args::parse()).await {
        eprintln!("flags: {message}");
        std::process::exit(1);
    }
}

/// Installs the Prometheus recorder (before any dictionary is opened, so every handle reports
/// to it), with histogram buckets for check and load durations, and runs its upkeep.
fn install_metrics() -> Result<PrometheusHandle, String> {
    let buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets(&buckets)
        .and_then(|builder| builder.install_recorder())
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

async fn run(args: Args) -> Result<(), String> {
    let max_staleness = Duration::try_from_secs_f64(args.max_staleness)
        .map_err(|_| "--max-staleness: give a number of seconds of at least 0".to_owned())?;
    let metrics = install_metrics()?;
    let store = ExampleStore::connect(&args.url)
        .await
        .map_err(|e| e.to_string())?;
    let mut options = Options::new();
    if let Some(path) = &args.backup {
        options = options.with_backup_file(path);
    }
    let backend = store
        .backend(&args.namespace, "flags")
        .map_err(|e| e.to_string())?;
    // The outage wrapper only serves `--demo-outage`; a real service opens the backend as is.
    let (backend, outage): (Box<dyn Backend>, _) = if args.demo_outage {
        let switch = OutageSwitch::new();
        (Box::new(switch.wrap(backend)), Some(switch))
    } else {
        (backend, None)
    };
    let flags: Flags = Dict::open(backend, durable::Json, options)
        .await
        .map_err(|e| e.to_string())?;
    seed(&flags).await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", args.port))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    println!(
        "flags: serving http://{address}/admin (store {})",
        flags.backend_name()
    );
    let app = App {
        flags,
        max_staleness,
        metrics,
        outage,
    };
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}
