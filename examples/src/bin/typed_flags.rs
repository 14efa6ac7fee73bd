//! Flags of mixed types in one dictionary, read with types and defaults, against any store.
//!
//! ```sh
//! cargo run -p durable-examples --bin typed_flags                       # SQLite in memory
//! cargo run -p durable-examples --bin typed_flags -- --url redis://127.0.0.1:6379/
//! ```
//!
//! One dictionary of JSON values (`Dict<serde_json::Value>`) holds every flag, whatever its type:
//! a boolean kill switch, a number, a string variant, a struct. The application declares each
//! flag once, as a [`Flag<T>`] constant with its name, type and default, and reads it from a
//! snapshot with [`Flag::get`]: the stored JSON is turned into `T` on the spot (for booleans and
//! numbers that is a few nanoseconds and no allocation; a `String` is copied). A flag that is
//! absent, or holds a value of the wrong type (someone ran `durable set max-items '"ten"'`),
//! reads as its default: one bad value costs that flag, never the request, and
//! [`Flag::check`] tells which flags are set wrong (for a health page or a log line).
//!
//! The example writes the four flags, reads them typed, stores a wrong type in one and shows
//! the default taking over, then fixes it.

use clap::Parser;
use durable::{Dict, Json, Options, Result, Snapshot};
use durable_examples::ExampleStore;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Flags of mixed types in one dictionary, read with types and defaults")]
struct Args {
    /// The store: sqlite::memory:, memory:, sqlite://FILE, redis://, postgres://, mysql://,
    /// zk://, files:DIR
    #[arg(long, env = "DURABLE_URL", default_value = "sqlite::memory:")]
    url: String,
    /// Namespace of the dictionary.
    #[arg(long, default_value = "examples")]
    namespace: String,
}

/// A flag: its key in the dictionary, its type and the value it reads as when it is absent or
/// set to a value of another type.
struct Flag<T> {
    name: &'static str,
    default: fn() -> T,
}

impl<T: DeserializeOwned> Flag<T> {
    const fn new(name: &'static str, default: fn() -> T) -> Self {
        Flag { name, default }
    }

    /// The flag's value in `snapshot`, or its default.
    fn get(&self, snapshot: &Snapshot<Value>) -> T {
        snapshot
            .get(self.name)
            .and_then(|value| T::deserialize(value).ok())
            .unwrap_or_else(self.default)
    }

    /// Why the stored value does not read as `T`, if it is there and does not.
    fn check(&self, snapshot: &Snapshot<Value>) -> Option<String> {
        let value = snapshot.get(self.name)?;
        T::deserialize(value)
            .err()
            .map(|e| format!("flag {:?} = {value} is ignored: {e}", self.name))
    }
}

/// A flag holding a struct.
#[derive(Debug, Deserialize)]
struct Banner {
    text: String,
    color: String,
}

const NEW_CHECKOUT: Flag<bool> = Flag::new("new-checkout", || false);
const MAX_ITEMS: Flag<u32> = Flag::new("max-items", || 10);
const THEME: Flag<String> = Flag::new("theme", || "light".to_owned());
const BANNER: Flag<Option<Banner>> = Flag::new("banner", || None);

/// Prints every flag as the application reads it.
fn show(flags: &Dict<Value>) {
    let snapshot = flags.snapshot();
    println!(
        "  new-checkout={} max-items={} theme={} banner={:?}",
        NEW_CHECKOUT.get(&snapshot),
        MAX_ITEMS.get(&snapshot),
        THEME.get(&snapshot),
        BANNER
            .get(&snapshot)
            .map(|b| format!("{} ({})", b.text, b.color)),
    );
    let problems = [
        NEW_CHECKOUT.check(&snapshot),
        MAX_ITEMS.check(&snapshot),
        THEME.check(&snapshot),
        BANNER.check(&snapshot),
    ];
    for problem in problems.into_iter().flatten() {
        println!("  warning: {problem}");
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    durable_examples::init_logging("warn");
    let store = ExampleStore::connect(&args.url).await?;
    let flags: Dict<Value> = store
        .open(&args.namespace, "typed-flags", Json, Options::new())
        .await?;
    flags.clear().await.ok();
    println!("no flags stored: every flag reads as its default");
    show(&flags);

    flags
        .insert_many([
            ("new-checkout".to_owned(), json!(true)),
            ("max-items".to_owned(), json!(25)),
            ("theme".to_owned(), json!("dark")),
            (
                "banner".to_owned(),
                json!({"text": "Spring sale", "color": "green"}),
            ),
        ])
        .await?;
    println!("four flags of four types, stored in one dictionary:");
    show(&flags);

    flags.insert("max-items", json!("ten")).await?;
    println!("max-items set to a string by mistake: it reads as its default, the others stay:");
    show(&flags);

    flags.insert("max-items", json!(12)).await?;
    println!("fixed:");
    show(&flags);
    Ok(())
}
