//! The change feed: one poller per server reads the log in revision order and fans every
//! change out to this server's watchers.
//!
//! Why it cannot miss or reorder a commit: revisions are dense (see `sql/`), so the poller
//! knows exactly which revision comes next. If the next row it reads is not `position + 1`,
//! the missing revision is either compacted (the poller fell further behind than the
//! retention window; watchers are told so) or not yet visible, and the poller waits for it.
//! It never skips ahead on a timer.
//!
//! What wakes it: a commit by this server's writer (at once), a Postgres notification for a
//! commit by any server (at once; one for revisions already delivered is skipped), or the
//! poll timer. Without notifications (MySQL, SQLite, or while the notification connection
//! is down) the timer runs fast while changes flow and backs off to `poll_interval_ms` when
//! idle; with them it stays at `poll_interval_ms`, a safety net only.
//!
//! A new watch whose start revision the in-memory window of recent events reaches takes
//! the rest from it and registers for live ones at once; an older one first reads the
//! database up to the poller's position. The hand-over happens under the feed's lock, so
//! there is no gap and no duplicate between the phases.
//! Each watcher has a bounded queue, in events and in bytes, and the queues of all watchers
//! together are bounded in bytes too; a watcher that lets its queue fill (or, once the total
//! is reached, one that is behind at all) is cut off with [`DatastoreError::WatcherTooSlow`]
//! rather than stalling the others or growing memory. It lists again and resumes. The
//! window of recent events is bounded in number and in bytes.
//!
//! Poller lag (`capstan_datastore_poller_lag_seconds`) is measured per change at fan-out.
//! The log stores no commit times, so the start is the best instant this server knows:
//! for its own writes the writer reports when each batch committed ([`ChangeFeed::committed`]);
//! for other servers' writes, the moment the poller was woken for the pass that found them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, ChangeSignal};
use super::config::DatastoreConfig;
use super::error::{DatastoreError, Result};
use super::metrics::{ClosedReason, DatastoreMetrics, StoreOp};
use super::types::{Event, KeyRange};

/// Rows read per poll or catch-up query.
const PAGE: usize = 1000;

/// A poll slower than this is logged: it delays every watcher on this server.
const SLOW: Duration = Duration::from_millis(20);

/// Why the feed closed a watcher's queue.
#[derive(Debug, Clone, Copy)]
enum CloseReason {
    TooSlow,
    Compacted { compact_revision: i64 },
}

/// Where the feed leaves the reason it closed a watcher's queue.
type CloseSlot = Arc<Mutex<Option<CloseReason>>>;

/// Bytes of events in one watcher's queue, added by the feed as it sends and taken off by
/// the watch as it receives.
type Backlog = Arc<AtomicUsize>;

struct Subscriber {
    range: KeyRange,
    /// Events below this revision were already delivered from the database.
    next_revision: i64,
    queue: mpsc::Sender<Arc<Event>>,
    closed: CloseSlot,
    backlog: Backlog,
}

struct FeedState {
    /// Every revision up to here has been read and fanned out.
    position: i64,
    /// The newest events, in revision order, for watches that start near the head.
    recent: VecDeque<Arc<Event>>,
    /// What `recent` holds, in [`Event::size`] bytes.
    recent_bytes: usize,
    subscribers: Vec<Subscriber>,
    /// This server's recent commits not yet delivered, oldest first (for poller lag).
    own_commits: VecDeque<OwnCommit>,
}

/// One batch committed by this server's writer: revisions `first..=last`, at `at`.
#[derive(Debug, Clone, Copy)]
struct OwnCommit {
    first: i64,
    last: i64,
    at: Instant,
}

/// Own commits remembered for lag measurement; older ones are forgotten (their changes
/// then count from when the poller found them).
const OWN_COMMITS_KEPT: usize = 4096;

/// One server's change feed.
pub(crate) struct ChangeFeed {
    state: Mutex<FeedState>,
    wake: Notify,
    recent_capacity: usize,
    recent_bytes_limit: usize,
    watch_queue: usize,
    watch_queue_bytes: usize,
    watch_queue_total_bytes: usize,
    /// Bytes queued for all watchers.
    queued_total: AtomicUsize,
    pub(crate) metrics: DatastoreMetrics,
}

impl ChangeFeed {
    pub(crate) fn new(position: i64, config: &DatastoreConfig, metrics: DatastoreMetrics) -> Self {
        ChangeFeed {
            state: Mutex::new(FeedState {
                position,
                recent: VecDeque::new(),
                recent_bytes: 0,
                subscribers: Vec::new(),
                own_commits: VecDeque::new(),
            }),
            wake: Notify::new(),
            recent_capacity: config.recent_events.max(1),
            recent_bytes_limit: config.recent_events_bytes,
            watch_queue: config.watch_queue.max(1),
            watch_queue_bytes: config.watch_queue_bytes,
            watch_queue_total_bytes: config.watch_queue_total_bytes,
            queued_total: AtomicUsize::new(0),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, FeedState> {
        // A panic while holding this lock would be a bug in the fan-out below; the state
        // is still consistent (every step leaves it whole), so keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks the poller to look for new changes now.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Notes that this server's writer committed revisions `first..=last` at `at`, the
    /// start of their poller lag.
    pub(crate) fn committed(&self, first: i64, last: i64, at: Instant) {
        let mut state = self.lock();
        if last <= state.position {
            return;
        }
        if state.own_commits.len() >= OWN_COMMITS_KEPT {
            state.own_commits.pop_front();
        }
        state.own_commits.push_back(OwnCommit { first, last, at });
    }

    /// Every revision up to this one has been delivered to local watchers.
    pub(crate) fn position(&self) -> i64 {
        self.lock().position
    }

    /// Hands `events` (consecutive, starting at `position + 1`) to the watchers; those not
    /// written by this server count their lag from `learned_at`.
    fn deliver(&self, events: Vec<Event>, learned_at: Instant) {
        let mut state = self.lock();
        for event in events {
            let event = Arc::new(event);
            let committed_at = commit_instant(&mut state.own_commits, event.revision, learned_at);
            state.subscribers.retain_mut(|sub| {
                if event.revision < sub.next_revision || !sub.range.contains(&event.key) {
                    return !sub.queue.is_closed();
                }
                let size = event.size();
                let behind = sub.backlog.load(Ordering::Relaxed);
                let total = self.queued_total.load(Ordering::Relaxed);
                let over = behind + size > self.watch_queue_bytes.max(size)
                    || (behind > 0 && total + size > self.watch_queue_total_bytes);
                let sent = if over {
                    Err(mpsc::error::TrySendError::Full(event.clone()))
                } else {
                    sub.queue.try_send(event.clone())
                };
                match sent {
                    Ok(()) => {
                        sub.backlog.fetch_add(size, Ordering::Relaxed);
                        self.queued_total.fetch_add(size, Ordering::Relaxed);
                        true
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        *sub.closed.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(CloseReason::TooSlow);
                        self.metrics.watcher_closed(ClosedReason::TooSlow);
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
            self.metrics.poller_lag(committed_at);
            state.position = event.revision;
            state.recent_bytes += event.size();
            state.recent.push_back(event);
            while state.recent.len() > self.recent_capacity
                || (state.recent.len() > 1 && state.recent_bytes > self.recent_bytes_limit)
            {
                if let Some(oldest) = state.recent.pop_front() {
                    state.recent_bytes -= oldest.size();
                }
            }
        }
        self.metrics.feed_revision(state.position);
    }

    /// The poller fell behind compaction: every watcher is told, and the feed restarts
    /// from `resume_after`.
    fn reset(&self, resume_after: i64, compact_revision: i64) {
        let mut state = self.lock();
        for sub in state.subscribers.drain(..) {
            *sub.closed.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(CloseReason::Compacted { compact_revision });
            self.metrics.watcher_closed(ClosedReason::Compacted);
        }
        state.recent.clear();
        state.position = resume_after;
    }
}

/// When `revision` was committed, as far as this server knows: its writer's commit instant
/// when it wrote it, else `learned_at`. Forgets own commits before `revision` (delivery
/// goes in revision order, so they are done with).
fn commit_instant(
    own_commits: &mut VecDeque<OwnCommit>,
    revision: i64,
    learned_at: Instant,
) -> Instant {
    while own_commits
        .front()
        .is_some_and(|commit| commit.last < revision)
    {
        own_commits.pop_front();
    }
    match own_commits.front() {
        Some(commit) if commit.first <= revision => commit.at,
        _ => learned_at,
    }
}

/// Reads new changes and delivers them, until `shutdown`.
pub(crate) async fn run_poller(
    feed: Arc<ChangeFeed>,
    backend: Arc<dyn Backend>,
    config: DatastoreConfig,
    shutdown: CancellationToken,
) {
    let idle = config.poll_interval();
    let busy = config.poll_interval_busy();
    let mut interval = idle;
    let mut signal = Signal::Retry(Instant::now());
    let mut gap_since: Option<Instant> = None;
    // When the poller was first woken for changes it has not delivered yet.
    let mut woken_at: Option<Instant> = None;
    loop {
        if let Signal::Retry(at) = signal
            && Instant::now() >= at
        {
            signal = match backend.change_signal().await {
                Ok(Some(connected)) => Signal::Connected(connected),
                Ok(None) => Signal::Unsupported,
                Err(err) => {
                    tracing::warn!(error = %err, "change notifications unavailable; polling");
                    Signal::Retry(Instant::now() + Duration::from_secs(5))
                }
            };
        }
        let signalled = async {
            match &mut signal {
                Signal::Connected(connected) => connected.recv().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = feed.wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
            received = signalled => match received {
                // This server's own commits and those an earlier pass already found are
                // announced too; under load most notifications are such, and skipping them
                // saves a query each.
                Ok(Some(revision)) if revision <= feed.position() => continue,
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "change notification connection lost; polling until it is back");
                    signal = Signal::Retry(Instant::now() + Duration::from_secs(1));
                }
            }
        }
        feed.metrics.record_pool(backend.pool_stats());
        let learned_at = *woken_at.get_or_insert_with(Instant::now);
        match poll_once(&feed, backend.as_ref(), learned_at).await {
            Ok(PollResult::Delivered) => {
                gap_since = None;
                woken_at = None;
                // With notifications, every later commit wakes the poller; the timer only
                // covers a notification lost with its connection. Without them it is the
                // only way to learn of other servers' commits, so it runs fast meanwhile.
                interval = if matches!(signal, Signal::Connected(_)) {
                    idle
                } else {
                    busy
                };
            }
            Ok(PollResult::Nothing) => {
                gap_since = None;
                woken_at = None;
                interval = (interval * 2).min(idle);
            }
            Ok(PollResult::WaitingForGap(revision)) => {
                let since = *gap_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(10) {
                    tracing::error!(
                        revision,
                        "revision {revision} is still not visible after 10 s; waiting (never skipping) for it"
                    );
                    gap_since = Some(Instant::now());
                }
                interval = busy;
            }
            Err(err) => {
                tracing::warn!(error = %err, "change feed poll failed; retrying");
                interval = idle;
            }
        }
    }
}

/// The push signal's state in the poller. A lost notification only delays delivery to the
/// next poll: the log, not the signal, is the source of truth.
enum Signal {
    /// The engine has none (MySQL, SQLite): the timer alone drives polling.
    Unsupported,
    Connected(Box<dyn ChangeSignal>),
    /// Ask for a (new) signal at this time.
    Retry(Instant),
}

enum PollResult {
    Delivered,
    Nothing,
    WaitingForGap(i64),
}

async fn poll_once(
    feed: &ChangeFeed,
    backend: &dyn Backend,
    learned_at: Instant,
) -> Result<PollResult> {
    let mut delivered = false;
    loop {
        let position = feed.position();
        let started = Instant::now();
        let events = feed
            .metrics
            .observe(
                StoreOp::History,
                backend.history(position, i64::MAX, None, PAGE),
            )
            .await?;
        if started.elapsed() > SLOW {
            let pool = backend.pool_stats();
            tracing::warn!(
                position,
                rows = events.len(),
                pool_size = pool.size,
                pool_idle = pool.idle,
                took_ms = started.elapsed().as_millis() as u64,
                "slow change feed poll"
            );
        }
        let fetched = events.len();
        let Some(first) = events.first() else {
            return Ok(if delivered {
                PollResult::Delivered
            } else {
                PollResult::Nothing
            });
        };
        if first.revision != position + 1 {
            let compaction = backend.compaction_state().await?;
            if position < compaction.compact_revision {
                tracing::warn!(
                    position,
                    compact_revision = compaction.compact_revision,
                    "change feed fell behind compaction; closing watchers so they re-list"
                );
                feed.reset(first.revision - 1, compaction.compact_revision);
                continue;
            }
            return Ok(PollResult::WaitingForGap(position + 1));
        }
        // Deliver the consecutive run; anything after a hole waits for the hole to fill.
        let mut expected = position + 1;
        let run: Vec<Event> = events
            .into_iter()
            .take_while(|e| {
                let next = e.revision == expected;
                expected += 1;
                next
            })
            .collect();
        let contiguous = run.len() == fetched;
        feed.deliver(run, learned_at);
        delivered = true;
        if !contiguous {
            return Ok(PollResult::WaitingForGap(feed.position() + 1));
        }
        if fetched < PAGE {
            return Ok(PollResult::Delivered);
        }
    }
}

/// A watch on a key range: every change after its start revision, once, in order.
pub struct Watch {
    feed: Arc<ChangeFeed>,
    backend: Arc<dyn Backend>,
    range: KeyRange,
    /// The database has been read through this revision (for this range).
    scanned: i64,
    /// The last revision handed to the caller.
    delivered: i64,
    pending: VecDeque<Event>,
    live: Option<(mpsc::Receiver<Arc<Event>>, CloseSlot, Backlog)>,
    failure: Option<DatastoreError>,
    finished: bool,
}

impl Watch {
    pub(crate) fn new(
        feed: Arc<ChangeFeed>,
        backend: Arc<dyn Backend>,
        range: KeyRange,
        after: i64,
    ) -> Self {
        feed.metrics.watchers_open(1);
        Watch {
            feed,
            backend,
            range,
            scanned: after,
            delivered: after,
            pending: VecDeque::new(),
            live: None,
            failure: None,
            finished: false,
        }
    }

    /// A watch that fails at once with `error`.
    pub(crate) fn failed(
        feed: Arc<ChangeFeed>,
        backend: Arc<dyn Backend>,
        range: KeyRange,
        error: DatastoreError,
    ) -> Self {
        let mut watch = Watch::new(feed, backend, range, 0);
        watch.failure = Some(error);
        watch
    }

    /// The next change; `None` once the watch has ended (after an error, or shutdown).
    pub async fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.delivered = event.revision;
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            if let Some(error) = self.failure.take() {
                self.finished = true;
                return Some(Err(error));
            }
            if let Some((queue, closed, backlog)) = self.live.as_mut() {
                match queue.recv().await {
                    Some(event) => {
                        let size = event.size();
                        backlog.fetch_sub(size, Ordering::Relaxed);
                        self.feed.queued_total.fetch_sub(size, Ordering::Relaxed);
                        self.delivered = event.revision;
                        return Some(Ok(Event::clone(&event)));
                    }
                    None => {
                        self.finished = true;
                        let reason = *closed.lock().unwrap_or_else(|p| p.into_inner());
                        return match reason {
                            Some(CloseReason::TooSlow) => {
                                Some(Err(DatastoreError::WatcherTooSlow {
                                    range: self.range.clone(),
                                    buffered: self.feed.watch_queue,
                                    revision: self.delivered,
                                }))
                            }
                            Some(CloseReason::Compacted { compact_revision }) => {
                                Some(Err(DatastoreError::Compacted {
                                    requested: self.delivered,
                                    compact_revision,
                                }))
                            }
                            None => None,
                        };
                    }
                }
            }
            if let Err(error) = self.catch_up().await {
                self.failure = Some(error);
            }
        }
    }

    /// One step towards the live feed: a page from the database, or the hand-over.
    async fn catch_up(&mut self) -> Result<()> {
        // A watch from near the head (every list-then-watch client) finds all it needs in
        // the in-memory window: no database round trip. With thousands of watches opened
        // at once, three queries each queued on the pool for seconds. Compaction was
        // checked when the watch was created, and the window holds every change since.
        if self.hand_over() {
            return Ok(());
        }
        let position = self.feed.position();
        if self.scanned < position {
            let compaction = self.backend.compaction_state().await?;
            if self.scanned < compaction.compact_revision {
                return Err(DatastoreError::Compacted {
                    requested: self.scanned,
                    compact_revision: compaction.compact_revision,
                });
            }
            let events = self
                .feed
                .metrics
                .observe(
                    StoreOp::History,
                    self.backend
                        .history(self.scanned, position, Some(&self.range), PAGE),
                )
                .await?;
            // Compaction may have moved past us while we read; then the page may be partial.
            let compaction = self.backend.compaction_state().await?;
            if self.scanned < compaction.compact_revision {
                return Err(DatastoreError::Compacted {
                    requested: self.scanned,
                    compact_revision: compaction.compact_revision,
                });
            }
            self.scanned = match events.last() {
                Some(last) if events.len() == PAGE => last.revision,
                _ => position,
            };
            self.pending.extend(events);
            return Ok(());
        }
        self.hand_over();
        Ok(())
    }

    /// Takes the rest from the in-memory window and registers for live events, if the
    /// window reaches back to where this watch stands; `false` if it does not (yet).
    fn hand_over(&mut self) -> bool {
        let mut state = self.feed.lock();
        let covered = state.position <= self.scanned
            || state
                .recent
                .front()
                .is_some_and(|oldest| oldest.revision <= self.scanned + 1);
        if !covered {
            // The feed moved on further than its memory reaches: read more from the database.
            return false;
        }
        for event in state
            .recent
            .iter()
            .filter(|e| e.revision > self.scanned && self.range.contains(&e.key))
        {
            self.pending.push_back(Event::clone(event));
        }
        let next_revision = state.position.max(self.scanned) + 1;
        self.scanned = next_revision - 1;
        let (queue, receiver) = mpsc::channel(self.feed.watch_queue);
        let closed = Arc::new(Mutex::new(None));
        let backlog = Backlog::default();
        state.subscribers.push(Subscriber {
            range: self.range.clone(),
            next_revision,
            queue,
            closed: closed.clone(),
            backlog: backlog.clone(),
        });
        self.live = Some((receiver, closed, backlog));
        true
    }

    /// The watch as a `Stream`.
    pub fn into_stream(self) -> impl Stream<Item = Result<Event>> + Send {
        futures::stream::unfold(self, |mut watch| async move {
            watch.next().await.map(|item| (item, watch))
        })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.feed.metrics.watchers_open(-1);
        // Under the feed's lock, so no send is under way: what is still queued no longer
        // counts against the total.
        if let Some((mut queue, _, backlog)) = self.live.take() {
            let _state = self.feed.lock();
            queue.close();
            let left = backlog.swap(0, Ordering::Relaxed);
            self.feed.queued_total.fetch_sub(left, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_writes_count_lag_from_their_commit_and_others_from_discovery() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // This server committed 3..=4 at 10 ms and 7 at 20 ms; 5 and 6 came from another
        // server and were found by the poll woken at 30 ms.
        let mut own: VecDeque<OwnCommit> = [(3, 4, at(10)), (7, 7, at(20))]
            .into_iter()
            .map(|(first, last, at)| OwnCommit { first, last, at })
            .collect();
        let learned = at(30);
        let seen: Vec<Instant> = (3..=8)
            .map(|revision| commit_instant(&mut own, revision, learned))
            .collect();
        assert_eq!(
            seen,
            [at(10), at(10), learned, learned, at(20), learned],
            "revisions 3..=8"
        );
        assert!(own.is_empty() || own.iter().all(|c| c.last >= 8));
    }
}
