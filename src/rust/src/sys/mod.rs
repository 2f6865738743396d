//! Operating-system specifics that std does not offer: one portable function
//! per need, implemented per platform here. Win32 declarations live in
//! `windows.rs`; the Unix calls come from `libc`. (The disk reservation's
//! hole walk stays in `map/`, next to the reasoning that makes it safe.)

use std::fs::File;
use std::io;
use std::path::PathBuf;

#[cfg(windows)]
mod windows;

mod holder;
pub(crate) use holder::{lock_holder, Holder};

/// Byte offset of the lock on Windows (see `lock.rs`): far past any heap
/// (`alloc::MAX_OFFSET`) and still a positive `i64`, which is what file
/// servers that map Windows locks onto POSIX ones can represent.
#[cfg(windows)]
const LOCK_OFFSET: u64 = i64::MAX as u64 - 1;
#[cfg(windows)]
const _: () = assert!(LOCK_OFFSET > crate::alloc::MAX_OFFSET);

/// Takes the heap lock on `file` without waiting; `Ok(false)` when another
/// process holds a conflicting one. Unix: `flock` of the whole file (std);
/// advisory, so readers of the bytes are never stopped. Windows: locks are
/// mandatory (a locked range cannot be read through other handles), so one
/// byte far past the data is locked instead, which the file's readers never
/// touch.
pub(crate) fn try_lock(file: &File, exclusive: bool) -> io::Result<bool> {
    #[cfg(windows)]
    {
        windows::try_lock_byte(file, LOCK_OFFSET, exclusive)
    }
    #[cfg(not(windows))]
    {
        let r = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match r {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Makes a new, still empty `file` sparse where that is not the default
/// (Windows/NTFS); elsewhere files are sparse already. A file system that
/// cannot do it (FAT) gives an error, which callers may ignore: the file
/// then simply takes its full size on disk.
pub(crate) fn make_sparse(file: &File) -> io::Result<()> {
    #[cfg(windows)]
    {
        windows::set_sparse(file)
    }
    #[cfg(not(windows))]
    {
        let _ = file;
        Ok(())
    }
}

/// Fills `buf` with random bytes from the operating system; false if it
/// could not (callers fall back to something weaker).
pub(crate) fn fill_random(buf: &mut [u8]) -> bool {
    #[cfg(windows)]
    {
        windows::fill_random(buf)
    }
    #[cfg(not(windows))]
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom").is_ok_and(|mut f| f.read_exact(buf).is_ok())
    }
}

/// What identifies a file while it exists (the same file under any path,
/// hard link or symbolic link has one identity; a new file created at the
/// path of a deleted one has another, as long as the deleted one is still
/// open somewhere). Unix: device and inode number. Windows: the volume
/// serial number and the 64-bit file index of `GetFileInformationByHandle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    volume: u64,
    index: u64,
}

/// The identity of the file at `path` (following symbolic links).
pub(crate) fn file_id(path: &std::path::Path) -> io::Result<FileId> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(FileId {
            volume: m.dev(),
            index: m.ino(),
        })
    }
    #[cfg(windows)]
    {
        // Read access is not needed to ask for the identity, but the heap
        // files are opened for reading anyway.
        let file = File::open(path)?;
        let (volume, index) = windows::file_id(&file)?;
        Ok(FileId { volume, index })
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = path;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Makes the file's data durable across power loss. macOS: `fsync` only
/// hands the data to the drive, whose cache may lose it; `F_FULLFSYNC`
/// flushes that cache too. A file system that does not support it gets a
/// plain `fsync`. Elsewhere `File::sync_all`.
pub(crate) fn sync_file(file: &File) -> io::Result<()> {
    #[cfg(target_vendor = "apple")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: plain fcntl on a descriptor we own; no memory is passed.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_FULLFSYNC) } != -1 {
            return Ok(());
        }
        loop {
            // SAFETY: as above.
            if unsafe { libc::fsync(file.as_raw_fd()) } == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    #[cfg(not(target_vendor = "apple"))]
    {
        file.sync_all()
    }
}

/// The first hole (range without disk blocks, reading as zeros) of
/// `[at, end)` of `file` as `(start, end)`; `Ok(None)` if there is none.
/// `Err` with `ErrorKind::Unsupported` where the file system or the system
/// cannot say. Unix: `lseek(SEEK_HOLE/SEEK_DATA)`; Windows:
/// `FSCTL_QUERY_ALLOCATED_RANGES`. (Linux reserves with `posix_fallocate`
/// and uses this to bring reserved holes into memory: `Mapping::prefault`.)
pub(crate) fn next_hole(file: &File, at: u64, end: u64) -> io::Result<Option<(u64, u64)>> {
    let unsupported = |e: io::Error| io::Error::new(io::ErrorKind::Unsupported, e);
    #[cfg(windows)]
    {
        windows::next_hole(file, at, end).map_err(unsupported)
    }
    #[cfg(any(
        target_os = "linux",
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "dragonfly",
        target_os = "illumos",
        target_os = "solaris"
    ))]
    {
        use std::os::fd::AsRawFd;
        let seek = |from: u64, whence: libc::c_int| -> io::Result<u64> {
            let from = libc::off_t::try_from(from).map_err(io::Error::other)?;
            // SAFETY: plain syscall on a descriptor we own; it moves the
            // file position only, which nothing relies on (all file I/O
            // on heap files is positional).
            let r = unsafe { libc::lseek(file.as_raw_fd(), from, whence) };
            u64::try_from(r).map_err(|_| io::Error::last_os_error())
        };
        if at >= end {
            return Ok(None);
        }
        let hole = seek(at, libc::SEEK_HOLE).map_err(unsupported)?;
        if hole >= end {
            return Ok(None);
        }
        // ENXIO (no data after the hole): the hole runs to the end.
        match seek(hole, libc::SEEK_DATA) {
            Ok(d) => Ok(Some((hole, d.min(end)))),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(Some((hole, end))),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(any(
        windows,
        target_os = "linux",
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "dragonfly",
        target_os = "illumos",
        target_os = "solaris"
    )))]
    {
        let _ = (file, at, end);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Gives `[off, off + len)` of `file` back to the file system: the range
/// reads as zeros afterwards and takes no disk space; the file's size is
/// unchanged. `Ok(false)` where the system or the file system cannot (the
/// bytes then stay as they were). Linux: `fallocate(PUNCH_HOLE)`; macOS:
/// `fcntl(F_PUNCHHOLE)`; Windows: `FSCTL_SET_ZERO_DATA` (the file is sparse,
/// see [`make_sparse`]).
pub(crate) fn punch_hole(file: &File, off: u64, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    #[cfg(unix)]
    let not_supported = |e: io::Error| match e.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => Ok(false),
        _ => Err(e),
    };
    #[cfg(windows)]
    {
        windows::zero_data(file, off, len).map(|()| true)
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(o), Ok(l)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
            return Ok(false);
        };
        // SAFETY: plain syscall on a descriptor we own; no memory is passed.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                o,
                l,
            )
        };
        if rc == 0 {
            Ok(true)
        } else {
            not_supported(io::Error::last_os_error())
        }
    }
    #[cfg(target_vendor = "apple")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(o), Ok(l)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
            return Ok(false);
        };
        let arg = libc::fpunchhole_t {
            fp_flags: 0,
            reserved: 0,
            fp_offset: o,
            fp_length: l,
        };
        // SAFETY: `arg` is a valid fpunchhole_t that outlives the call; the
        // descriptor is ours.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_PUNCHHOLE, &arg) };
        if rc == 0 {
            Ok(true)
        } else {
            not_supported(io::Error::last_os_error())
        }
    }
    #[cfg(not(any(windows, target_os = "linux", target_vendor = "apple")))]
    {
        let _ = (file, off);
        Ok(false)
    }
}

/// Asks the system to start reading `[off, off + len)` of `file` into the
/// page cache now, without waiting (a hint: errors are ignored). Linux:
/// `posix_fadvise(POSIX_FADV_WILLNEED)`; elsewhere nothing.
pub(crate) fn will_need(file: &File, off: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        if let (Ok(o), Ok(l)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) {
            // SAFETY: plain syscall on a descriptor we own; no memory is passed.
            let _ =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), o, l, libc::POSIX_FADV_WILLNEED) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, off, len);
    }
}

/// Bytes the file system of `file` has free for this user (`fstatvfs`:
/// available blocks); `None` where unknown (Windows, or the call failed).
pub(crate) fn free_space(file: &File) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fstatvfs fills the struct we pass; all-zero is a valid
        // `statvfs` (plain integers).
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a descriptor we own and a struct of the right type.
        if unsafe { libc::fstatvfs(file.as_raw_fd(), &mut st) } != 0 {
            return None;
        }
        (st.f_bavail as u64).checked_mul(st.f_frsize as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        None
    }
}

/// Whether reading a hole of `file` through a mapping allocates a page of
/// its file system, as on tmpfs (Linux `shmem`): there a read fault on a
/// hole of a file on a full tmpfs raises SIGBUS, where other file systems
/// map a shared zero page.
pub(crate) fn reads_allocate(file: &File) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        const TMPFS_MAGIC: libc::c_long = 0x0102_1994;
        // SAFETY: fstatfs fills the struct we pass; all-zero is a valid
        // `statfs` (plain integers).
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a descriptor we own and a struct of the right type.
        if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
            return false;
        }
        st.f_type as libc::c_long == TMPFS_MAGIC
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        false
    }
}

/// Bytes `file` takes on disk (its allocated blocks; less than its size
/// when it has holes). Unix: `st_blocks`; Windows: the size minus the
/// holes [`next_hole`] finds.
pub(crate) fn disk_usage(file: &File) -> io::Result<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Ok(file.metadata()?.blocks().saturating_mul(512))
    }
    #[cfg(not(unix))]
    {
        let size = file.metadata()?.len();
        let mut used = size;
        let mut at = 0;
        while let Some((start, end)) = next_hole(file, at, size)? {
            used -= end - start;
            at = end;
        }
        Ok(used)
    }
}

/// Writes all of `buf` at offset `off` of `file`.
#[cfg(any(not(target_os = "linux"), test))]
pub(crate) fn write_all_at(file: &File, buf: &[u8], off: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, off)
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let (mut buf, mut off) = (buf, off);
        while !buf.is_empty() {
            match file.seek_write(buf, off) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    off += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = (file, buf, off);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Reads `buf.len()` bytes at offset `off` of `file` with `pread` (or its
/// Windows equivalent), never through a mapping: reading a hole of a full
/// tmpfs through a mapping raises SIGBUS, `pread` returns zeros. Bytes past
/// the end of the file read as zeros.
pub(crate) fn read_at(file: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let at = off + done as u64;
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(file, &mut buf[done..], at);
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_read(file, &mut buf[done..], at);
        #[cfg(not(any(unix, windows)))]
        let n: io::Result<usize> = {
            let _ = (file, at);
            Err(io::ErrorKind::Unsupported.into())
        };
        match n {
            Ok(0) => {
                buf[done..].fill(0);
                return Ok(());
            }
            Ok(k) => done += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The largest file size this process may write (`RLIMIT_FSIZE`; `u64::MAX`
/// when unlimited or where there is no such limit). Writing at or past it,
/// or extending a file beyond it, raises SIGXFSZ, which kills R: growth and
/// reservation check it first and refuse with `Error::Full`. Read at every
/// use, since the limit can be lowered while the heap is open.
pub(crate) fn file_size_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscall filling a struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut r) } != 0
            || r.rlim_cur == libc::RLIM_INFINITY
        {
            return u64::MAX;
        }
        // `rlim_t` is 32 bits wide on some targets.
        #[allow(clippy::useless_conversion)]
        u64::try_from(r.rlim_cur).unwrap_or(u64::MAX)
    }
    #[cfg(not(unix))]
    {
        u64::MAX
    }
}

/// `path` as users know it. Windows: `std::fs::canonicalize` returns
/// verbatim paths (`\\?\C:\x`, `\\?\UNC\srv\share\x`), which R and most
/// programs do not expect; they become `C:\x` and `\\srv\share\x` when that
/// names the same file (see `strip_verbatim`), else stay as they are.
/// Elsewhere `path` unchanged.
pub(crate) fn normal_path(path: PathBuf) -> PathBuf {
    #[cfg(windows)]
    {
        match path.to_str().and_then(strip_verbatim) {
            Some(s) => PathBuf::from(s),
            None => path,
        }
    }
    #[cfg(not(windows))]
    {
        path
    }
}

/// The ordinary form of the verbatim Windows path `s`, if it names the same
/// file: a drive (`\\?\C:\...`) or UNC (`\\?\UNC\server\share\...`) root,
/// components that ordinary path parsing keeps as they are (no `.`/`..`,
/// no trailing dot or space, no reserved device name, no character that is
/// invalid or special outside verbatim paths) and a length below
/// `MAX_PATH`. `None` for anything else (including non-verbatim paths).
#[cfg(any(windows, test))]
fn strip_verbatim(s: &str) -> Option<String> {
    const MAX_PATH: usize = 260;
    let rest = s.strip_prefix(r"\\?\")?;
    let (root, tail) = if let Some(unc) = rest
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case(r"UNC\"))
        .map(|_| &rest[4..])
    {
        // server\share, then the path inside the share.
        let mut parts = unc.splitn(3, '\\');
        let server = parts.next().filter(|p| plain_component(p))?;
        let share = parts.next().filter(|p| plain_component(p))?;
        (format!(r"\\{server}\{share}"), parts.next().unwrap_or(""))
    } else {
        let b = rest.as_bytes();
        if b.len() < 3 || !b[0].is_ascii_alphabetic() || b[1] != b':' || b[2] != b'\\' {
            return None;
        }
        (rest[..2].to_string(), &rest[3..])
    };
    if !tail.is_empty() && !tail.split('\\').all(plain_component) {
        return None;
    }
    let out = format!(r"{root}\{tail}");
    // A UNC share root is written without the trailing separator.
    let out = match out.strip_suffix('\\') {
        Some(o) if o.starts_with(r"\\") => o.to_string(),
        _ => out,
    };
    (out.encode_utf16().count() < MAX_PATH).then_some(out)
}

/// A path component that means the same with and without `\\?\`.
#[cfg(any(windows, test))]
fn plain_component(c: &str) -> bool {
    const RESERVED: [&str; 6] = ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"];
    if c.is_empty() || c.ends_with('.') || c.ends_with(' ') {
        return false;
    }
    if c.chars()
        .any(|ch| ch < ' ' || matches!(ch, '/' | '<' | '>' | ':' | '"' | '|' | '?' | '*'))
    {
        return false;
    }
    // Device names are reserved with any extension and trailing spaces.
    let stem = c.split('.').next().unwrap_or(c).trim_end_matches(' ');
    let upper = stem.to_ascii_uppercase();
    if RESERVED.contains(&upper.as_str()) {
        return false;
    }
    let mut chars = upper.chars();
    let port = upper.starts_with("COM") || upper.starts_with("LPT");
    let digit = chars
        .nth(3)
        .is_some_and(|d| d.is_ascii_digit() || "¹²³".contains(d));
    !(port && digit && chars.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbatim_paths_become_ordinary_when_lossless() {
        let s = |p: &str| strip_verbatim(p);
        assert_eq!(s(r"\\?\C:\x").as_deref(), Some(r"C:\x"));
        assert_eq!(s(r"\\?\c:\").as_deref(), Some(r"c:\"));
        assert_eq!(
            s(r"\\?\C:\Users\me\heap file.bin").as_deref(),
            Some(r"C:\Users\me\heap file.bin")
        );
        assert_eq!(s(r"\\?\UNC\srv\share").as_deref(), Some(r"\\srv\share"));
        assert_eq!(s(r"\\?\UNC\srv\share\").as_deref(), Some(r"\\srv\share"));
        assert_eq!(
            s(r"\\?\unc\srv\share\d\h.bin").as_deref(),
            Some(r"\\srv\share\d\h.bin")
        );
        assert_eq!(
            s(r"\\?\C:\Users\Jürgen\data.bin").as_deref(),
            Some(r"C:\Users\Jürgen\data.bin")
        );
        assert_eq!(s(r"\\?\C:\com10\lpt0x").as_deref(), Some(r"C:\com10\lpt0x"));
    }

    #[test]
    fn verbatim_paths_that_would_change_meaning_are_kept() {
        for p in [
            r"C:\x",
            r"\\srv\share\x",
            r"\\?\C:",
            r"\\?\C:x",
            r"\\?\1:\x",
            r"\\?\Volume{0b1c2d3e-0000-0000-0000-100000000000}\x",
            r"\\?\GLOBALROOT\Device\x",
            r"\\?\UNC\srv",
            r"\\?\UNC\\share\x",
            r"\\?\C:\a\.\b",
            r"\\?\C:\a\..\b",
            r"\\?\C:\a\\b",
            r"\\?\C:\trailing.",
            r"\\?\C:\trailing ",
            r"\\?\C:\dir\NUL",
            r"\\?\C:\dir\nul.txt",
            r"\\?\C:\dir\Com1",
            r"\\?\C:\dir\LPT²",
            r"\\?\C:\dir\CONOUT$",
            r"\\?\C:\a/b",
            r"\\?\C:\a:stream",
            r"\\?\C:\a?b",
        ] {
            assert_eq!(strip_verbatim(p), None, "{p}");
        }
        let long = format!(r"\\?\C:\{}", "d".repeat(257));
        assert_eq!(strip_verbatim(&long), None);
        let fits = format!(r"\\?\C:\{}", "d".repeat(256));
        assert_eq!(strip_verbatim(&fits).map(|s| s.len()), Some(259));
    }

    #[test]
    fn os_random_fills_the_buffer() {
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        assert!(fill_random(&mut a) && fill_random(&mut b));
        assert_ne!(a, b);
    }
}
