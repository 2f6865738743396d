//! The few Win32 functions the core calls, declared by hand (the crate
//! depends on no Windows bindings), each behind a small safe wrapper.
//!
//! Every declaration matches its prototype in the Windows SDK headers named
//! next to it; `BOOL` is `i32`, `DWORD` `u32`, `HANDLE` a pointer.

use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::os::windows::io::AsRawHandle;

type Handle = *mut c_void;
type Bool = i32;

/// `OVERLAPPED` (minwinbase.h). `offset`/`offset_high` are the two `DWORD`s
/// of the anonymous union (whose other member, a pointer, has the same size
/// and alignment on 64-bit and is smaller on 32-bit).
#[repr(C)]
struct Overlapped {
    internal: usize,
    internal_high: usize,
    offset: u32,
    offset_high: u32,
    event: Handle,
}

// fileapi.h / ioapiset.h (kernel32).
#[link(name = "kernel32")]
extern "system" {
    fn LockFileEx(
        file: Handle,
        flags: u32,
        reserved: u32,
        bytes_low: u32,
        bytes_high: u32,
        overlapped: *mut Overlapped,
    ) -> Bool;

    fn GetFileInformationByHandle(file: Handle, info: *mut ByHandleFileInformation) -> Bool;

    fn DeviceIoControl(
        device: Handle,
        code: u32,
        in_buf: *mut c_void,
        in_size: u32,
        out_buf: *mut c_void,
        out_size: u32,
        returned: *mut u32,
        overlapped: *mut Overlapped,
    ) -> Bool;
}

// bcrypt.h (bcrypt); returns an `NTSTATUS`, 0 on success.
#[link(name = "bcrypt")]
extern "system" {
    fn BCryptGenRandom(algorithm: Handle, buf: *mut u8, len: u32, flags: u32) -> i32;
}

const LOCKFILE_FAIL_IMMEDIATELY: u32 = 0x1;
const LOCKFILE_EXCLUSIVE_LOCK: u32 = 0x2;
/// winerror.h: the range is locked by another handle.
const ERROR_LOCK_VIOLATION: i32 = 33;
/// winioctl.h: CTL_CODE(FILE_DEVICE_FILE_SYSTEM, 49, METHOD_BUFFERED,
/// FILE_SPECIAL_ACCESS).
const FSCTL_SET_SPARSE: u32 = 0x0009_00c4;
const FSCTL_SET_ZERO_DATA: u32 = 0x0009_80c8;
const BCRYPT_USE_SYSTEM_PREFERRED_RNG: u32 = 0x2;
/// winioctl.h: CTL_CODE(FILE_DEVICE_FILE_SYSTEM, 51, METHOD_NEITHER,
/// FILE_READ_DATA).
const FSCTL_QUERY_ALLOCATED_RANGES: u32 = 0x0009_40cf;
/// winerror.h: the output buffer holds only the first results.
const ERROR_MORE_DATA: i32 = 234;

/// `FILETIME` (minwinbase.h): two `DWORD`s.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FileTime {
    low: u32,
    high: u32,
}

/// `BY_HANDLE_FILE_INFORMATION` (fileapi.h).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ByHandleFileInformation {
    attributes: u32,
    creation_time: FileTime,
    last_access_time: FileTime,
    last_write_time: FileTime,
    volume_serial_number: u32,
    file_size_high: u32,
    file_size_low: u32,
    number_of_links: u32,
    file_index_high: u32,
    file_index_low: u32,
}

/// `FILE_ALLOCATED_RANGE_BUFFER` (winioctl.h): two `LARGE_INTEGER`s.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AllocatedRange {
    offset: i64,
    length: i64,
}

/// The volume serial number and the file index of `file`: together they
/// identify the file on this machine while it is open.
pub fn file_id(file: &File) -> io::Result<(u64, u64)> {
    let mut info = ByHandleFileInformation::default();
    // SAFETY: a valid handle we own and a properly sized, writable struct.
    if unsafe { GetFileInformationByHandle(file.as_raw_handle() as Handle, &mut info) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let index = (u64::from(info.file_index_high) << 32) | u64::from(info.file_index_low);
    Ok((u64::from(info.volume_serial_number), index))
}

/// Locks the one byte at `offset` of `file` without waiting, exclusive or
/// shared. `Ok(false)`: another handle holds a conflicting lock. The lock
/// goes away when the handle is closed.
pub fn try_lock_byte(file: &File, offset: u64, exclusive: bool) -> io::Result<bool> {
    let mut ov = Overlapped {
        internal: 0,
        internal_high: 0,
        offset: offset as u32,
        offset_high: (offset >> 32) as u32,
        event: std::ptr::null_mut(),
    };
    let flags = LOCKFILE_FAIL_IMMEDIATELY
        | if exclusive {
            LOCKFILE_EXCLUSIVE_LOCK
        } else {
            0
        };
    // SAFETY: the handle is open for as long as `file` is borrowed; `ov` is
    // a valid OVERLAPPED that outlives the call, which completes before it
    // returns (std opens files for synchronous I/O, and FAIL_IMMEDIATELY
    // never waits).
    let ok = unsafe { LockFileEx(file.as_raw_handle(), flags, 0, 1, 0, &mut ov) };
    if ok != 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(ERROR_LOCK_VIOLATION) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// `DeviceIoControl` of `code` on `file` with `input` (none: no input
/// buffer) and no output buffer.
fn control_in<T>(file: &File, code: u32, input: Option<&mut T>) -> io::Result<()> {
    let (buf, size) = match input {
        Some(v) => ((v as *mut T).cast(), std::mem::size_of::<T>() as u32),
        None => (std::ptr::null_mut(), 0),
    };
    let mut returned = 0u32;
    // SAFETY: the handle is open while `file` is borrowed; `buf` is null
    // or a `T` of `size` bytes that outlives the synchronous call, as does
    // `returned`; no output buffer.
    let ok = unsafe {
        DeviceIoControl(
            file.as_raw_handle(),
            code,
            buf,
            size,
            std::ptr::null_mut(),
            0,
            &mut returned,
            std::ptr::null_mut(),
        )
    };
    if ok != 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Marks `file` sparse: ranges never written take no disk space (no input
/// buffer means "set sparse").
pub fn set_sparse(file: &File) -> io::Result<()> {
    control_in::<()>(file, FSCTL_SET_SPARSE, None)
}

/// `FILE_ZERO_DATA_INFORMATION`: the range `[from, beyond)` to zero.
#[repr(C)]
struct ZeroData {
    from: i64,
    beyond: i64,
}

/// Zeroes `[off, off + len)` of a sparse `file`, deallocating its clusters.
pub fn zero_data(file: &File, off: u64, len: u64) -> io::Result<()> {
    let (Ok(from), Ok(beyond)) = (i64::try_from(off), i64::try_from(off.saturating_add(len)))
    else {
        return Err(io::Error::other("range too large"));
    };
    control_in(
        file,
        FSCTL_SET_ZERO_DATA,
        Some(&mut ZeroData { from, beyond }),
    )
}

/// Fills `buf` from the system's preferred random number generator.
pub fn fill_random(buf: &mut [u8]) -> bool {
    let Ok(len) = u32::try_from(buf.len()) else {
        return false;
    };
    // SAFETY: `buf` is valid for `len` bytes of writes; a null algorithm
    // handle is what BCRYPT_USE_SYSTEM_PREFERRED_RNG requires.
    let status = unsafe {
        BCryptGenRandom(
            std::ptr::null_mut(),
            buf.as_mut_ptr(),
            len,
            BCRYPT_USE_SYSTEM_PREFERRED_RNG,
        )
    };
    status == 0
}

/// The first hole (range without disk blocks) of `[at, end)` as
/// `(start, end)`, `Ok(None)` if there is none. A file system that cannot
/// report allocated ranges (FAT, which has no holes either) gives an error.
pub fn next_hole(file: &File, at: u64, end: u64) -> io::Result<Option<(u64, u64)>> {
    let mut from = at;
    while from < end {
        let to_i64 = |v: u64| i64::try_from(v).map_err(io::Error::other);
        let mut query = AllocatedRange {
            offset: to_i64(from)?,
            length: to_i64(end - from)?,
        };
        let mut out = [AllocatedRange::default(); 16];
        let mut returned = 0u32;
        // SAFETY: the handle is open while `file` is borrowed; `query` and
        // `out` are valid for the sizes passed and outlive the synchronous
        // call; `returned` receives the bytes written to `out`.
        let ok = unsafe {
            DeviceIoControl(
                file.as_raw_handle(),
                FSCTL_QUERY_ALLOCATED_RANGES,
                (&mut query as *mut AllocatedRange).cast(),
                std::mem::size_of::<AllocatedRange>() as u32,
                out.as_mut_ptr().cast(),
                std::mem::size_of_val(&out) as u32,
                &mut returned,
                std::ptr::null_mut(),
            )
        };
        let more = if ok != 0 {
            false
        } else {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(ERROR_MORE_DATA) {
                return Err(e);
            }
            true
        };
        let n = (returned as usize / std::mem::size_of::<AllocatedRange>()).min(out.len());
        for r in &out[..n] {
            let start = u64::try_from(r.offset).map_err(io::Error::other)?;
            let stop = start.saturating_add(u64::try_from(r.length).map_err(io::Error::other)?);
            if start > from {
                return Ok(Some((from, start.min(end))));
            }
            from = from.max(stop);
        }
        if !more {
            return Ok((from < end).then_some((from, end)));
        }
        if n == 0 {
            return Err(io::Error::other(
                "FSCTL_QUERY_ALLOCATED_RANGES made no progress",
            ));
        }
    }
    Ok(None)
}
