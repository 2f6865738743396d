//! Who holds the lock on a file, where the system can tell: Linux lists
//! every file lock, with the process that took it, in `/proc/locks`. For the
//! lock error's message only ("process 1234 (R) has it open for writing");
//! elsewhere the answer is `None` and the message says "another process".

use std::fs::File;

/// A process holding a lock on a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub pid: u32,
    /// The process's command name (`/proc/<pid>/comm`), if readable.
    pub command: Option<String>,
    /// An exclusive (write) lock, as opposed to a shared (read) one.
    pub exclusive: bool,
}

/// The first process other than this one that holds a lock on `file`.
pub(crate) fn lock_holder(file: &File) -> Option<Holder> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().ok()?;
        let dev = m.dev();
        let (major, minor) = (u64::from(libc::major(dev)), u64::from(libc::minor(dev)));
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        let (pid, exclusive) = holders_in(&locks, major, minor, m.ino())
            .into_iter()
            .find(|&(pid, _)| pid != std::process::id())?;
        let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty());
        Some(Holder {
            pid,
            command,
            exclusive,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        None
    }
}

/// The (pid, exclusive) of every granted lock in `/proc/locks` text on the
/// file with device `major:minor` and inode `ino`. A line reads
/// `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF` (device numbers in
/// hex, inode in decimal); waiters (`1: -> FLOCK ...`) are skipped, and so
/// is anything that does not parse.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn holders_in(locks: &str, major: u64, minor: u64, ino: u64) -> Vec<(u32, bool)> {
    let mut out = Vec::new();
    for line in locks.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // id, kind, advisory/mandatory, access, pid, dev:ino, start, end
        if f.len() < 6 || f[1] == "->" {
            continue;
        }
        let exclusive = match f[3] {
            "WRITE" => true,
            "READ" => false,
            _ => continue,
        };
        let Ok(pid) = f[4].parse::<u32>() else {
            continue;
        };
        let mut id = f[5].split(':');
        let (Some(ma), Some(mi), Some(i), None) = (id.next(), id.next(), id.next(), id.next())
        else {
            continue;
        };
        let same = u64::from_str_radix(ma, 16) == Ok(major)
            && u64::from_str_radix(mi, 16) == Ok(minor)
            && i.parse::<u64>() == Ok(ino);
        if same && pid != 0 {
            out.push((pid, exclusive));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_are_matched_by_device_and_inode() {
        let text = "\
1: POSIX  ADVISORY  WRITE 111 00:2f:99 0 EOF
2: FLOCK  ADVISORY  WRITE 222 fd:01:1234 0 EOF
2: -> FLOCK  ADVISORY  WRITE 333 fd:01:1234 0 EOF
3: FLOCK  ADVISORY  READ 444 fd:01:1234 0 EOF
4: OFDLCK ADVISORY  READ -1 fd:01:1234 0 EOF
5: FLOCK  ADVISORY  READ 555 fd:01:12345 0 EOF
garbage
";
        assert_eq!(
            holders_in(text, 0xfd, 1, 1234),
            vec![(222, true), (444, false)]
        );
        assert_eq!(holders_in(text, 0, 0x2f, 99), vec![(111, true)]);
        assert!(holders_in(text, 0xfd, 2, 1234).is_empty());
    }

    /// A lock taken through another open file description of this process
    /// shows up in /proc/locks on Linux (it is skipped only because it is
    /// this process: `lock_holder` looks for other processes).
    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_lock_is_listed() {
        use std::os::unix::fs::MetadataExt;
        let p = std::env::temp_dir().join(format!("rfm-holder-{}", std::process::id()));
        std::fs::write(&p, b"x").unwrap();
        let f = File::open(&p).unwrap();
        f.try_lock().unwrap();
        let m = f.metadata().unwrap();
        if let Ok(locks) = std::fs::read_to_string("/proc/locks") {
            let got = holders_in(
                &locks,
                u64::from(libc::major(m.dev())),
                u64::from(libc::minor(m.dev())),
                m.ino(),
            );
            assert!(got.contains(&(std::process::id(), true)), "{got:?}");
        }
        assert_eq!(lock_holder(&f), None);
        drop(f);
        std::fs::remove_file(&p).unwrap();
    }
}
