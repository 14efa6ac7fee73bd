//! The feature-flag service: a small web service whose flags live in a durable dictionary.
//!
//! ```sh
//! cargo run -p durable-examples --bin flags                       # SQLite file ./flags.sqlite
//! cargo run -p durable-examples --bin flags -- --port 3001 --url redis://127.0.0.1:6379/
//! ```
//!
//! Every HTTP request runs `sync()` once, through the [`Synced`] extractor below (the pattern to
//! copy), and is answered from that one snapshot: one version check per request, then reads that
//! never touch the network. Run two instances on two ports over one store and each sees the
//! other's changes on its next request.
//!
//! - `GET /api/flags`, `GET|PUT|DELETE /api/flags/{name}`: the JSON API. Values are any JSON.
//!   When the store is down: `503` with the snapshot's age in `x-snapshot-age-ms`.
//! - `GET /admin`: the admin page (toggle booleans, edit values, add and delete flags, version,
//!   snapshot age and sync statistics).
//! - `GET /healthz`: the handle's health as JSON (`503` while stale).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Form, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use durable::{Dict, Error, Options, Snapshot, Store};
use serde::Deserialize;
use serde_json::{Value, json};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "A feature-flag web service on a durable dictionary")]
struct Args {
    /// Port to serve on (127.0.0.1).
    #[arg(long, env = "FLAGS_PORT", default_value_t = 3000)]
    port: u16,
    /// The store: sqlite://FILE, memory:, redis://, postgres://, mysql://, zk://
    #[arg(long, env = "DURABLE_URL", default_value = "sqlite://flags.sqlite")]
    url: String,
    /// Namespace of the dictionary (isolates environments sharing one store).
    #[arg(long, default_value = "demo")]
    namespace: String,
    /// Keep a backup snapshot in this file, to start while the store is down.
    #[arg(long)]
    backup: Option<PathBuf>,
}

type Flags = Dict<Value>;

#[derive(Clone)]
struct App {
    flags: Flags,
}

/// The per-request sync: a handler that takes `Synced` gets one snapshot, brought up to date
/// once for this request (concurrent requests share one version check). When the store cannot
/// be reached the request fails with `503` and the snapshot's age, instead of hanging.
struct Synced(Snapshot<Value>);

impl FromRequestParts<App> for Synced {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        match app.flags.sync().await {
            Ok(snapshot) => Ok(Synced(snapshot)),
            Err(error) => Err(ApiError::from_store(error, &app.flags)),
        }
    }
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(age) = self.snapshot_age {
            let headers = response.headers_mut();
            headers.insert(
                "x-snapshot-age-ms",
                HeaderValue::from(age.as_millis() as u64),
            );
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

async fn list(Synced(snapshot): Synced) -> Json<Value> {
    let flags: BTreeMap<&str, &Value> = snapshot.iter().collect();
    Json(json!({ "version": snapshot.version().to_string(), "flags": flags }))
}

async fn get_flag(
    Synced(snapshot): Synced,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let value = snapshot
        .get(&name)
        .ok_or_else(|| ApiError::unknown(&name))?;
    Ok(Json(json!({ "name": name, "value": value })))
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

async fn healthz(State(app): State<App>) -> impl IntoResponse {
    let health = app.flags.health();
    let status = if health.fresh {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!(health)))
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
.on{color:#080;font-weight:bold}.off{color:#a00;font-weight:bold}form{display:inline}";

async fn admin(State(app): State<App>, Synced(snapshot): Synced) -> Html<String> {
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
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Feature flags</title>\
         <style>{STYLE}</style></head><body><h1>Feature flags</h1>\
         <p class=\"meta\">version <code id=\"version\">{version}</code> · snapshot age \
         <span id=\"age\">{age:?}</span> · backend {backend} · {checks} checks, {unchanged} \
         unchanged, {deltas} deltas, {reloads} reloads, {coalesced} coalesced, {hint_skips} \
         skipped by hints, {errors} errors</p>\
         <table><thead><tr><th>flag</th><th>value</th><th>actions</th></tr></thead>\
         <tbody>{rows}</tbody></table>\
         <h2>Add a flag</h2><form method=\"post\" action=\"/admin/flags\">\
         <input name=\"name\" placeholder=\"name\" required> <input name=\"value\" \
         placeholder=\"JSON value, e.g. true\" required> <button>add</button></form>\
         </body></html>",
        version = snapshot.version(),
        age = snapshot.age(),
        backend = app.flags.backend_name(),
        checks = stats.checks,
        unchanged = stats.unchanged,
        deltas = stats.deltas,
        reloads = stats.reloads,
        coalesced = stats.coalesced,
        hint_skips = stats.hint_skips,
        errors = stats.errors,
    ))
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
    Router::new()
        .route("/", get(|| async { Redirect::to("/admin") }))
        .route("/api/flags", get(list))
        .route(
            "/api/flags/{name}",
            get(get_flag).put(put_flag).delete(delete_flag),
        )
        .route("/healthz", get(healthz))
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

async fn run(args: Args) -> Result<(), String> {
    let store = Store::connect(&args.url).await.map_err(|e| e.to_string())?;
    let mut options = Options::new();
    if let Some(path) = &args.backup {
        options = options.with_backup_file(path);
    }
    let flags: Flags = store
        .open(&args.namespace, "flags", durable::Json, options)
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
    axum::serve(listener, router(App { flags }))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}
