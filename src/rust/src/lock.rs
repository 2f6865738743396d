//! Cross-process locking (one writer or many readers) and fork detection.
//!
//! A writable open holds an exclusive lock, a read-only open a shared lock,
//! both taken without blocking (`sys::try_lock`): on Unix std's `flock` of
//! the whole file; on Windows, where locks are mandatory and a locked range
//! could not even be read by other processes, `LockFileEx` of one byte far
//! past the data. The lock belongs to the open file description (the
//! handle) and goes away when its last descriptor closes; it is never
//! released explicitly, because an explicit unlock in a forked child (which
//! shares the description) would release the parent's lock.
//!
//! Within one process the heap registry (`heap.rs`) hands out the same open
//! heap for the same path, so this lock only ever arbitrates between
//! processes.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Once;

use crate::error::{Error, Result};

/// Takes the lock on `file` without waiting: exclusive for a writer, shared
/// for a reader. A conflicting lock gives `Error::Locked` naming `path` and,
/// where the system can tell (Linux), the process that holds it.
pub fn lock(file: &File, path: &Path, exclusive: bool) -> Result<()> {
    match crate::sys::try_lock(file, exclusive) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::Locked {
            path: path.to_path_buf(),
            detail: conflict_detail(crate::sys::lock_holder(file).as_ref(), exclusive),
        }),
        Err(e) => Err(Error::io(path, "lock", e)),
    }
}

/// What the lock error says: who holds the file (`holder`, when known) and
/// what to do, for a writer (`exclusive`) or a reader.
fn conflict_detail(holder: Option<&crate::sys::Holder>, exclusive: bool) -> String {
    let who = match holder {
        Some(h) => match &h.command {
            Some(c) => format!("process {} ({c})", h.pid),
            None => format!("process {}", h.pid),
        },
        None => "another process".into(),
    };
    // Without a holder a writer cannot tell whether readers or a writer
    // hold the file.
    let holder_writes = holder.map(|h| h.exclusive);
    let close = "close it there (fmalloc_close(), and remove that session's vectors from \
                 it) or end that R session";
    match (exclusive, holder_writes) {
        (true, Some(false)) => format!(
            "{who} has it open read-only (one writer or many readers); {close}, \
             or open it here with readonly = TRUE to read it too"
        ),
        (true, None) => format!(
            "{who} has it open (one writer or many readers); {close}, \
             or, if it is only reading, open it here with readonly = TRUE"
        ),
        _ => format!(
            "{who} has it open for writing (a heap has one writer or many readers); \
             {close}, then open it again"
        ),
    }
}

/// The process that opened a heap. Allocation state (the allocator's free
/// lists, the reference table) is private to that process: a forked child
/// sees a copy that the parent keeps changing, so it must not allocate.
///
/// `getpid()` is a system call on every use (glibc no longer caches it), too
/// slow for every malloc. A `pthread_atfork` child handler counts forks
/// instead, so the check is one atomic load; the pid remains the fallback
/// if the handler could not be registered.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pid: u32,
    forks: u64,
}

static FORKS: AtomicU64 = AtomicU64::new(0);
static AT_FORK: Once = Once::new();
static AT_FORK_OK: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn in_forked_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

fn register_at_fork() {
    AT_FORK.call_once(|| {
        #[cfg(unix)]
        {
            // SAFETY: registers a handler that only bumps an atomic, which
            // is async-signal-safe and valid in a freshly forked child.
            let rc = unsafe { libc::pthread_atfork(None, None, Some(in_forked_child)) };
            AT_FORK_OK.store(rc == 0, Ordering::Relaxed);
        }
    });
}

impl Owner {
    pub fn current() -> Self {
        register_at_fork();
        Owner {
            pid: std::process::id(),
            forks: FORKS.load(Ordering::Relaxed),
        }
    }

    /// True in a process forked off the owner.
    pub fn is_forked(&self) -> bool {
        if AT_FORK_OK.load(Ordering::Relaxed) {
            FORKS.load(Ordering::Relaxed) != self.forks
        } else {
            std::process::id() != self.pid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("rfm-lock-{}-{name}", std::process::id()));
        std::fs::write(&p, b"x").unwrap();
        p
    }

    #[test]
    fn exclusive_excludes_and_shared_shares() {
        let p = temp("a");
        let a = File::open(&p).unwrap();
        let b = File::open(&p).unwrap();
        lock(&a, &p, false).unwrap();
        lock(&b, &p, false).unwrap();
        let c = File::open(&p).unwrap();
        assert!(matches!(lock(&c, &p, true), Err(Error::Locked { .. })));
        drop((a, b));
        lock(&c, &p, true).unwrap();
        let d = File::open(&p).unwrap();
        let err = lock(&d, &p, false).unwrap_err();
        assert!(err.to_string().contains(&*p.to_string_lossy()));
        std::fs::remove_file(&p).unwrap();
    }

    /// The lock must not keep anyone from reading the bytes (Windows locks
    /// are mandatory: there it locks a byte far past the data).
    #[test]
    fn locked_file_stays_readable() {
        let p = temp("r");
        let a = File::open(&p).unwrap();
        lock(&a, &p, true).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"x");
        drop(a);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn conflicts_say_who_and_what_to_do() {
        let writer = crate::sys::Holder {
            pid: 42,
            command: Some("R".into()),
            exclusive: true,
        };
        let reader = crate::sys::Holder {
            exclusive: false,
            command: None,
            ..writer.clone()
        };
        let m = conflict_detail(Some(&writer), true);
        assert!(
            m.starts_with("process 42 (R) has it open for writing"),
            "{m}"
        );
        assert!(m.contains("fmalloc_close()"), "{m}");
        let m = conflict_detail(Some(&writer), false);
        assert!(
            m.starts_with("process 42 (R) has it open for writing"),
            "{m}"
        );
        let m = conflict_detail(Some(&reader), true);
        assert!(m.starts_with("process 42 has it open read-only"), "{m}");
        assert!(m.contains("readonly = TRUE"), "{m}");
        let m = conflict_detail(None, true);
        assert!(m.starts_with("another process has it open"), "{m}");
    }

    #[test]
    fn owner_is_not_forked_in_itself() {
        let o = Owner::current();
        assert!(!o.is_forked());
        #[cfg(unix)]
        assert!(AT_FORK_OK.load(Ordering::Relaxed));
    }

    // Detection in a real forked child: tests/heap_process.rs (forked in a
    // process of its own, since a fork inherits other tests' locks).
}
