//! The one rule for CPU-bound work on a message: small inputs are handled
//! where they are, large ones on tokio's blocking pool, so one large message
//! does not stall the other sessions on the same async worker.

/// Above this many bytes the work goes to the blocking pool. Below it the
/// hand-over would cost more than the work (a MIME scan, a PII scan or a
/// DKIM body hash of 128 KiB takes well under a millisecond).
pub const INLINE_MAX: usize = 128 * 1024;

/// Runs `work` inline when `len` is at most [`INLINE_MAX`], else on the
/// blocking pool. `None`: the pool dropped the job (the runtime is shutting
/// down, or the job panicked); the caller decides what that means.
pub async fn run<T, F>(len: usize, work: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if len <= INLINE_MAX {
        return Some(work());
    }
    tokio::task::spawn_blocking(work).await.ok()
}
