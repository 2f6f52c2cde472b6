//! Creating files and directories under the results directory without following links.
//!
//! The results directory may be writable by others (a shared bind mount, a world-writable
//! parent), and the runner runs as root: a link planted there must never redirect a write.
//! Everything below the results directory is reached through directory descriptors, one
//! component at a time:
//!
//! - the results directory is opened once with `O_DIRECTORY|O_NOFOLLOW` (the links in the
//!   path *to* it are the user's own and are followed; the directory itself must not be one);
//! - a directory is made with `mkdirat` and opened with `openat(O_DIRECTORY|O_NOFOLLOW)`: an
//!   existing link in its place is an error, never a target;
//! - a file is written to a fresh temporary file (unpredictable name, `O_CREAT|O_EXCL|
//!   O_NOFOLLOW`) and `renameat`-ed into place. A result name that is already a link is
//!   reported and left alone; one planted after that check is *replaced* by the rename (the
//!   rename acts on the directory entry, not on what it points to), so no write ever goes
//!   through it. A hard link to another file is replaced the same way, never truncated;
//! - files are read (for the archive) with `O_NOFOLLOW|O_NONBLOCK` and kept only when `fstat`
//!   says they are regular: links, FIFOs and devices are skipped.

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Prefix of the temporary files; an entry with this prefix is never part of the results.
pub const TEMP_PREFIX: &str = ".lnst-tmp-";

/// What a directory entry is, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

/// Why an entry could not be created or used.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("{} is a symbolic link: results are never written through links (remove it)", path.display())]
    Symlink { path: PathBuf },
    #[error("{} exists and is not a {expected}", path.display())]
    NotPlain {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl EntryError {
    fn io(path: PathBuf, e: impl Into<io::Error>) -> EntryError {
        EntryError::Io {
            path,
            source: e.into(),
        }
    }
}

fn kind_of(mode: u32) -> Kind {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful openat and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// An open directory under (or being) the results directory, with its path for messages.
#[derive(Debug)]
pub struct DirFd {
    fd: OwnedFd,
    path: PathBuf,
}

impl DirFd {
    /// Open `path` itself as a directory; a link as its last component is refused.
    pub fn open(path: &Path) -> Result<DirFd, EntryError> {
        match openat(
            None,
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(DirFd {
                fd: own(fd),
                path: path.to_path_buf(),
            }),
            Err(e) => Err(match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => EntryError::Symlink {
                    path: path.to_path_buf(),
                },
                Ok(m) if !m.is_dir() => EntryError::NotPlain {
                    path: path.to_path_buf(),
                    expected: "directory",
                },
                _ => EntryError::io(path.to_path_buf(), e),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn raw(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn child(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// What `name` is, not following a link; `None` when it does not exist.
    pub fn kind(&self, name: &OsStr) -> Result<Option<Kind>, EntryError> {
        match fstatat(self.raw(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(kind_of(st.st_mode))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(EntryError::io(self.child(name), e)),
        }
    }

    /// `name` may be replaced by a file: absent or a regular file.
    pub fn check_file_slot(&self, name: &OsStr) -> Result<(), EntryError> {
        match self.kind(name)? {
            None | Some(Kind::File) => Ok(()),
            Some(Kind::Symlink) => Err(EntryError::Symlink {
                path: self.child(name),
            }),
            Some(_) => Err(EntryError::NotPlain {
                path: self.child(name),
                expected: "regular file",
            }),
        }
    }

    /// The subdirectory `name`, made when missing; a link in its place is an error.
    pub fn subdir(&self, name: &OsStr) -> Result<DirFd, EntryError> {
        match mkdirat(self.raw(), name, Mode::from_bits_truncate(0o777)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                // A dangling link makes mkdirat fail with EEXIST too; anything else is real.
                return Err(self.classify(name, "directory", e));
            }
        }
        self.open_subdir(name)
    }

    /// The existing subdirectory `name`, not following a link.
    pub fn open_subdir(&self, name: &OsStr) -> Result<DirFd, EntryError> {
        match openat(
            self.raw(),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(DirFd {
                fd: own(fd),
                path: self.child(name),
            }),
            Err(e) => Err(self.classify(name, "directory", e)),
        }
    }

    /// The error for `name`: a link or a wrong kind named as such, else the system error.
    fn classify(&self, name: &OsStr, expected: &'static str, e: Errno) -> EntryError {
        match self.kind(name) {
            Ok(Some(Kind::Symlink)) => EntryError::Symlink {
                path: self.child(name),
            },
            Ok(Some(k)) if (k == Kind::Dir) != (expected == "directory") => EntryError::NotPlain {
                path: self.child(name),
                expected,
            },
            _ => EntryError::io(self.child(name), e),
        }
    }

    /// A new, empty temporary file with an unpredictable name: `(name, file)`.
    pub fn create_temp(&self) -> Result<(OsString, File), EntryError> {
        let mut last = Errno::EEXIST;
        for _ in 0..16 {
            let name = OsString::from(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
            match openat(
                self.raw(),
                name.as_os_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o666),
            ) {
                Ok(fd) => return Ok((name, File::from(own(fd)))),
                Err(Errno::EEXIST) => last = Errno::EEXIST,
                Err(e) => return Err(EntryError::io(self.child(&name), e)),
            }
        }
        Err(EntryError::io(
            self.path.join(format!("{TEMP_PREFIX}*")),
            last,
        ))
    }

    /// Remove the entry `name` (a file), ignoring errors (cleanup of a temporary file).
    pub fn remove_quietly(&self, name: &OsStr) {
        let _ = unlinkat(self.raw(), name, UnlinkatFlags::NoRemoveDir);
    }

    /// Move the temporary file `tmp` to `name`, replacing the entry (never its target).
    pub fn rename_into_place(&self, tmp: &OsStr, name: &OsStr) -> Result<(), EntryError> {
        renameat(self.raw(), tmp, self.raw(), name).map_err(|e| {
            self.remove_quietly(tmp);
            self.classify(name, "regular file", e)
        })
    }

    /// Write `data` as the file `name`: checked, written aside, renamed into place.
    pub fn write_file(&self, name: &OsStr, data: &[u8]) -> Result<(), EntryError> {
        self.check_file_slot(name)?;
        let (tmp, mut f) = self.create_temp()?;
        if let Err(e) = f.write_all(data) {
            self.remove_quietly(&tmp);
            return Err(EntryError::io(self.child(name), e));
        }
        drop(f);
        self.rename_into_place(&tmp, name)
    }

    /// The entries of this directory (without `.` and `..`), sorted by name, each with its
    /// kind (not following links).
    pub fn entries(&self) -> Result<Vec<(OsString, Kind)>, EntryError> {
        let mut dir = nix::dir::Dir::openat(
            self.raw(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| EntryError::io(self.path.clone(), e))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| EntryError::io(self.path.clone(), e))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            names.push(name.to_os_string());
        }
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            // Gone in the meantime: not an entry any more.
            if let Some(k) = self.kind(&name)? {
                out.push((name, k));
            }
        }
        Ok(out)
    }

    /// Open the regular file `name` for reading; `None` when it is not one (a link, a FIFO, a
    /// device, or gone).
    pub fn open_regular(&self, name: &OsStr) -> Result<Option<File>, EntryError> {
        let fd = match openat(
            self.raw(),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => own(fd),
            Err(Errno::ELOOP | Errno::ENOENT | Errno::ENXIO) => return Ok(None),
            Err(e) => return Err(EntryError::io(self.child(name), e)),
        };
        let st = fstat(fd.as_raw_fd()).map_err(|e| EntryError::io(self.child(name), e))?;
        if kind_of(st.st_mode) != Kind::File {
            return Ok(None);
        }
        Ok(Some(File::from(fd)))
    }
}
