//! Every task the soak spawns (workers, session drivers, accept loops, stream handlers)
//! goes through [`Tasks::spawn`], which counts it, names it for diagnostics and turns a
//! panic inside it into a recorded failure instead of a silently lost task.

use std::collections::HashMap;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

#[derive(Default)]
pub(crate) struct Tasks {
    spawned: AtomicU64,
    finished: AtomicU64,
    running: Mutex<HashMap<u64, String>>,
    panics: Mutex<Vec<(String, String)>>,
}

impl Tasks {
    /// Spawns `fut` on the current runtime as task `name`.
    pub(crate) fn spawn<F>(self: &Arc<Self>, name: String, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let id = self.spawned.fetch_add(1, Ordering::SeqCst);
        lock(&self.running).insert(id, name);
        let tracked = Tracked {
            fut: Box::pin(fut),
            guard: Guard {
                tasks: self.clone(),
                id,
            },
        };
        tokio::spawn(tracked);
    }

    pub(crate) fn spawned(&self) -> u64 {
        self.spawned.load(Ordering::SeqCst)
    }

    pub(crate) fn finished(&self) -> u64 {
        self.finished.load(Ordering::SeqCst)
    }

    /// Names of the tasks still running, sorted, at most `max`.
    pub(crate) fn running(&self, max: usize) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.running).values().cloned().collect();
        names.sort();
        names.truncate(max);
        names
    }

    /// Tasks that panicked: (name, panic message).
    pub(crate) fn take_panics(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *lock(&self.panics))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts the task as finished however it ends (completion, panic, runtime shutdown).
struct Guard {
    tasks: Arc<Tasks>,
    id: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        lock(&self.tasks.running).remove(&self.id);
        self.tasks.finished.fetch_add(1, Ordering::SeqCst);
    }
}

struct Tracked<F> {
    fut: Pin<Box<F>>,
    guard: Guard,
}

impl<F: Future<Output = ()>> Future for Tracked<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match catch_unwind(AssertUnwindSafe(|| this.fut.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                let name = lock(&this.guard.tasks.running)
                    .get(&this.guard.id)
                    .cloned()
                    .unwrap_or_default();
                lock(&this.guard.tasks.panics).push((name, message));
                Poll::Ready(())
            }
        }
    }
}
