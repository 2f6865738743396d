//! A full disk: every failure to get disk space is `Error::Full`, never
//! SIGBUS, and the heap stays usable. The tests mount a small tmpfs, so they
//! run as root on Linux only and are skipped (with a note) elsewhere. Each
//! scenario runs in a child process (this binary re-run with
//! `child_entry`), so that a SIGBUS fails the test while the parent still
//! unmounts.
//!
//! tmpfs is the harshest file system here: a write *or a read* through a
//! mapping of a hole of a full tmpfs raises SIGBUS.

#![cfg(target_os = "linux")]

mod heap_util;

use std::path::{Path, PathBuf};
use std::process::Command;

const SCENARIO: &str = "RFM_DISK_SCENARIO";
const DIR: &str = "RFM_DISK_DIR";

use heap_util::*;
use rfmalloc::error::Error;
use rfmalloc::heap::Heap;

/// A small file system (a tmpfs, or an ext4 image) mounted on a fresh
/// directory, unmounted (and the directory removed) on drop, also when the
/// test fails.
struct SmallFs {
    dir: TempDir,
}

impl SmallFs {
    /// `None` (the test is skipped) unless running as root on a system that
    /// lets us mount.
    fn mount(mib: u64) -> Option<SmallFs> {
        // SAFETY: plain syscall without arguments.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = TempDir::new("tmpfs");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs");
            return None;
        }
        Some(SmallFs { dir })
    }

    /// A loop-mounted ext4 image of `mib` MiB instead (`None`, skipped,
    /// without root or mkfs.ext4). The image lives inside the directory's
    /// parent and goes with it; `umount` detaches the loop device.
    fn mount_ext4(mib: u64) -> Option<SmallFs> {
        // SAFETY: plain syscall without arguments.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting an ext4 image needs root");
            return None;
        }
        let dir = TempDir::new("ext4");
        let image = dir.0.with_extension("img");
        let ok = std::fs::File::create(&image)
            .and_then(|f| f.set_len(mib << 20))
            .is_ok()
            && Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(&image)
                .status()
                .is_ok_and(|s| s.success())
            && Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&dir.0)
                .status()
                .is_ok_and(|s| s.success());
        let _ = std::fs::remove_file(&image); // the mount keeps it open
        if !ok {
            eprintln!("skipped: cannot make or mount an ext4 image");
            return None;
        }
        Some(SmallFs { dir })
    }

    /// Runs `scenario` in a child process on this file system; panics with
    /// its output unless it ends normally.
    fn run(&self, scenario: &str) {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_entry",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SCENARIO, scenario)
            .env(DIR, &self.dir.0)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("SCENARIO DONE"),
            "{scenario}: {:?}\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The child side, run only by the tests above in a child process (as an
/// ignored test with `--ignored`): a normal run skips it instead of
/// counting it as passed.
#[test]
#[ignore = "the child side of other tests; run by them"]
fn child_entry() {
    let (Ok(scenario), Ok(dir)) = (std::env::var(SCENARIO), std::env::var(DIR)) else {
        panic!("child_entry is the child side of other tests: run without their environment");
    };
    let dir = Path::new(&dir);
    match scenario.as_str() {
        "full" => full_disk(dir),
        "grow_after_free" => grow_after_free(dir),
        "sparse" => sparse_copy_on_full_disk(dir),
        _ => panic!("unknown scenario {scenario}"),
    }
    println!("SCENARIO DONE");
}

/// Writes a file until the file system at `dir` is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let buf = vec![1u8; 1 << 16];
    while f.write_all(&buf).is_ok() {}
    p
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy (a mapping still alive after a failed assertion): detach.
            let _ = Command::new("umount").arg("-l").arg(&self.dir.0).status();
        }
    }
}

/// malloc + writing every byte, until the heap reports `Error::Full`;
/// returns the blocks handed out.
fn fill_heap(h: &Heap, size: u64) -> Vec<u64> {
    let mut blocks = Vec::new();
    loop {
        match h.malloc(size) {
            Ok(off) => {
                write(h, off, &vec![7; size as usize]);
                blocks.push(off);
            }
            Err(Error::Full { detail, .. }) => {
                eprintln!("full after {}: {detail}", blocks.len());
                return blocks;
            }
            Err(e) => panic!("malloc({size}): {e}"),
        }
        assert!(blocks.len() < 100_000, "the disk never filled");
    }
}

#[test]
fn full_tmpfs_gives_full_and_the_heap_stays_usable() {
    if let Some(fs) = SmallFs::mount(8) {
        fs.run("full");
    }
}

fn full_disk(dir: &Path) {
    let p = dir.join("h.bin");
    // A sparse heap much larger than the file system.
    let h = open(&p, 64 << 20);
    put_bytes(&h, "keep", 5000, 9);
    let big = fill_heap(&h, 256 << 10);
    assert!(!big.is_empty());
    // Small blocks split free space whose pages were never reserved: their
    // headers cannot be written to the file any more.
    let small = fill_heap(&h, 100);
    h.check_invariants().unwrap();
    // A commit on a full disk fails cleanly or succeeds; the old name stays.
    let _ = h.put("extra", &[1], &[raw(big[0], 10)], false);
    assert_eq!(get_bytes(&h, "keep"), vec![9; 5000]);
    for off in big.iter().chain(&small).skip(1) {
        h.release(*off).unwrap();
    }
    // Freed space is reused, a commit goes through.
    let again = fill_heap(&h, 256 << 10);
    assert!(!again.is_empty());
    for off in again {
        h.release(off).unwrap();
    }
    put_bytes(&h, "later", 300, 5);
    h.check_invariants().unwrap();
    drop(h);
    let h = open(&p, 0);
    assert_eq!(get_bytes(&h, "keep"), vec![9; 5000]);
    assert_eq!(get_bytes(&h, "later"), vec![5; 300]);
    h.check_invariants().unwrap();
}

/// Heap with a data object and an all-zero one, copied with `cp
/// --sparse=always` (the zeros become holes) onto a file system that is
/// then filled.
fn sparse_copy(dir: &Path) -> (PathBuf, u64) {
    let orig = dir.join("orig.bin");
    let h = open(&orig, 16 << 20);
    put_bytes(&h, "data", 1 << 20, 3);
    let zeros = put_bytes(&h, "zeros", 4 << 20, 0);
    drop(h);
    let copy = dir.join("copy.bin");
    let ok = Command::new("cp")
        .arg("--sparse=always")
        .arg(&orig)
        .arg(&copy)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "cp --sparse=always failed");
    std::fs::remove_file(&orig).unwrap();
    (copy, zeros)
}

fn allocated_bytes(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().blocks() * 512
}

#[test]
fn sparse_copy_on_a_full_tmpfs_opens_and_refuses_cleanly() {
    if let Some(fs) = SmallFs::mount(24) {
        fs.run("sparse");
    }
}

fn sparse_copy_on_full_disk(dir: &Path) {
    let (copy, zeros) = sparse_copy(dir);
    assert!(allocated_bytes(&copy) < 8 << 20, "the copy is not sparse");
    let filler = fill(dir);
    // Opening for writing rebuilds the allocator's headers, which lands on
    // holes: no SIGBUS, the open works.
    let h = open(&copy, 0);
    assert_eq!(get_bytes(&h, "data"), vec![3; 1 << 20]);
    // A vector over the sparse object could write in place: refused.
    match h.retain(zeros) {
        Err(e @ Error::Full { .. }) => assert_eq!(e.class(), "fmalloc_full"),
        other => panic!("retain of a sparse named block: {other:?}"),
    }
    let blocks = fill_heap(&h, 64 << 10);
    let _ = fill_heap(&h, 64);
    h.check_invariants().unwrap();
    for off in blocks {
        h.release(off).unwrap();
    }
    // With space again, the same object can be written.
    std::fs::remove_file(filler).unwrap();
    h.retain(zeros).unwrap();
    write(&h, zeros, &[8; 4096]);
    h.release(zeros).unwrap();
    put_bytes(&h, "after", 100, 4);
    h.check_invariants().unwrap();
    drop(h);
    let h = open(&copy, 0);
    assert_eq!(get_bytes(&h, "data"), vec![3; 1 << 20]);
    assert_eq!(get_bytes(&h, "after"), vec![4; 100]);
    assert_eq!(read(&h, zeros, 4096), vec![8; 4096]);
}

#[test]
fn growing_after_freeing_on_a_full_disk_gives_full() {
    for fs in [SmallFs::mount(40), SmallFs::mount_ext4(40)]
        .into_iter()
        .flatten()
    {
        fs.run("grow_after_free");
    }
}

/// Fill the heap until `Full`, free it all, then allocate ever larger
/// blocks: the heap grows into the tail of a 2 MiB unit that was reserved
/// only up to the old end of the file (found by an attacker on ext4:
/// SIGBUS writing the new arena's first header).
fn grow_after_free(dir: &Path) {
    let h = open(&dir.join("g.bin"), 4 << 20);
    let mut held = Vec::new();
    loop {
        match h.malloc(8_000_080) {
            Ok(o) => held.push(o),
            Err(Error::Full { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    for o in held {
        h.release(o).unwrap();
    }
    let mut cur = h.malloc(16_064).unwrap();
    let mut full = false;
    for j in 1..400u64 {
        match h.malloc(16_064 + j * 400_000) {
            Ok(o) => {
                h.release(cur).unwrap();
                cur = o;
            }
            Err(Error::Full { .. }) => {
                full = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(full, "the disk never filled");
    // Still usable.
    put_bytes(&h, "after", 1000, 9);
    assert_eq!(get_bytes(&h, "after"), vec![9; 1000]);
}
