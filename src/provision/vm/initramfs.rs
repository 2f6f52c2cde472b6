//! The initramfs of a VM: a newc cpio archive written here (no external tool), holding our init
//! (`lnst-vm-init`) with the shared libraries it needs (found by reading its ELF headers), the
//! kernel modules of the transports in load order, and `/lnst/init.conf`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A problem building the initramfs; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Elf(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InitramfsError {
    let what = what.into();
    move |source| InitramfsError::Io { what, source }
}

// ---------------------------------------------------------------------------------------------
// newc cpio
// ---------------------------------------------------------------------------------------------

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// Writer of a `newc` ("070701") cpio archive, the format the kernel unpacks as initramfs.
/// Parent directories are emitted before their entries, once.
pub struct Cpio<W: Write> {
    out: W,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl<W: Write> Cpio<W> {
    pub fn new(out: W) -> Cpio<W> {
        Cpio {
            out,
            ino: 1,
            dirs: BTreeSet::new(),
        }
    }

    fn header(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        size: u32,
        rdev: (u32, u32),
    ) -> std::io::Result<()> {
        let ino = self.ino;
        self.ino += 1;
        let namesize = u32::try_from(name.len() + 1).map_err(std::io::Error::other)?;
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        let mut h = String::with_capacity(110);
        h.push_str("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + name.len() + 1)
    }

    fn pad(&mut self, len: usize) -> std::io::Result<()> {
        let n = (4 - len % 4) % 4;
        self.out.write_all(&[0u8; 3][..n])
    }

    /// `path` without the leading `/`; its parents are created first.
    fn parents(&mut self, path: &str) -> std::io::Result<String> {
        let rel = path.trim_start_matches('/').to_string();
        let mut acc = String::new();
        let comps: Vec<&str> = rel.split('/').collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            if self.dirs.insert(acc.clone()) {
                let d = acc.clone();
                self.header(&d, S_IFDIR | 0o755, 2, 0, (0, 0))?;
            }
        }
        Ok(rel)
    }

    pub fn dir(&mut self, path: &str) -> std::io::Result<()> {
        let rel = self.parents(path)?;
        if self.dirs.insert(rel.clone()) {
            self.header(&rel, S_IFDIR | 0o755, 2, 0, (0, 0))?;
        }
        Ok(())
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        let rel = self.parents(path)?;
        let size = u32::try_from(data.len()).map_err(std::io::Error::other)?;
        self.header(&rel, S_IFREG | (mode & 0o7777), 1, size, (0, 0))?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    pub fn char_dev(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> std::io::Result<()> {
        let rel = self.parents(path)?;
        self.header(&rel, S_IFCHR | (mode & 0o7777), 1, 0, (major, minor))
    }

    /// Write the trailer and hand back the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.header("TRAILER!!!", 0, 1, 0, (0, 0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

// ---------------------------------------------------------------------------------------------
// ELF: interpreter and needed libraries of a dynamically linked executable
// ---------------------------------------------------------------------------------------------

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;

/// What the dynamic loader needs to start an ELF64 little-endian file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ElfDeps {
    pub interp: Option<String>,
    pub needed: Vec<String>,
}

fn rd<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}
fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    rd::<2>(b, off).map(u16::from_le_bytes)
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    rd::<4>(b, off).map(u32::from_le_bytes)
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    rd::<8>(b, off).map(u64::from_le_bytes)
}
fn cstr_at(b: &[u8], off: usize) -> Option<String> {
    let rest = b.get(off..)?;
    let end = rest.iter().position(|c| *c == 0)?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

/// Read PT_INTERP and the DT_NEEDED names of an ELF64 LE file (`what` names it in errors).
pub fn elf_deps(b: &[u8], what: &str) -> Result<ElfDeps, InitramfsError> {
    let err = |m: &str| InitramfsError::Elf(format!("{what}: {m}"));
    if b.get(..4) != Some(b"\x7fELF") {
        return Err(err("not an ELF file"));
    }
    if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return Err(err("not a 64-bit little-endian ELF file"));
    }
    let bad = || err("truncated or malformed ELF headers");
    let phoff = usize::try_from(u64_at(b, 0x20).ok_or_else(bad)?).map_err(|_| bad())?;
    let phentsize = usize::from(u16_at(b, 0x36).ok_or_else(bad)?);
    let phnum = usize::from(u16_at(b, 0x38).ok_or_else(bad)?);
    let mut deps = ElfDeps::default();
    let mut loads = Vec::new();
    let mut dynamic = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let ty = u32_at(b, ph).ok_or_else(bad)?;
        let off = u64_at(b, ph + 8).ok_or_else(bad)?;
        let vaddr = u64_at(b, ph + 16).ok_or_else(bad)?;
        let filesz = u64_at(b, ph + 32).ok_or_else(bad)?;
        match ty {
            PT_INTERP => {
                deps.interp =
                    Some(cstr_at(b, usize::try_from(off).map_err(|_| bad())?).ok_or_else(bad)?)
            }
            PT_LOAD => loads.push((vaddr, off, filesz)),
            PT_DYNAMIC => dynamic = Some((off, filesz)),
            _ => {}
        }
    }
    let Some((dyn_off, dyn_size)) = dynamic else {
        return Ok(deps); // statically linked
    };
    let mut strtab = None;
    let mut needed = Vec::new();
    let mut p = dyn_off;
    while p + 16 <= dyn_off + dyn_size {
        let pu = usize::try_from(p).map_err(|_| bad())?;
        let tag = u64_at(b, pu).ok_or_else(bad)?;
        let val = u64_at(b, pu + 8).ok_or_else(bad)?;
        match tag {
            DT_NULL => break,
            DT_NEEDED => needed.push(val),
            DT_STRTAB => strtab = Some(val),
            _ => {}
        }
        p += 16;
    }
    if needed.is_empty() {
        return Ok(deps);
    }
    let strtab = strtab.ok_or_else(|| err("DT_NEEDED without DT_STRTAB"))?;
    // DT_STRTAB is a virtual address: map it to a file offset through the PT_LOAD segments.
    let str_off = loads
        .iter()
        .find(|(va, _, sz)| strtab >= *va && strtab < va + sz)
        .map(|(va, off, _)| strtab - va + off)
        .ok_or_else(|| err("DT_STRTAB outside every PT_LOAD segment"))?;
    for n in needed {
        let at = usize::try_from(str_off + n).map_err(|_| bad())?;
        deps.needed.push(cstr_at(b, at).ok_or_else(bad)?);
    }
    Ok(deps)
}

/// Where the dynamic loader of this host looks by default (Debian's multiarch directories
/// first).
pub const LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Every file (path as the loader will look it up → contents source) an executable needs to
/// start: its interpreter and its libraries, transitively.
pub fn runtime_files(exe: &Path) -> Result<BTreeMap<String, PathBuf>, InitramfsError> {
    let mut out = BTreeMap::new();
    let mut todo = vec![exe.to_path_buf()];
    let mut seen_libs = BTreeSet::new();
    while let Some(file) = todo.pop() {
        let data = std::fs::read(&file).map_err(io(format!("{}", file.display())))?;
        let deps = elf_deps(&data, &file.display().to_string())?;
        if let Some(interp) = deps.interp {
            out.entry(interp.clone())
                .or_insert_with(|| PathBuf::from(&interp));
        }
        for soname in deps.needed {
            if !seen_libs.insert(soname.clone()) {
                continue;
            }
            let found = LIB_DIRS
                .iter()
                .map(|d| Path::new(d).join(&soname))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    InitramfsError::Elf(format!(
                        "{}: needs {soname}, not found in {}",
                        file.display(),
                        LIB_DIRS.join(", ")
                    ))
                })?;
            out.insert(found.display().to_string(), found.clone());
            todo.push(found);
        }
    }
    Ok(out)
}

/// What goes into one run's initramfs.
#[derive(Debug, Clone)]
pub struct InitramfsSpec {
    /// Our init binary (copied to `/init`).
    pub init: PathBuf,
    /// Kernel modules to load, in order (copied under `/lnst/modules/`).
    pub modules: Vec<PathBuf>,
    /// `/lnst/init.conf` lines other than the module list.
    pub conf: Vec<String>,
}

/// Write the initramfs to `dest` (mode 0600). Returns its size in bytes.
pub fn write_initramfs(spec: &InitramfsSpec, dest: &Path) -> Result<u64, InitramfsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dest)
        .map_err(io(format!("{}", dest.display())))?;
    let mut cpio = Cpio::new(std::io::BufWriter::new(file));
    let w = |e| InitramfsError::Io {
        what: format!("{}", dest.display()),
        source: e,
    };
    for d in ["dev", "proc", "sys", "lnst/modules"] {
        cpio.dir(d).map_err(w)?;
    }
    // The kernel opens /dev/console for process 1's stdio before devtmpfs is mounted.
    cpio.char_dev("dev/console", 0o600, 5, 1).map_err(w)?;
    let init = std::fs::read(&spec.init).map_err(io(format!("{}", spec.init.display())))?;
    cpio.file("init", 0o755, &init).map_err(w)?;
    for (at, src) in runtime_files(&spec.init)? {
        let data = std::fs::read(&src).map_err(io(format!("{}", src.display())))?;
        cpio.file(&at, 0o755, &data).map_err(w)?;
    }
    let mut conf = String::new();
    for (i, m) in spec.modules.iter().enumerate() {
        let data = std::fs::read(m).map_err(io(format!("module {}", m.display())))?;
        let base = m
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let at = format!("/lnst/modules/{i:03}-{base}");
        cpio.file(&at, 0o644, &data).map_err(w)?;
        conf.push_str(&format!("module {at}\n"));
    }
    for l in &spec.conf {
        conf.push_str(l);
        conf.push('\n');
    }
    cpio.file("lnst/init.conf", 0o644, conf.as_bytes())
        .map_err(w)?;
    let mut out = cpio.finish().map_err(w)?;
    out.flush().map_err(w)?;
    let f = out.into_inner().map_err(|e| w(e.into_error()))?;
    f.sync_all().ok();
    Ok(f.metadata().map(|m| m.len()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse a newc archive back: (name, mode, data) per entry.
    fn parse_newc(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let pad = |n: usize| (4 - n % 4) % 4;
        loop {
            assert_eq!(&b[..6], b"070701");
            let f = |i: usize| {
                u32::from_str_radix(
                    std::str::from_utf8(&b[6 + i * 8..14 + i * 8]).unwrap_or("0"),
                    16,
                )
                .unwrap_or(0)
            };
            let (mode, size, namesize) = (f(1), f(6) as usize, f(11) as usize);
            let name = String::from_utf8(b[110..110 + namesize - 1].to_vec()).unwrap_or_default();
            let hdr = 110 + namesize;
            let data_start = hdr + pad(hdr);
            let data = b[data_start..data_start + size].to_vec();
            b = &b[data_start + size + pad(size)..];
            if name == "TRAILER!!!" {
                break;
            }
            out.push((name, mode, data));
        }
        assert!(b.is_empty());
        out
    }

    #[test]
    fn newc_round_trips_with_parents_first() {
        let mut c = Cpio::new(Vec::new());
        c.file("/a/b/c.txt", 0o644, b"hello")
            .unwrap_or_else(|e| panic!("{e}"));
        c.file("/a/b/d", 0o755, b"")
            .unwrap_or_else(|e| panic!("{e}"));
        c.char_dev("dev/console", 0o600, 5, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        c.dir("a").unwrap_or_else(|e| panic!("{e}"));
        let bytes = c.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bytes.len() % 4, 0);
        let entries = parse_newc(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["a", "a/b", "a/b/c.txt", "a/b/d", "dev", "dev/console"]
        );
        assert_eq!(entries[2].2, b"hello");
        assert_eq!(entries[2].1, S_IFREG | 0o644);
        assert_eq!(entries[0].1, S_IFDIR | 0o755);
        assert_eq!(entries[5].1, S_IFCHR | 0o600);
    }

    #[test]
    fn elf_deps_of_a_real_binary() {
        // The test binary itself is a dynamically linked ELF of this host.
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
        let data = std::fs::read(&exe).unwrap_or_else(|e| panic!("{e}"));
        let d = elf_deps(&data, "test").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            d.interp.as_deref().unwrap_or("").contains("ld-linux"),
            "{d:?}"
        );
        assert!(d.needed.iter().any(|n| n.starts_with("libc.so")), "{d:?}");
        let files = runtime_files(&exe).unwrap_or_else(|e| panic!("{e}"));
        assert!(files.keys().any(|k| k.ends_with("/libc.so.6")), "{files:?}");
        assert!(files.values().all(|p| p.is_file()));
    }

    #[test]
    fn elf_errors_name_the_file() {
        let e = elf_deps(b"#!/bin/sh\n", "x.sh")
            .err()
            .map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("x.sh: not an ELF file"));
        let mut trunc = b"\x7fELF\x02\x01\x01".to_vec();
        trunc.resize(0x30, 0);
        assert!(elf_deps(&trunc, "t").is_err());
    }
}
