//! argon2id for account and link passwords, with bounded memory.
//!
//! Each check needs its parameter `m` in working memory: 19 MiB with the
//! defaults (RFC 9106's second recommendation). Allocated by argon2 itself
//! on whichever blocking thread ran the check, glibc kept every freed block:
//! after the first free of an mmap'd block its dynamic mmap threshold rises
//! to that size, so later blocks come from the thread's arena, whose trim
//! threshold is twice that, and each arena kept its 19 MiB for good. Each
//! thread of tokio's blocking pool got its own arena (up to 8 per core), so
//! RSS grew ~19 MiB per thread that ever checked a password and stayed
//! (issue 13; bench/logins.sh measures it).
//!
//! Here checks run on a [`Pool`]: at most `workers` at once (so a burst
//! needs at most `workers` × 19 MiB), each in a [`Memory`] mapped for it
//! alone outside the allocator (memmap2). A finished check hands its memory
//! to the next one waiting; when none waits, the mapping goes back to the
//! kernel, so idle RSS does not depend on how many logins came before.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use memmap2::MmapMut;
use tokio::sync::Semaphore;

/// Checks at once in the process-wide pool. Two checks take ~40 MiB and
/// verify ~60 passwords a second on this project's 2-core machines, far more
/// than the apps of a county log in; more would only raise the peak.
const MAX_WORKERS: usize = 2;

/// Checks that may wait for a worker before new ones are refused at once
/// (a few seconds of work): a flood gets a quick "try later" instead of
/// piling up requests whose clients have long given up.
const MAX_WAITING: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("too many password checks are waiting")]
    Busy,
    #[error("a password check failed to run: {0}")]
    Failed(String),
}

/// The process-wide pool for SMTP logins, link passwords and sealing.
pub fn global() -> &'static Arc<Pool> {
    static POOL: LazyLock<Arc<Pool>> = LazyLock::new(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Pool::new(cores.clamp(1, MAX_WORKERS), MAX_WAITING)
    });
    &POOL
}

/// argon2's working memory, mapped on first use and unmapped on drop.
#[derive(Default)]
pub struct Memory {
    map: Option<MmapMut>,
}

impl Memory {
    /// `n` blocks of zeroed or previously used memory (argon2 overwrites
    /// every block before reading it).
    fn blocks(&mut self, n: usize) -> Result<&mut [Block], argon2::Error> {
        let len = n
            .checked_mul(Block::SIZE)
            .ok_or(argon2::Error::MemoryTooMuch)?;
        if self.map.as_ref().is_none_or(|m| m.len() < len) {
            // Drop the old mapping first: never two at once.
            self.map = None;
            self.map = Some(MmapMut::map_anon(len).map_err(|_| argon2::Error::OutOfMemory)?);
        }
        let map = self.map.as_mut().ok_or(argon2::Error::OutOfMemory)?;
        // SAFETY: the mapping is page-aligned (so aligned for `Block`, 64
        // bytes), at least `n` blocks long and initialised (zero pages from
        // the kernel, or blocks a previous check wrote). `Block` is an array
        // of `u64`, valid for any bit pattern. The slice borrows `map`
        // mutably, so it neither outlives nor aliases the mapping.
        Ok(unsafe { std::slice::from_raw_parts_mut(map.as_mut_ptr().cast::<Block>(), n) })
    }

    /// argon2's `hash_password_into` in this memory.
    pub fn hash_into(
        &mut self,
        algorithm: Algorithm,
        version: Version,
        params: Params,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        let blocks = self.blocks(params.block_count())?;
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password, salt, out, blocks)
    }

    /// argon2id with the default parameters (as for new account passwords).
    pub fn hash_default(
        &mut self,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        let (algorithm, version) = (Algorithm::Argon2id, Version::V0x13);
        self.hash_into(algorithm, version, Params::DEFAULT, password, salt, out)
    }

    /// Does `password` match the PHC string `hash` (any argon2 variant and
    /// parameters)? The comparison is constant-time.
    pub fn verify(&mut self, hash: &str, password: &[u8]) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
            return false;
        };
        let version = parsed
            .version
            .map_or(Ok(Version::default()), Version::try_from);
        let (Ok(version), Ok(params)) = (version, Params::try_from(&parsed)) else {
            return false;
        };
        let mut out = vec![0u8; expected.len()];
        if self
            .hash_into(algorithm, version, params, password, salt, &mut out)
            .is_err()
        {
            return false;
        }
        argon2::password_hash::phc::Output::new(&out).is_ok_and(|computed| computed == *expected)
    }

    /// Costs what checking a password costs, for a name that has no
    /// password, so the time taken does not tell which names exist.
    pub fn waste(&mut self, password: &[u8]) {
        let mut out = [0u8; 32];
        let _ = self.hash_default(password, b"schleuse-no-such-account", &mut out);
    }
}

/// A bounded set of argon2 checks in flight; see the module docs.
pub struct Pool {
    workers: Arc<Semaphore>,
    /// Calls between entry and the end of their check.
    active: AtomicUsize,
    max_active: usize,
    /// Memory of finished checks for the next one; emptied when none is
    /// active.
    spare: Mutex<Vec<Memory>>,
    /// The most checks that ever ran at once (for tests and the bench).
    peak: AtomicUsize,
    running: AtomicUsize,
}

impl Pool {
    pub fn new(workers: usize, max_waiting: usize) -> Arc<Pool> {
        let workers = workers.max(1);
        Arc::new(Pool {
            workers: Arc::new(Semaphore::new(workers)),
            active: AtomicUsize::new(0),
            max_active: workers.saturating_add(max_waiting),
            spare: Mutex::new(Vec::new()),
            peak: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
        })
    }

    /// Runs `f` on a blocking thread once a worker is free, with memory to
    /// use for argon2. A check that was started runs to its end even when
    /// the caller goes away, and holds its worker until then.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, PoolError>
    where
        F: FnOnce(&mut Memory) -> T + Send + 'static,
        T: Send + 'static,
    {
        if self.active.fetch_add(1, Ordering::SeqCst) >= self.max_active {
            self.active.fetch_sub(1, Ordering::SeqCst);
            return Err(PoolError::Busy);
        }
        let active = Active(Arc::clone(self));
        let permit = Arc::clone(&self.workers)
            .acquire_owned()
            .await
            .map_err(|e| PoolError::Failed(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let pool = &active.0;
            let running = pool.running.fetch_add(1, Ordering::SeqCst) + 1;
            pool.peak.fetch_max(running, Ordering::SeqCst);
            let mut memory = pool.spare().pop().unwrap_or_default();
            let out = f(&mut memory);
            pool.spare().push(memory);
            pool.running.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
            drop(active);
            out
        })
        .await
        .map_err(|e| PoolError::Failed(e.to_string()))
    }

    fn spare(&self) -> MutexGuard<'_, Vec<Memory>> {
        self.spare.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most checks that ran at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Mappings kept for the next check (none once the pool is idle).
    pub fn spare_memories(&self) -> usize {
        self.spare().len()
    }
}

/// Counts one call as active; the last to leave unmaps the spare memory.
struct Active(Arc<Pool>);

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.spare().clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use argon2::password_hash::PasswordHasher;

    use super::*;

    /// Waits (bounded) until `pool` counts `n` active calls.
    async fn until_active(pool: &Pool, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while pool.active.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "calls never became active");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn address(memory: &mut Memory) -> usize {
        memory.blocks(64).expect("memory").as_ptr() as usize
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_n_checks_run_and_idle_memory_is_unmapped() {
        let pool = Pool::new(2, 100);
        let jobs: Vec<_> = (0..12)
            .map(|_| {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move {
                    pool.run(|memory| {
                        address(memory);
                        std::thread::sleep(Duration::from_millis(20));
                    })
                    .await
                })
            })
            .collect();
        for job in jobs {
            job.await.expect("task").expect("check");
        }
        assert!((1..=2).contains(&pool.peak()), "peak {}", pool.peak());
        assert_eq!(pool.spare_memories(), 0, "memory kept after the burst");
        assert_eq!(pool.active.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_checks_reuse_memory_and_the_queue_is_bounded() {
        let pool = Pool::new(1, 2);
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let first = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                pool.run(move |memory| {
                    let at = address(memory);
                    let _ = hold.recv_timeout(Duration::from_secs(30));
                    at
                })
                .await
            })
        };
        until_active(&pool, 1).await;
        let queued: Vec<_> = (0..2)
            .map(|_| {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move { pool.run(address).await })
            })
            .collect();
        until_active(&pool, 3).await;
        // One running, two waiting: the next is refused at once.
        assert!(matches!(pool.run(address).await, Err(PoolError::Busy)));
        release.send(()).expect("release");
        let at = first.await.expect("task").expect("check");
        for job in queued {
            assert_eq!(job.await.expect("task").expect("check"), at, "not reused");
        }
        assert_eq!(pool.peak(), 1);
        assert_eq!(pool.spare_memories(), 0);
    }

    #[test]
    fn verify_agrees_with_the_argon2_crate() {
        let mut memory = Memory::default();
        let default = crate::accounts::hash_password("geheim").expect("hash");
        assert!(memory.verify(&default, b"geheim"));
        assert!(!memory.verify(&default, b"Geheim"));
        assert!(!memory.verify("plain", b"geheim"));
        assert!(!memory.verify("$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ", b"geheim"));
        // Other variants and parameters than ours, as a hand-made file may
        // hold (more memory than the last check: the mapping grows).
        let params = Params::new(24 * 1024, 1, 2, Some(24)).expect("params");
        let other = Argon2::new(Algorithm::Argon2i, Version::V0x10, params)
            .hash_password(b"geheim")
            .expect("hash")
            .to_string();
        assert!(memory.verify(&other, b"geheim"), "{other}");
        assert!(!memory.verify(&other, b"geheim2"));
    }
}
