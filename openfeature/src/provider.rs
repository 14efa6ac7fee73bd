//! [`DurableProvider`]: the OpenFeature provider.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use async_trait::async_trait;
use open_feature::provider::{
    FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails,
};
use open_feature::{
    EvaluationContext, EvaluationError, EvaluationErrorCode, EvaluationResult, StructValue,
};

use crate::events::FlagEvents;
use crate::resolution::FlagType;
use crate::store::FlagStore;

type Opening = Pin<Box<dyn Future<Output = crate::Result<FlagStore>> + Send>>;

enum State {
    Open(FlagStore),
    /// Waiting for `initialize` to open the store.
    Opening(Mutex<Option<Opening>>),
    /// Opening failed: the error, as text.
    Failed(String),
}

/// An OpenFeature provider serving the flags of a [`FlagStore`] from its local snapshot.
///
/// Register it with `OpenFeature::singleton_mut().await.set_provider(provider)` (or
/// `set_named_provider`) and evaluate through an OpenFeature client. Each evaluation reads the
/// snapshot only (no I/O): call [`FlagStore::sync`] once per request, or open the dictionary in
/// background mode.
///
/// **Status** follows the dictionary's [`health`](durable_core::Dict::health): `READY` while
/// its last version check succeeded, `STALE` while checks fail or the snapshot comes from the
/// backup file and the store has not confirmed it; `NOT_READY` before
/// [`initialize`](FeatureProvider::initialize) for a provider made with
/// [`DurableProvider::opening`], `ERROR` if that opening failed (evaluations then fail with
/// `PROVIDER_NOT_READY`).
///
/// **Caller defaults.** open-feature 0.3 does not pass the caller's default value to a
/// provider. Where flagd specifies "the caller's default" (a `DISABLED` flag; a flag whose
/// `defaultVariant` is null and whose targeting picks nothing), the provider answers with an
/// error of code `General("DISABLED")` or `General("DEFAULT")`, so that
/// `client.get_bool_value(..).await.unwrap_or(default)` yields the caller's default.
/// [`FlagStore::resolve`] gives the exact answer (value = default, reason `DISABLED`/`DEFAULT`).
pub struct DurableProvider {
    state: State,
    metadata: ProviderMetadata,
}

impl fmt::Debug for DurableProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Open(store) => format!("{store:?}"),
            State::Opening(_) => "opening".into(),
            State::Failed(error) => format!("failed: {error}"),
        };
        f.debug_struct("DurableProvider")
            .field("name", &self.metadata.name)
            .field("state", &state)
            .finish()
    }
}

impl DurableProvider {
    /// The provider's name in its metadata.
    pub const NAME: &'static str = "durable";

    /// A provider over an open [`FlagStore`].
    pub fn new(store: FlagStore) -> Self {
        DurableProvider {
            state: State::Open(store),
            metadata: ProviderMetadata::new(Self::NAME),
        }
    }

    /// A provider whose store is opened by `open` during
    /// [`initialize`](FeatureProvider::initialize) (when the provider is registered): status
    /// `NOT_READY` until then, `ERROR` if `open` fails.
    pub fn opening(open: impl Future<Output = crate::Result<FlagStore>> + Send + 'static) -> Self {
        DurableProvider {
            state: State::Opening(Mutex::new(Some(Box::pin(open)))),
            metadata: ProviderMetadata::new(Self::NAME),
        }
    }

    /// The store, once open.
    pub fn store(&self) -> Option<&FlagStore> {
        match &self.state {
            State::Open(store) => Some(store),
            _ => None,
        }
    }

    /// Flag change events (the provider's `PROVIDER_CONFIGURATION_CHANGED`), once the store is
    /// open. See [`FlagEvents`].
    pub fn events(&self) -> Option<FlagEvents> {
        self.store().map(FlagStore::events)
    }

    fn details<T: FlagType>(
        &self,
        key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<T>> {
        match &self.state {
            State::Open(store) => store
                .outcome(&store.snapshot(), key, context)
                .into_details(key),
            State::Opening(_) => Err(EvaluationError {
                code: EvaluationErrorCode::ProviderNotReady,
                message: Some("the flag store is not open yet".into()),
            }),
            State::Failed(error) => Err(EvaluationError {
                code: EvaluationErrorCode::ProviderNotReady,
                message: Some(format!("the flag store could not be opened: {error}")),
            }),
        }
    }
}

#[async_trait]
impl FeatureProvider for DurableProvider {
    async fn initialize(&mut self, _context: &EvaluationContext) {
        let State::Opening(slot) = &mut self.state else {
            return;
        };
        let Some(open) = slot.get_mut().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        self.state = match open.await {
            Ok(store) => State::Open(store),
            Err(error) => {
                tracing::error!(%error, "durable OpenFeature provider: opening the flag store failed");
                State::Failed(error.to_string())
            }
        };
    }

    fn status(&self) -> ProviderStatus {
        match &self.state {
            State::Open(store) => {
                if store.dict().health().fresh {
                    ProviderStatus::Ready
                } else {
                    ProviderStatus::STALE
                }
            }
            State::Opening(_) => ProviderStatus::NotReady,
            State::Failed(_) => ProviderStatus::Error,
        }
    }

    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    async fn resolve_bool_value(
        &self,
        flag_key: &str,
        evaluation_context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        self.details(flag_key, evaluation_context)
    }

    async fn resolve_int_value(
        &self,
        flag_key: &str,
        evaluation_context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        self.details(flag_key, evaluation_context)
    }

    async fn resolve_float_value(
        &self,
        flag_key: &str,
        evaluation_context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        self.details(flag_key, evaluation_context)
    }

    async fn resolve_string_value(
        &self,
        flag_key: &str,
        evaluation_context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        self.details(flag_key, evaluation_context)
    }

    async fn resolve_struct_value(
        &self,
        flag_key: &str,
        evaluation_context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        self.details(flag_key, evaluation_context)
    }
}
