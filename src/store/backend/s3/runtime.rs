//! The dedicated I/O thread whose current-thread runtime runs every request.

use super::*;

/// Tells the I/O thread to stop, waking it if it is waiting.
#[derive(Default)]
pub(super) struct Stop {
    pub(super) done: AtomicBool,
    pub(super) waker: Mutex<Option<Waker>>,
}

impl Stop {
    pub(super) fn waker(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.waker.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set(&self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker().take() {
            w.wake();
        }
    }

    pub(super) async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.done.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker() = Some(cx.waker().clone());
            // Checked again: `set` may have run between the first check and storing the waker.
            match self.done.load(Ordering::SeqCst) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
        .await
    }
}

/// A current-thread runtime driven by one dedicated thread for the back end's lifetime.
pub(super) struct IoThread {
    pub(super) handle: tokio::runtime::Handle,
    pub(super) stop: Arc<Stop>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

impl IoThread {
    pub(super) fn start() -> std::io::Result<IoThread> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let stop = Arc::new(Stop::default());
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("pgsnapfs-s3".into())
            .spawn(move || rt.block_on(s.wait()))?;
        Ok(IoThread {
            handle,
            stop,
            thread: Some(thread),
        })
    }

    /// Runs `fut` on the I/O thread and waits for it; `None` if the task died (a panic).
    pub(super) fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().ok()
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        self.stop.set();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
