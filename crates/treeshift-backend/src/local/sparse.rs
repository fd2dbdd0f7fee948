//! Copying a file with holes as a file with the same holes: only the
//! ranges that hold data (`SEEK_DATA` to `SEEK_HOLE`) are copied, each at
//! its own offset, and the length is set last, so the destination uses the
//! disk the source uses (within a block per hole) instead of the full size.

use rustix::fs::SeekFrom;
use rustix::io::Errno;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

/// Returns true if and only if a file has fewer blocks than its length
/// needs: it has holes (or the file system compresses it, and a copy by
/// ranges is as right for that).
pub(super) fn has_holes(meta: &std::fs::Metadata) -> bool {
    meta.blocks().saturating_mul(512) < meta.len()
}

/// Copies the data ranges of `src` into the empty `out` at their offsets
/// and gives `out` the length `src` had when it was opened (`len`).
/// Returns the length, or `Ok(None)` where the file system cannot say
/// where the data is (the caller copies the whole file instead).
pub(super) fn copy_ranges(src: &File, out: &File, len: u64) -> io::Result<Option<u64>> {
    let mut at = 0u64;
    while at < len {
        let start = match rustix::fs::seek(src, SeekFrom::Data(at)) {
            Ok(start) => start,
            // No data from here to the end.
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL | Errno::OPNOTSUPP) if at == 0 => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if start >= len {
            break;
        }
        let end = match rustix::fs::seek(src, SeekFrom::Hole(start)) {
            Ok(end) => end.min(len),
            Err(e) => return Err(e.into()),
        };
        copy_range(src, out, start, end)?;
        at = end;
    }
    out.set_len(len)?;
    Ok(Some(len))
}

/// Copies all of `src` from where it stands into `out` with
/// `copy_file_range`, to the end. `Ok(None)` before any byte moved when
/// the kernel will not copy between these two files (another file system,
/// an old kernel): the caller copies through a buffer instead.
pub(super) fn copy_whole(src: &File, out: &File) -> io::Result<Option<u64>> {
    let mut total = 0u64;
    loop {
        match rustix::fs::copy_file_range(src, None, out, None, 1 << 30) {
            Ok(0) => return Ok(Some(total)),
            Ok(n) => total += n as u64,
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) if total == 0 => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Copies `start..end` of `src` to the same offsets of `out`, in the
/// kernel where it can (`copy_file_range`), else through a buffer.
fn copy_range(src: &File, out: &File, start: u64, end: u64) -> io::Result<()> {
    let (mut from, mut to) = (start, start);
    while from < end {
        let want = usize::try_from(end - from)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::copy_file_range(src, Some(&mut from), out, Some(&mut to), want) {
            // The file shrank while it was copied: the caller's re-check
            // of its size reports it.
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                return copy_through_buffer(src, out, from, end);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_through_buffer(src: &File, out: &File, mut at: u64, end: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 256 << 10];
    while at < end {
        let want = usize::try_from(end - at)
            .unwrap_or(buf.len())
            .min(buf.len());
        let n = src.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    Ok(())
}
