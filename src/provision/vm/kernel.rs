//! The kernel a VM boots and its modules tree: the release written in a bzImage's header, the
//! default kernel, and the load order of modules from `modules.dep`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A kernel or modules problem; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("{0}")]
    Bad(String),
}

fn bad(s: impl Into<String>) -> KernelError {
    KernelError::Bad(s.into())
}

/// The release (`6.1.0-56-amd64`) of an x86 bzImage: the first word of the version string the
/// boot protocol header points to (`kernel_version` at 0x20e, relative to 0x200). None when the
/// file is not a bzImage of boot protocol ≥ 2.00 (QEMU may still boot it).
pub fn bzimage_release(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*image.get(0x20e)?, *image.get(0x20f)?]);
    if ptr == 0 {
        return None;
    }
    let start = 0x200 + usize::from(ptr);
    let rest = image.get(start..)?;
    let end = rest.iter().take(256).position(|b| *b == 0 || *b == b' ')?;
    let release = std::str::from_utf8(&rest[..end]).ok()?;
    let ok = !release.is_empty()
        && release
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'));
    ok.then(|| release.to_string())
}

/// The release in an uncompressed kernel (ELF `vmlinux`): the word after its
/// `Linux version ` banner.
pub fn banner_release(image: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let at = image.windows(BANNER.len()).position(|w| w == BANNER)? + BANNER.len();
    let rest = image.get(at..at + 256.min(image.len() - at))?;
    let end = rest.iter().position(|b| *b == b' ' || *b == 0)?;
    let r = std::str::from_utf8(&rest[..end]).ok()?;
    (!r.is_empty()
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+')))
    .then(|| r.to_string())
}

pub fn is_elf(image: &[u8]) -> bool {
    image.starts_with(b"\x7fELF")
}

/// Read a kernel image (bzImage, or an ELF `vmlinux`) and its release; unreadable or too small
/// to be a kernel is an error.
pub fn read_kernel(path: &Path) -> Result<Option<String>, KernelError> {
    let data = std::fs::read(path).map_err(|e| bad(format!("kernel {}: {e}", path.display())))?;
    if data.len() < 0x1000 {
        return Err(bad(format!(
            "kernel {} is not a kernel image ({} bytes)",
            path.display(),
            data.len()
        )));
    }
    if is_elf(&data) {
        return Ok(banner_release(&data));
    }
    Ok(bzimage_release(&data))
}

/// Whether an ELF64 kernel has a PVH entry point (a `Xen` note of type 18,
/// XEN_ELFNOTE_PHYS32_ENTRY): QEMU can then boot it directly with `-kernel`.
pub fn has_pvh_note(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if !is_elf(elf) || elf.get(4) != Some(&2) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let align4 = |n: usize| (n + 3) & !3;
    for i in 0..usize::from(phnum) {
        let ph = usize::try_from(phoff)
            .unwrap_or(usize::MAX)
            .saturating_add(i * usize::from(phentsize));
        if u32_at(ph) != Some(4) {
            continue; // not PT_NOTE
        }
        let (Some(off), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else {
            continue;
        };
        let (Ok(mut p), Ok(size)) = (usize::try_from(off), usize::try_from(size)) else {
            continue;
        };
        let end = p.saturating_add(size);
        while p + 12 <= end {
            let (Some(namesz), Some(descsz), Some(ty)) = (u32_at(p), u32_at(p + 4), u32_at(p + 8))
            else {
                break;
            };
            let (namesz, descsz) = (namesz as usize, descsz as usize);
            let name = elf.get(p + 12..p + 12 + namesz).unwrap_or_default();
            if name == b"Xen\0" && ty == 18 {
                return true;
            }
            p += 12 + align4(namesz) + align4(descsz);
        }
    }
    false
}

/// The decompressor of each payload format a bzImage may carry (by magic), as a host command.
const DECOMPRESSORS: &[(&[u8], &[&str])] = &[
    (b"\xfd7zXZ\x00", &["xz", "-dc", "--single-stream"]),
    (b"\x28\xb5\x2f\xfd", &["zstd", "-dc"]),
    (b"\x1f\x8b", &["gzip", "-dc"]),
    (b"\x02\x21\x4c\x18", &["lz4", "-dc"]),
    (b"\x5d\x00\x00", &["xz", "--format=lzma", "-dc"]),
    (b"BZh", &["bzip2", "-dc"]),
    (b"\x89LZO", &["lzop", "-dc"]),
];

/// The uncompressed kernel (ELF `vmlinux`) inside a bzImage, decompressed on the host with the
/// format's own tool: under TCG, the kernel's decompressor is the slowest part of a boot (about
/// 8 s of a 14 s boot on a loaded 2-CPU machine, against about a second natively). Accepted
/// only when it is complete (the size the bzImage records) and has a PVH entry point.
pub fn extract_vmlinux(image: &[u8]) -> Result<Vec<u8>, String> {
    if bzimage_release(image).is_none() && image.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not a bzImage".into());
    }
    let version = u16::from_le_bytes([image[0x206], image[0x207]]);
    if version < 0x208 {
        return Err(format!("boot protocol {version:#x} has no payload fields"));
    }
    let setup_sects = match image.get(0x1f1) {
        Some(0) | None => 4,
        Some(n) => usize::from(*n),
    };
    let field = |o: usize| {
        image
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let (Some(off), Some(len)) = (field(0x248), field(0x24c)) else {
        return Err("truncated setup header".into());
    };
    let start = (setup_sects + 1) * 512 + off;
    let payload = image
        .get(start..start.saturating_add(len))
        .ok_or("payload outside the file")?;
    // Every compressor's payload ends with the uncompressed size (32-bit little-endian).
    let expected = payload
        .get(payload.len().saturating_sub(4)..)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("empty payload")?;
    let argv = DECOMPRESSORS
        .iter()
        .find(|(magic, _)| payload.starts_with(magic))
        .map(|(_, argv)| *argv)
        .ok_or("unknown compression of the payload")?;
    let mut child = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let input = payload.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        // The tool may stop reading at the end of its stream (the size trailer stays unread).
        let _ = stdin.write_all(&input);
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    let _ = writer.join();
    let data = out.stdout;
    if data.len() != expected {
        return Err(format!(
            "{} gave {} bytes, the bzImage says {expected}",
            argv[0],
            data.len()
        ));
    }
    if !has_pvh_note(&data) {
        return Err("the kernel has no PVH entry point (CONFIG_PVH)".into());
    }
    Ok(data)
}

/// The newest `vmlinuz-<release>` in `boot_dir` whose `<modules_root>/<release>/modules.dep`
/// exists, as (kernel path, release). Newest by version order of the release.
pub fn default_kernel(boot_dir: &Path, modules_root: &Path) -> Option<(PathBuf, String)> {
    let mut found: Vec<(Vec<u64>, String, PathBuf)> = std::fs::read_dir(boot_dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            modules_root
                .join(&release)
                .join("modules.dep")
                .is_file()
                .then(|| (version_key(&release), release, e.path()))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, r, p)| (p, r))
}

/// Numeric fields of a release for ordering (`6.1.0-56-amd64` → [6, 1, 0, 56]).
fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// `foo-bar.ko.xz` → `foo_bar`: the name modprobe and the kernel use.
pub fn module_name(path: &str) -> String {
    file_stem(path).replace('-', "_")
}

/// A modules tree (`/lib/modules/<release>`): `modules.dep` and `modules.builtin`, kept as
/// read and looked up line by line when asked. A stock kernel's `modules.dep` is half a
/// megabyte with some 4,000 entries; parsing all of it into a map cost a TCG guest 50–130 ms
/// for the two or three modules a device needs, which a scan finds in a few.
#[derive(Debug, Clone)]
pub struct ModuleTree {
    pub dir: PathBuf,
    dep: String,
    builtin: String,
}

/// The module a file is (`kernel/x/foo-bar.ko.xz` → `foo-bar`), without allocating.
fn file_stem(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file)
}

/// `stem` (a file's, `foo-bar`) is module `name` (`foo_bar`): `-` and `_` are the same.
fn same_module(stem: &str, name: &str) -> bool {
    let norm = |b: u8| if b == b'-' { b'_' } else { b };
    stem.len() == name.len()
        && stem
            .bytes()
            .zip(name.bytes())
            .all(|(a, b)| norm(a) == norm(b))
}

impl ModuleTree {
    /// Read `dir/modules.dep` (required) and `dir/modules.builtin` (optional).
    pub fn load(dir: &Path) -> Result<ModuleTree, KernelError> {
        let dep_path = dir.join("modules.dep");
        let text = std::fs::read_to_string(&dep_path).map_err(|e| {
            bad(format!(
                "modules tree {}: {}: {e}{}",
                dir.display(),
                dep_path.display(),
                if e.kind() == std::io::ErrorKind::NotFound {
                    " (run depmod, or set LNST_VM_MODULES)"
                } else {
                    ""
                }
            ))
        })?;
        let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        Ok(ModuleTree::parse(dir, &text, &builtin))
    }

    /// Build from the texts of `modules.dep` and `modules.builtin`.
    pub fn parse(dir: &Path, dep_text: &str, builtin_text: &str) -> ModuleTree {
        ModuleTree {
            dir: dir.to_path_buf(),
            dep: dep_text.to_string(),
            builtin: builtin_text.to_string(),
        }
    }

    /// The `modules.dep` entry of module `name`: its file (relative to `dir`) and the files
    /// it depends on. Found by searching the text for `/<name>.ko` (with `_` or `-`), which is
    /// an order of magnitude faster in a TCG guest than splitting every line; a file whose
    /// name mixes `-` and `_` is found by the line scan after that.
    fn entry(&self, name: &str) -> Option<(&str, &str)> {
        let dashed = name.replace('_', "-");
        let forms = [name, dashed.as_str()];
        let forms = if dashed == name {
            &forms[..1]
        } else {
            &forms[..]
        };
        let fast = forms.iter().find_map(|form| {
            let needle = format!("/{form}.ko");
            self.dep.match_indices(&needle).find_map(|(at, _)| {
                let start = self.dep[..at].rfind('\n').map_or(0, |p| p + 1);
                let end = self.dep[at..].find('\n').map_or(self.dep.len(), |p| at + p);
                let (m, rest) = self.dep[start..end].split_once(':')?;
                // In the line's own file, not in its list of dependencies.
                (at - start < m.len() && same_module(file_stem(m.trim()), name))
                    .then(|| (m.trim(), rest))
            })
        });
        fast.or_else(|| {
            self.dep.lines().find_map(|line| {
                let (m, rest) = line.split_once(':')?;
                let m = m.trim();
                (!m.is_empty() && same_module(file_stem(m), name)).then_some((m, rest))
            })
        })
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin
            .lines()
            .map(str::trim)
            .any(|l| !l.is_empty() && same_module(file_stem(l), name))
    }

    pub fn has_module(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }

    /// The files to load, dependencies first, for `wanted` modules. A wanted module built into
    /// the kernel needs nothing; one that is neither a module nor built in is an error naming it.
    pub fn load_order(&self, wanted: &[&str]) -> Result<Vec<PathBuf>, KernelError> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for w in wanted {
            let name = w.replace('-', "_");
            if seen.contains(&name) {
                continue;
            }
            if let Some(entry) = self.entry(&name) {
                self.visit_entry(&name, entry, &mut seen, &mut Vec::new(), &mut order)?;
            } else if !self.is_builtin(&name) {
                return Err(bad(format!(
                    "the kernel of modules tree {} has no {name} (neither a module in modules.dep nor built in)",
                    self.dir.display()
                )));
            }
        }
        Ok(order.into_iter().map(|rel| self.dir.join(rel)).collect())
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<(), KernelError> {
        if seen.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            return Err(bad(format!(
                "modules.dep of {} has a dependency cycle through {name}",
                self.dir.display()
            )));
        }
        let Some(entry) = self.entry(name) else {
            // A dependency missing from modules.dep: built in, or the tree is inconsistent.
            if self.is_builtin(name) {
                return Ok(());
            }
            return Err(bad(format!(
                "modules.dep of {} names {name} as a dependency but has no entry for it",
                self.dir.display()
            )));
        };
        self.visit_entry(name, entry, seen, stack, order)
    }

    /// [`ModuleTree::visit`] with `name`'s `modules.dep` entry (file, dependencies) found.
    fn visit_entry(
        &self,
        name: &str,
        (rel, deps): (&str, &str),
        seen: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<(), KernelError> {
        stack.push(name.to_string());
        for d in deps.split_whitespace() {
            self.visit(&module_name(d), seen, stack, order)?;
        }
        stack.pop();
        seen.insert(name.to_string());
        order.push(rel.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/overlayfs/overlay.ko:
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/net/9p/9pnet.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/net/8021q/8021q.ko: kernel/net/802/garp.ko kernel/net/802/stp.ko kernel/net/802/mrp.ko kernel/net/llc/llc.ko
kernel/net/802/garp.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/802/mrp.ko:
kernel/net/llc/llc.ko:
kernel/drivers/block/cycle-a.ko: kernel/drivers/block/cycle-b.ko
kernel/drivers/block/cycle-b.ko: kernel/drivers/block/cycle-a.ko
kernel/drivers/x/orphan.ko: kernel/drivers/x/missing.ko
kernel/drivers/x/only-dep.ko: kernel/drivers/x/listed_only.ko
kernel/drivers/x/snd-mixed_name.ko:
";

    fn tree() -> ModuleTree {
        ModuleTree::parse(
            Path::new("/m"),
            DEP,
            "kernel/drivers/char/virtio_console.ko\n",
        )
    }

    fn names(v: &[PathBuf]) -> Vec<String> {
        v.iter()
            .map(|p| module_name(&p.to_string_lossy()))
            .collect()
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let t = tree();
        let order = t
            .load_order(&["virtio_pci", "9p", "overlay", "8021q", "virtio_console"])
            .unwrap_or_else(|e| panic!("{e}"));
        let n = names(&order);
        let pos = |m: &str| n.iter().position(|x| x == m).unwrap_or(usize::MAX);
        assert!(pos("virtio") < pos("virtio_ring"));
        assert!(pos("virtio_ring") < pos("virtio_pci"));
        assert!(pos("netfs") < pos("fscache") && pos("fscache") < pos("9p"));
        assert!(pos("llc") < pos("stp") && pos("stp") < pos("garp") && pos("garp") < pos("8021q"));
        let mut dedup = n.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), n.len(), "{n:?}");
        assert!(!n.contains(&"virtio_console".to_string()), "built in");
        // A wanted module that an earlier one already brought in comes once.
        let again = t
            .load_order(&["8021q", "llc", "stp"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names(&again), ["llc", "stp", "garp", "mrp", "8021q"]);
        assert_eq!(
            order[0],
            PathBuf::from("/m/kernel/drivers/virtio/virtio_pci_modern_dev.ko")
        );
    }

    #[test]
    fn missing_cyclic_and_dangling_modules_are_errors() {
        let t = tree();
        let e = t.load_order(&["bonding"]).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("has no bonding"));
        assert!(t.load_order(&["cycle_a"]).is_err());
        assert!(t.load_order(&["orphan"]).is_err());
        assert!(t.has_module("9p") && t.is_builtin("virtio-console"));
        // Named only as another module's dependency: no entry of its own.
        assert!(!t.has_module("listed_only"));
        assert!(t.load_order(&["only_dep"]).is_err());
        // Dashes, underscores and a mix of both in the file name.
        assert!(t.has_module("cycle_a") && t.has_module("only_dep"));
        let mixed = t
            .load_order(&["snd_mixed_name"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            mixed,
            vec![PathBuf::from("/m/kernel/drivers/x/snd-mixed_name.ko")]
        );
    }

    #[test]
    fn module_names() {
        assert_eq!(module_name("kernel/net/9p/9pnet_virtio.ko"), "9pnet_virtio");
        assert_eq!(module_name("kernel/x/foo-bar.ko.zst"), "foo_bar");
        assert_eq!(module_name("a.ko.xz"), "a");
    }

    #[test]
    fn bzimage_header_gives_the_release() {
        let mut img = vec![0u8; 0x3000];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&0x1000u16.to_le_bytes());
        let v = b"6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP\0";
        img[0x1200..0x1200 + v.len()].copy_from_slice(v);
        assert_eq!(bzimage_release(&img).as_deref(), Some("6.1.0-56-amd64"));
        img[0x202] = b'X';
        assert_eq!(bzimage_release(&img), None);
        assert_eq!(bzimage_release(b"short"), None);
    }

    #[test]
    fn default_kernel_is_the_newest_with_modules() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let boot = d.path().join("boot");
        let mods = d.path().join("modules");
        std::fs::create_dir_all(&boot).unwrap_or_else(|e| panic!("{e}"));
        for r in ["6.1.0-9-amd64", "6.1.0-10-amd64", "6.12.0-1-amd64"] {
            std::fs::write(boot.join(format!("vmlinuz-{r}")), "x")
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(default_kernel(&boot, &mods), None);
        for r in ["6.1.0-9-amd64", "6.1.0-10-amd64"] {
            std::fs::create_dir_all(mods.join(r)).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(mods.join(r).join("modules.dep"), "").unwrap_or_else(|e| panic!("{e}"));
        }
        let (p, r) = default_kernel(&boot, &mods).unwrap_or_default();
        assert_eq!(r, "6.1.0-10-amd64");
        assert_eq!(p, boot.join("vmlinuz-6.1.0-10-amd64"));
    }
}
