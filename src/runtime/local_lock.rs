//! The in-process lock registry: one turn at a time per conversation within
//! this process (the store's lease does the same across processes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Each conversation's turn lock, while some turn of it runs or waits.
#[derive(Default)]
pub(super) struct LocalLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl LocalLocks {
    /// The in-process turn lock of a conversation, not yet taken.
    pub(super) fn turn<'a>(&'a self, conversation_id: &'a str) -> LocalTurn<'a> {
        let lock = {
            let mut running = self.0.lock().unwrap_or_else(|e| e.into_inner());
            running.entry(conversation_id.to_string()).or_default().clone()
        };
        LocalTurn {
            running: &self.0,
            conversation_id,
            lock,
            guard: None,
        }
    }
}

/// A conversation's in-process turn lock: one turn at a time per
/// conversation within this process (the lease does the same across
/// processes). Dropping it lets the lock go and forgets it when no other
/// turn waits on it, so the map does not grow with every conversation ever
/// seen.
pub(super) struct LocalTurn<'a> {
    running: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub(super) conversation_id: &'a str,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl LocalTurn<'_> {
    /// Takes the lock if it is free; true when it is held now.
    pub(super) fn try_lock(&mut self) -> bool {
        if self.guard.is_none() {
            self.guard = self.lock.clone().try_lock_owned().ok();
        }
        self.guard.is_some()
    }

    /// Takes the lock, waiting for the turn that holds it.
    pub(super) async fn lock(&mut self) {
        if self.guard.is_none() {
            self.guard = Some(self.lock.clone().lock_owned().await);
        }
    }

    pub(super) fn unlock(&mut self) {
        self.guard = None;
    }
}

impl Drop for LocalTurn<'_> {
    fn drop(&mut self) {
        self.guard = None;
        // Each `LocalTurn` is made under the map's lock and holds its clone
        // for life (its guard's clone only while it lives), so under that
        // lock a count of 2, the map's and this one, means no other turn is
        // waiting or about to.
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::strong_count(&self.lock) == 2 {
            running.remove(self.conversation_id);
        }
    }
}
