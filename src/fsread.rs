//! Bounded reads of files whose path comes from input (TEST_DB, pool XML files, a pool's
//! `auth_password_file`, `LNST_BASELINE_FILE`, the agent's `--secret-file`).
//!
//! A path from input may name anything: a FIFO (a read waits for a writer that never comes),
//! a device (`/dev/zero` never ends), a directory, or a file of any size. [`read_regular_file`]
//! reads regular files only, and at most a given number of bytes:
//!
//! * the path is looked at with `stat` first, so that a FIFO or a device is refused without
//!   being opened (opening some devices has effects of its own);
//! * it is then opened with `O_NONBLOCK` (a FIFO swapped in since the `stat` does not block the
//!   open) and `O_NOCTTY` (a terminal never becomes our controlling terminal), and checked
//!   again with `fstat` on the open descriptor, which is what is read;
//! * at most `max_bytes + 1` bytes are read: one byte more than the limit is an error, never a
//!   silently truncated file.
//!
//! Symbolic links are followed: these paths are the user's own input files, read and never
//! written, and a link to a regular file is a normal way to name one (a link to a device or a
//! FIFO is refused by the checks above).

use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest secret file read (pool `auth_password_file`, the agent's `--secret-file`).
pub const SECRET_FILE_LIMIT: u64 = 64 * 1024;

/// Why an input file could not be read. The message names the path.
#[derive(Debug, thiserror::Error)]
pub enum FsReadError {
    /// A FIFO, socket, device or directory.
    #[error("{}: not a regular file ({kind})", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    /// More than the caller's limit.
    #[error("{}: larger than the limit of {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FsReadError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FsReadError::NotRegular { path, .. }
            | FsReadError::TooLarge { path, .. }
            | FsReadError::Io { path, .. } => path,
        }
    }

    /// The reason alone, without the path (for messages that name the path already).
    pub fn reason(&self) -> String {
        match self {
            FsReadError::NotRegular { kind, .. } => format!("not a regular file ({kind})"),
            FsReadError::TooLarge { limit, .. } => {
                format!("larger than the limit of {limit} bytes")
            }
            FsReadError::Io { source, .. } => source.to_string(),
        }
    }
}

/// What kind of non-regular file `ft` is, for messages.
pub fn file_kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else {
        "not a file"
    }
}

/// Read the regular file at `path` (symbolic links followed), at most `max_bytes` bytes.
/// Never blocks on a FIFO and never reads a device.
pub fn read_regular_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, FsReadError> {
    let io_err = |source| FsReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let not_regular = |m: &std::fs::Metadata| FsReadError::NotRegular {
        path: path.to_path_buf(),
        kind: file_kind(m.file_type()),
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    let f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(io_err)?
    };
    // The file opened is what counts: it may have been swapped since the stat above.
    let meta = f.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    if meta.len() > max_bytes {
        return Err(FsReadError::TooLarge {
            path: path.to_path_buf(),
            limit: max_bytes,
        });
    }
    // Sized from the file, not from the limit: a small file costs a small buffer. Files whose
    // size the kernel does not report (procfs) grow the buffer as they are read.
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    f.take(max_bytes.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    if buf.len() as u64 > max_bytes {
        return Err(FsReadError::TooLarge {
            path: path.to_path_buf(),
            limit: max_bytes,
        });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
    }

    #[test]
    fn reads_regular_files_and_links_to_them() {
        let d = tmp();
        let f = d.path().join("f");
        std::fs::write(&f, b"hello").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_regular_file(&f, 5).ok().as_deref(),
            Some(&b"hello"[..])
        );
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_regular_file(&l, 100).ok().as_deref(),
            Some(&b"hello"[..])
        );
        let empty = d.path().join("e");
        std::fs::write(&empty, b"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_regular_file(&empty, 0).ok(), Some(Vec::new()));
    }

    #[test]
    fn refuses_what_is_not_a_bounded_regular_file() {
        let d = tmp();
        let f = d.path().join("f");
        std::fs::write(&f, b"123456").unwrap_or_else(|e| panic!("{e}"));
        let e = read_regular_file(&f, 5).err().map(|e| e.to_string());
        assert_eq!(
            e,
            Some(format!("{}: larger than the limit of 5 bytes", f.display()))
        );
        // A FIFO: refused at once, without waiting for a writer.
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU)
            .unwrap_or_else(|e| panic!("mkfifo: {e}"));
        let t = Instant::now();
        let e = read_regular_file(&fifo, 5);
        assert!(
            matches!(e, Err(FsReadError::NotRegular { kind: "a FIFO", .. })),
            "{e:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(2));
        // A link to an endless device.
        let z = d.path().join("z");
        std::os::unix::fs::symlink("/dev/zero", &z).unwrap_or_else(|e| panic!("{e}"));
        let e = read_regular_file(&z, 5).err();
        assert_eq!(
            e.as_ref().map(FsReadError::reason).as_deref(),
            Some("not a regular file (a character device)")
        );
        assert_eq!(e.as_ref().map(FsReadError::path), Some(z.as_path()));
        let e = read_regular_file(d.path(), 5).err().map(|e| e.reason());
        assert_eq!(e.as_deref(), Some("not a regular file (a directory)"));
        let missing = d.path().join("missing");
        let e = read_regular_file(&missing, 5);
        match e {
            Err(FsReadError::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn files_without_a_size_are_still_bounded() {
        // procfs reports size 0; the read itself stops one byte past the limit.
        let e = read_regular_file(Path::new("/proc/self/maps"), 16).err();
        assert!(
            matches!(e, Some(FsReadError::TooLarge { limit: 16, .. })),
            "{e:?}"
        );
    }
}
