//! How exactly one set of secrets is stored when servers start at once on an empty
//! datastore, and how every later server loads it. Correctness comes from the
//! compare-and-swap create of [`DATA_KEY`]: if several generate, one create applies and
//! the others reload the winner's data. The lock at [`LOCK_KEY`] (holder and time, with a
//! TTL) only keeps the losers from doing the slow work for nothing; one older than
//! [`STALE_LOCK_AFTER`] is taken over by a compare-and-swap on its revision.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::envelope::{open, seal};
use super::settings::reconcile_settings;
use super::{
    BootstrapError, BootstrapState, ClusterSettings, DATA_KEY, LOCK_KEY, STALE_LOCK_AFTER,
};
use capstan_datastore::{Store, WriteOp, WriteOutcome};

/// The lock's TTL: the sweeper removes it if nobody takes it over first.
const LOCK_TTL: Duration = Duration::from_secs(60);
/// How often a server waiting for another one's bootstrap looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Whether the datastore already holds a cluster's bootstrap data.
pub async fn is_bootstrapped(store: &Store) -> Result<bool, BootstrapError> {
    Ok(store.get(DATA_KEY).await?.is_some())
}

/// The cluster's shared secrets, opened with `secret`; [`BootstrapError::NotBootstrapped`]
/// on an empty datastore.
pub async fn load(store: &Store, secret: &str) -> Result<BootstrapState, BootstrapError> {
    let stored = store
        .get(DATA_KEY)
        .await?
        .ok_or(BootstrapError::NotBootstrapped)?;
    open(&stored.value, secret).await
}

/// The cluster's shared secrets: loaded from the datastore and opened with `secret`, or,
/// on an empty datastore, generated and stored by exactly one of the servers starting now.
/// Then checks (or, first, records) the cluster-wide `settings`. `holder` names this
/// server process in the bootstrap lock.
pub async fn load_or_create(
    store: &Store,
    secret: &str,
    settings: &ClusterSettings,
    holder: &str,
) -> Result<BootstrapState, BootstrapError> {
    load_or_create_adopting(store, secret, settings, holder, None)
        .await
        .map(|loaded| loaded.state)
}

/// The shared secrets as a server opened them, and the token generation they were sealed
/// under.
#[derive(Debug)]
pub struct Loaded {
    /// The secrets.
    pub state: BootstrapState,
    /// The revision of [`DATA_KEY`] that was opened: see [`token_generation`].
    pub token_generation: i64,
}

/// The cluster token's generation: the revision at which [`DATA_KEY`] was last written.
/// Only its creation and `capstan token rotate` (which re-seals it under the new token)
/// write that key, so the number changes exactly when the token does; node certificates
/// carry the generation they were issued under, and the API refuses older ones. `None` on
/// an empty datastore.
pub async fn token_generation(store: &Store) -> Result<Option<i64>, BootstrapError> {
    Ok(store.get(DATA_KEY).await?.map(|stored| stored.mod_revision))
}

/// [`load_or_create`], storing `adopt` instead of generating when this server bootstraps
/// the cluster: a single server upgraded from before shared bootstrap keeps the CA of its
/// data dir, so the kubeconfigs it handed out keep working.
pub async fn load_or_create_adopting(
    store: &Store,
    secret: &str,
    settings: &ClusterSettings,
    holder: &str,
    adopt: Option<BootstrapState>,
) -> Result<Loaded, BootstrapError> {
    settings.validate()?;
    let loaded = load_or_generate(store, secret, holder, adopt).await?;
    reconcile_settings(store, settings).await?;
    Ok(loaded)
}

async fn load_or_generate(
    store: &Store,
    secret: &str,
    holder: &str,
    adopt: Option<BootstrapState>,
) -> Result<Loaded, BootstrapError> {
    let mut told_waiting = false;
    loop {
        if let Some(stored) = store.get(DATA_KEY).await? {
            return Ok(Loaded {
                state: open(&stored.value, secret).await?,
                token_generation: stored.mod_revision,
            });
        }
        let Some(lock_revision) = take_lock(store, holder).await? else {
            if !told_waiting {
                tracing::info!("another server is bootstrapping the cluster; waiting for it");
                told_waiting = true;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
            continue;
        };
        let generated = generate_and_store(store, secret, adopt.clone()).await;
        // Released whatever happened; a failed delete leaves it to go stale.
        if let Err(error) = store.delete(LOCK_KEY, Some(lock_revision)).await {
            tracing::warn!(%error, "could not release the bootstrap lock; it expires by itself");
        }
        match generated? {
            Some(loaded) => {
                tracing::info!("bootstrapped the cluster: stored its CA and keys in the datastore");
                return Ok(loaded);
            }
            // Another server's data landed first (it took over our lock as stale): use it.
            None => continue,
        }
    }
}

/// Generates the secrets and creates [`DATA_KEY`]; `None` if another server's create won.
async fn generate_and_store(
    store: &Store,
    secret: &str,
    adopt: Option<BootstrapState>,
) -> Result<Option<Loaded>, BootstrapError> {
    if store.get(DATA_KEY).await?.is_some() {
        return Ok(None);
    }
    let state = match adopt {
        Some(state) => state,
        None => tokio::task::spawn_blocking(BootstrapState::generate)
            .await
            .map_err(|error| {
                BootstrapError::Crypto(format!("key generation task failed: {error}"))
            })??,
    };
    let sealed = seal(&state, secret).await?;
    match store.create(DATA_KEY, sealed).await? {
        WriteOutcome::Applied { revision } => Ok(Some(Loaded {
            state,
            token_generation: revision,
        })),
        WriteOutcome::Conflict { .. } => Ok(None),
    }
}

/// What [`LOCK_KEY`] holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LockValue {
    holder: String,
    /// Milliseconds since the Unix epoch when it was taken.
    since_ms: u64,
}

/// Takes the bootstrap lock (or a stale one over); its revision if this server holds it.
async fn take_lock(store: &Store, holder: &str) -> Result<Option<i64>, BootstrapError> {
    let now = unix_millis();
    let value = serde_json::to_vec(&LockValue {
        holder: holder.to_string(),
        since_ms: now,
    })
    .map_err(|error| BootstrapError::Crypto(format!("cannot serialize: {error}")))?;
    let created = store
        .write(WriteOp::Create {
            key: LOCK_KEY.to_string(),
            value: value.clone().into(),
            ttl: Some(LOCK_TTL),
        })
        .await?;
    if let WriteOutcome::Applied { revision } = created.outcome {
        return Ok(Some(revision));
    }
    let Some(current) = store.get(LOCK_KEY).await? else {
        // Released just now: the data is probably there; look again.
        return Ok(None);
    };
    let held = serde_json::from_slice::<LockValue>(&current.value).ok();
    let age_ms = held
        .as_ref()
        .map_or(u64::MAX, |lock| now.saturating_sub(lock.since_ms));
    if age_ms < STALE_LOCK_AFTER.as_millis() as u64 {
        return Ok(None);
    }
    tracing::warn!(
        previous = held.as_ref().map_or("?", |lock| lock.holder.as_str()),
        age_seconds = age_ms / 1000,
        "taking over a stale bootstrap lock"
    );
    let updated = store
        .write(WriteOp::Update {
            key: LOCK_KEY.to_string(),
            value: value.into(),
            expected_revision: current.mod_revision,
            ttl: Some(LOCK_TTL),
        })
        .await?;
    Ok(match updated.outcome {
        WriteOutcome::Applied { revision } => Some(revision),
        WriteOutcome::Conflict { .. } => None,
    })
}

/// Re-seals the bootstrap data under `new_secret` (it must open with `old_secret`); the
/// state, unchanged. Every server and agent must then be restarted with the new token.
pub async fn rotate(
    store: &Store,
    old_secret: &str,
    new_secret: &str,
) -> Result<BootstrapState, BootstrapError> {
    loop {
        let stored = store
            .get(DATA_KEY)
            .await?
            .ok_or(BootstrapError::NotBootstrapped)?;
        let state = open(&stored.value, old_secret).await?;
        let sealed = seal(&state, new_secret).await?;
        match store.update(DATA_KEY, sealed, stored.mod_revision).await? {
            WriteOutcome::Applied { .. } => return Ok(state),
            // Written meanwhile (another rotation?): start over from what is there now.
            WriteOutcome::Conflict { .. } => continue,
        }
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a SQLite file in `dir`.
    async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
        let endpoint = format!("sqlite://{}", dir.path().join("state.db").display());
        Store::open(
            &capstan_datastore::DatastoreConfig::for_endpoint(endpoint),
            &capstan_datastore::DatastoreMetrics::unscraped(),
        )
        .await
        .expect("SQLite store opens")
    }

    #[tokio::test]
    async fn when_two_generate_the_compare_and_swap_keeps_exactly_one() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store = sqlite_store(&dir).await;
        // No lock: both may generate; the create of the data key lets one through.
        let (first, second) = tokio::join!(
            generate_and_store(&store, "s3cret", None),
            generate_and_store(&store, "s3cret", None)
        );
        let winners: Vec<Loaded> = [first, second]
            .into_iter()
            .filter_map(|outcome| outcome.expect("no error"))
            .collect();
        assert_eq!(winners.len(), 1, "exactly one set is stored");
        let stored = load(&store, "s3cret").await.expect("loads");
        assert_eq!(stored, winners[0].state, "the stored set is the winner's");
        assert_eq!(
            token_generation(&store).await.expect("reads"),
            Some(winners[0].token_generation),
            "the winner knows the generation it stored"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_rotation_starts_a_new_token_generation_and_a_reload_keeps_it() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store = sqlite_store(&dir).await;
        assert_eq!(token_generation(&store).await.expect("reads"), None);
        let first = generate_and_store(&store, "old", None)
            .await
            .expect("no error")
            .expect("the only generator wins");
        rotate(&store, "old", "new").await.expect("rotates");
        let rotated = token_generation(&store)
            .await
            .expect("reads")
            .expect("bootstrapped");
        assert!(rotated > first.token_generation, "{rotated}");
        let reloaded = load_or_generate(&store, "new", "restarted", None)
            .await
            .expect("opens with the new token");
        assert_eq!(reloaded.token_generation, rotated);
        store.close().await;
    }
}
