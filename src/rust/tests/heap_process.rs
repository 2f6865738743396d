//! Several processes: one writer or many readers, fork safety, and crash
//! safety under `kill -9`. Child processes are this test binary re-run with
//! `child_entry` and an environment variable saying what to do.

mod heap_util;

#[cfg(unix)]
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
#[cfg(unix)]
use std::process::Stdio;

use heap_util::*;
use rfmalloc::error::Error;
use rfmalloc::heap::Heap;
#[cfg(unix)]
use rfmalloc::prng::Rng;

const MODE: &str = "RFM_CHILD_MODE";
const PATH: &str = "RFM_CHILD_PATH";

fn child(mode: &str, path: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "child_entry",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(MODE, mode)
    .env(PATH, path);
    c
}

/// Runs a child and returns what it printed after "RESULT ".
fn child_result(mode: &str, path: &Path) -> String {
    let out = child(mode, path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| {
            let err = String::from_utf8_lossy(&out.stderr);
            panic!("child printed no result: {text}\n{err}")
        })
        .to_string()
}

fn outcome(r: Result<(Heap, bool), Error>) -> String {
    match r {
        Ok((h, _)) => match h.get("x") {
            Ok(_) => format!("ok {:?}", get_bytes(&h, "x")),
            Err(_) => "ok".into(),
        },
        Err(e) => e.class().to_string(),
    }
}

/// The child side, run only by the tests above in a child process (as an
/// ignored test with `--ignored`): a normal run skips it instead of
/// counting it as passed.
#[test]
#[ignore = "the child side of other tests; run by them"]
fn child_entry() {
    let (Ok(mode), Ok(path)) = (std::env::var(MODE), std::env::var(PATH)) else {
        panic!("child_entry is the child side of other tests: run without their environment");
    };
    let path = Path::new(&path);
    match mode.as_str() {
        "write" => println!("RESULT {}", outcome(Heap::open(path, &opts(1 << 20)))),
        "read" => println!("RESULT {}", outcome(Heap::open(path, &ro()))),
        "crash_loop" => crash_loop(path),
        #[cfg(unix)]
        "fork" => fork_scenario(path),
        #[cfg(unix)]
        "quarantine" => quarantine_scenario(path),
        #[cfg(target_os = "linux")]
        "fsize" => file_size_limit(path),
        _ => panic!("unknown mode {mode}"),
    }
}

#[test]
fn second_writer_process_is_locked_out() {
    let d = TempDir::new("lockw");
    let p = d.file("w.bin");
    let h = open(&p, 1 << 20);
    put_bytes(&h, "x", 3, 7);
    assert_eq!(child_result("write", &p), "fmalloc_locked");
    assert_eq!(child_result("read", &p), "fmalloc_locked");
    drop(h);
    assert_eq!(child_result("write", &p), "ok [7, 7, 7]");
}

#[test]
fn readers_share_and_exclude_writers() {
    let d = TempDir::new("lockr");
    let p = d.file("r.bin");
    put_bytes(&open(&p, 1 << 20), "x", 2, 5);
    // Another test may be spawning a child at this moment: between its fork
    // and exec the child holds a copy of every descriptor, the writer's lock
    // included (seen under heavy load). Wait for that exec.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (r, _) = loop {
        match Heap::open(&p, &ro()) {
            Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(child_result("read", &p), "ok [5, 5]");
    assert_eq!(child_result("write", &p), "fmalloc_locked");
    drop(r);
    assert_eq!(child_result("write", &p), "ok [5, 5]");
}

#[cfg(unix)]
#[test]
fn forked_child_writes_existing_blocks_but_cannot_allocate() {
    // Forked in a process of its own: a fork inherits every descriptor
    // (and so every heap lock) the other test threads have open.
    let d = TempDir::new("fork");
    assert_eq!(child_result("fork", &d.file("f.bin")), "ok");
}

/// Child: forks a grandchild that must be refused allocation but may write
/// existing blocks; prints "ok" when everything held.
#[cfg(unix)]
fn fork_scenario(p: &Path) {
    let h = open(p, 1 << 20);
    let off = put_bytes(&h, "x", 16, 0);
    h.retain(off).unwrap();
    // SAFETY: this process runs only this scenario (one test thread); the
    // grandchild touches only this heap and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let mut code = 0;
        if !matches!(h.malloc(8), Err(Error::Forked { .. })) {
            code |= 1;
        }
        if !matches!(h.put("y", b"", &[], false), Err(Error::Forked { .. })) {
            code |= 2;
        }
        if !matches!(h.remove("x"), Err(Error::Forked { .. })) {
            code |= 4;
        }
        if h.release(off).is_err() {
            code |= 8;
        }
        write(&h, off, b"from the child!!");
        drop(h); // last clone in the grandchild: must not sync or unlock
                 // SAFETY: leaves without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for the process we just forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status));
    assert_eq!(libc::WEXITSTATUS(status), 0, "grandchild saw wrong errors");
    assert_eq!(get_bytes(&h, "x"), b"from the child!!");
    // The grandchild's release was a no-op: our reference still counts.
    h.remove("x").unwrap();
    assert!(h.block_size(off).is_ok());
    h.release(off).unwrap();
    assert!(h.block_size(off).is_err());
    // We still hold the lock.
    assert_eq!(child_result("write", p), "fmalloc_locked");
    h.check_invariants().unwrap();
    println!("RESULT ok");
}

#[cfg(unix)]
#[test]
fn blocks_freed_while_a_forked_child_runs_are_not_reused() {
    let d = TempDir::new("quar");
    assert_eq!(child_result("quarantine", &d.file("q.bin")), "ok");
}

/// Child: a grandchild holds block A; the parent frees A and allocates
/// while the grandchild runs (A must not come back), then the grandchild
/// writes A late: the parent's new block keeps its bytes. Once the
/// grandchild is gone, A is free again.
#[cfg(unix)]
fn quarantine_scenario(p: &Path) {
    let h = open(p, 1 << 20);
    let base = h.info().used_bytes;
    let a = h.malloc(4096).unwrap();
    let mut go = [0i32; 2];
    // SAFETY: a pipe for this scenario; `go` has room for both ends.
    assert_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0);
    // SAFETY: this process runs only this scenario (one test thread); the
    // grandchild only blocks in read, writes mapped bytes and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let mut b = 0u8;
        // SAFETY: reads one byte from the pipe made above.
        unsafe {
            libc::close(go[1]);
            libc::read(go[0], (&mut b as *mut u8).cast(), 1);
        }
        write(&h, a, &[0xEE; 64]);
        // SAFETY: leaves without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    h.release(a).unwrap();
    let mut fresh = Vec::new();
    for _ in 0..8 {
        let b = h.malloc(4096).unwrap();
        assert_ne!(b, a, "a block a forked child holds was reused");
        write(&h, b, &[0x11; 64]);
        fresh.push(b);
    }
    h.check_invariants().unwrap();
    // SAFETY: releases the grandchild and waits for it.
    unsafe {
        assert_eq!(libc::write(go[1], [1u8].as_ptr().cast(), 1), 1);
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
    for &b in &fresh {
        assert_eq!(read(&h, b, 64), vec![0x11; 64]);
    }
    // The grandchild is gone: A is freed at the next allocation.
    let c = h.malloc(4096).unwrap();
    h.release(c).unwrap();
    for b in fresh {
        h.release(b).unwrap();
    }
    h.check_invariants().unwrap();
    assert_eq!(h.info().used_bytes, base, "quarantined block never freed");
    println!("RESULT ok");
}

/// Child: commits forever (put / overwrite / remove / rename) until killed.
/// Entry "k{n}" always holds meta = i (8 bytes) and data = (i % 251) repeated
/// (i % 13 + 1) * 1000 times, for the `i` that wrote it.
fn crash_loop(path: &Path) {
    // A process the test binary's other threads spawn inherits their
    // descriptors (and so heap locks) until it execs: retry a moment.
    let mut tries = 0;
    let h = loop {
        match Heap::open(path, &opts(1 << 20)) {
            Err(Error::Locked { .. }) if tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => break r.unwrap().0,
        }
    };
    let mut i: u64 = h.list().len() as u64 * 1000;
    let mut ready = false;
    loop {
        i += 1;
        let name = format!("k{}", i % 20);
        match i % 7 {
            5 => {
                let _ = h.remove(&format!("k{}", (i * 7) % 20));
            }
            6 => {
                let _ = h.rename(&format!("k{}", (i * 3) % 20), &name, true);
            }
            _ => {
                let len = (i % 13 + 1) * 1000;
                let off = h.malloc(len).unwrap();
                write(&h, off, &vec![(i % 251) as u8; len as usize]);
                h.put(&name, &i.to_le_bytes(), &[raw(off, len)], true)
                    .unwrap();
                h.release(off).unwrap();
                // Leak an unnamed block now and then.
                if i.is_multiple_of(5) {
                    let _ = h.malloc(5000).unwrap();
                }
            }
        }
        if !ready && i.is_multiple_of(7) {
            println!("READY");
            ready = true;
        }
    }
}

#[cfg(unix)]
fn check_crash_state(p: &Path) -> usize {
    let h = open(p, 1 << 20);
    h.check_invariants().unwrap();
    let entries = h.list();
    for e in &entries {
        let i = u64::from_le_bytes(e.meta.as_slice().try_into().unwrap());
        let want = vec![(i % 251) as u8; ((i % 13 + 1) * 1000) as usize];
        assert_eq!(get_bytes(&h, &e.name), want, "entry {} torn", e.name);
    }
    // Only named data survive: the leaked blocks were reclaimed.
    let named: u64 = entries.len() as u64;
    assert!(h.info().used_bytes < (named + 2) * 20_000 + 4096);
    entries.len()
}

#[cfg(unix)]
#[test]
fn kill_9_during_commits_leaves_old_or_new_state() {
    let d = TempDir::new("kill");
    let p = d.file("k.bin");
    let mut rng = Rng::new(42);
    for round in 0..8 {
        let mut c = child("crash_loop", &p)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(c.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("READY") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "child died");
        }
        std::thread::sleep(std::time::Duration::from_millis(5 + rng.below(150)));
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
        let n = check_crash_state(&p);
        println!("round {round}: {n} entries intact after kill -9");
    }
}

/// Child: with the file size limited to the current 8 MiB (`ulimit -f`),
/// the heap cannot grow: `Error::Full`, no SIGXFSZ (whose default action
/// kills the process, as it kills R), nothing leaked, and the heap stays
/// usable. A new heap gets a default size that fits the limit, and an
/// explicit size past it is `Error::Full`. (The limit does not apply inside
/// the file, so this does not exercise `posix_fallocate` failing on a full
/// disk: see heap_disk.rs.)
#[cfg(target_os = "linux")]
fn file_size_limit(path: &Path) {
    let limit = std::fs::metadata(path).unwrap().len();
    // SAFETY: plain libc call in a single-purpose child process.
    unsafe {
        let lim = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let h = open(path, 0);
    let used = h.info().used_bytes;
    let inside = h.malloc(5 << 20).unwrap();
    let no_growth = matches!(h.malloc(64 << 20), Err(Error::Full { .. }));
    let file_len = std::fs::metadata(path).unwrap().len();
    h.check_invariants().unwrap();
    h.release(inside).unwrap();
    let leaked = h.info().used_bytes != used;
    put_bytes(&h, "after", 100, 4);
    let other = path.with_extension("other");
    let (small, _) = Heap::open(&other, &default_size()).unwrap();
    let default_fits = small.info().file_bytes <= limit;
    small.malloc(1 << 20).unwrap();
    drop(small);
    let third = path.with_extension("third");
    let refused = matches!(Heap::open(&third, &opts(64 << 20)), Err(Error::Full { .. }));
    println!(
        "RESULT no_growth={no_growth} len={file_len} leaked={leaked} \
         default_fits={default_fits} refused={refused}"
    );
}

/// Options of a writable open with the default size.
#[cfg(target_os = "linux")]
fn default_size() -> rfmalloc::heap::OpenOptions {
    rfmalloc::heap::OpenOptions {
        readonly: false,
        initial_size: None,
        ..Default::default()
    }
}

#[cfg(target_os = "linux")]
#[test]
fn heap_that_cannot_grow_reports_full() {
    let d = TempDir::new("full");
    let p = d.file("f.bin");
    drop(open(&p, 8 << 20));
    assert_eq!(
        child_result("fsize", &p),
        format!(
            "no_growth=true len={} leaked=false default_fits=true refused=true",
            8 << 20
        )
    );
    let h = open(&p, 0);
    assert_eq!(get_bytes(&h, "after"), vec![4; 100]);
    h.check_invariants().unwrap();
}
