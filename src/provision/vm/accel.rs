//! The accelerator: `auto` uses KVM only when a probe has seen KVM execute guest code the way a
//! booting kernel does, else TCG. Opening /dev/kvm and creating a VM is not enough (on hosts
//! where nested virtualisation does not work, both succeed and every guest then hangs), and
//! neither is real-mode code: on such a host a kernel's real-mode setup runs and the guest hangs
//! when it leaves real mode, and there are hosts (a KVM that emulates its guests instruction by
//! instruction, as this project's CI machine has) where every mode works but a guest runs about
//! a thousand times slower than native, so a kernel's boot never ends. So the probe's guest walks
//! the path a bzImage walks, from the reset vector (real mode) to protected mode, then with PAE
//! paging to long mode, and there it runs twenty million instructions (a counted loop) before it
//! writes a byte to an I/O port and halts. The probe checks the port write and the halt, and it
//! must all happen within [`PROBE_TIMEOUT`]: native KVM needs about 10 ms, TCG would need about
//! 100 ms, the emulating KVM about 15 s. It runs in a forked child, killed at the timeout, so a
//! vCPU that never comes back costs the timeout, never a hang.

use std::time::Duration;

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `LNST_VM_ACCEL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

impl AccelChoice {
    pub fn parse(s: &str) -> Option<AccelChoice> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Some(AccelChoice::Auto),
            "kvm" => Some(AccelChoice::Kvm),
            "tcg" => Some(AccelChoice::Tcg),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            AccelChoice::Auto => "auto",
            AccelChoice::Kvm => "kvm",
            AccelChoice::Tcg => "tcg",
        }
    }
}

/// How long the probe's guest may take before KVM is declared unusable (see the module docs).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Iterations of the probe guest's loop (two instructions each).
pub const PROBE_LOOP: u32 = 10_000_000;

/// Outcome of the KVM probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// KVM ran the probe's guest code.
    Works,
    /// Why KVM is not used.
    Unusable(String),
}

/// Exit codes of the probe child, one per step that can fail.
const STEPS: &[&str] = &[
    "ran the guest code",
    "cannot open /dev/kvm",
    "KVM_GET_API_VERSION is not 12",
    "KVM_CREATE_VM failed",
    "cannot map guest memory",
    "KVM_SET_USER_MEMORY_REGION failed",
    "KVM_CREATE_VCPU failed",
    "KVM_GET_VCPU_MMAP_SIZE failed",
    "cannot map the vCPU run structure",
    "KVM_RUN failed",
    "the guest's port write did not arrive",
    "KVM_RUN failed after the port write",
    "the guest did not halt",
    "KVM_GET_SUPPORTED_CPUID failed",
    "KVM_SET_CPUID2 failed",
];

/// Exit code of the probe child when the guest stopped before its port write: this plus the
/// KVM exit reason.
const EXIT_REASON_BASE: i32 = 100;

/// Why the probe guest stopped (KVM exit reasons of linux/kvm.h).
fn exit_reason_name(r: i32) -> String {
    match r {
        8 => "a triple fault (KVM_EXIT_SHUTDOWN) while switching to long mode".into(),
        9 => "KVM_EXIT_FAIL_ENTRY".into(),
        17 => "KVM_EXIT_INTERNAL_ERROR".into(),
        6 => "an access outside its memory (KVM_EXIT_MMIO)".into(),
        r => format!("KVM exit reason {r}"),
    }
}

// KVM ioctl numbers (linux/kvm.h; _IO/_IOW with type 0xAE).
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
const KVM_GET_VCPU_MMAP_SIZE: libc::c_ulong = 0xAE04;
const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = 0x4020_AE46;
const KVM_RUN: libc::c_ulong = 0xAE80;
const KVM_GET_SUPPORTED_CPUID: libc::c_ulong = 0xC008_AE05;
const KVM_SET_CPUID2: libc::c_ulong = 0x4008_AE90;
/// Room for this many `struct kvm_cpuid_entry2` (40 bytes each) after the 8-byte header.
const CPUID_ENTRIES: usize = 256;
const CPUID_BUF: usize = 8 + 40 * CPUID_ENTRIES;
const KVM_EXIT_IO: u32 = 2;
const KVM_EXIT_HLT: u32 = 5;
/// Guest physical page holding the reset vector (0xfffffff0: CS base 0xffff0000 + IP 0xfff0).
const RESET_PAGE: u64 = 0xffff_f000;
/// Size of the probe's low memory (code at 0x1000, GDT at 0x1800, page tables at 0x2000-0x4fff).
const LOW_MEM: usize = 0x1_0000;

/// At the reset vector: `ljmp $0x0000, $0x1000` (to the probe's code, still in real mode).
const RESET_CODE: [u8; 5] = [0xea, 0x00, 0x10, 0x00, 0x00];

/// The probe's code at 0x1000 (assembled from the listing; offsets on the left).
#[rustfmt::skip]
const PROBE_CODE: [u8; 0x5f] = [
    // .code16
    0xfa,                               // 00 cli
    0x0f, 0x01, 0x16, 0x20, 0x18,       // 01 lgdt [0x1820]
    0x0f, 0x20, 0xc0,                   // 06 mov eax, cr0
    0x0c, 0x01,                         // 09 or al, 1 (PE)
    0x0f, 0x22, 0xc0,                   // 0b mov cr0, eax
    0x66, 0xea, 0x16, 0x10, 0x00, 0x00, 0x08, 0x00, // 0e ljmpl 0x08:0x1016
    // .code32
    0x66, 0xb8, 0x10, 0x00,             // 16 mov ax, 0x10
    0x8e, 0xd8,                         // 1a mov ds, ax
    0x8e, 0xc0,                         // 1c mov es, ax
    0x8e, 0xd0,                         // 1e mov ss, ax
    0x0f, 0x20, 0xe0,                   // 20 mov eax, cr4
    0x83, 0xc8, 0x20,                   // 23 or eax, 0x20 (PAE)
    0x0f, 0x22, 0xe0,                   // 26 mov cr4, eax
    0xb8, 0x00, 0x20, 0x00, 0x00,       // 29 mov eax, 0x2000 (PML4)
    0x0f, 0x22, 0xd8,                   // 2e mov cr3, eax
    0xb9, 0x80, 0x00, 0x00, 0xc0,       // 31 mov ecx, 0xc0000080 (EFER)
    0x0f, 0x32,                         // 36 rdmsr
    0x0d, 0x00, 0x01, 0x00, 0x00,       // 38 or eax, 0x100 (LME)
    0x0f, 0x30,                         // 3d wrmsr
    0x0f, 0x20, 0xc0,                   // 3f mov eax, cr0
    0x0d, 0x00, 0x00, 0x00, 0x80,       // 42 or eax, 0x80000000 (PG)
    0x0f, 0x22, 0xc0,                   // 47 mov cr0, eax
    0xea, 0x51, 0x10, 0x00, 0x00, 0x18, 0x00, // 4a ljmp 0x18:0x1051
    // .code64
    0xb9, 0x80, 0x96, 0x98, 0x00,       // 51 mov ecx, PROBE_LOOP
    0xff, 0xc9,                         // 56 dec ecx
    0x75, 0xfc,                         // 58 jnz 0x56
    0xb0, 0x42,                         // 5a mov al, 0x42
    0xe6, 0x10,                         // 5c out 0x10, al
    0xf4,                               // 5e hlt
];

/// GDT at 0x1800: null, 32-bit code (0x08), data (0x10), 64-bit code (0x18); its descriptor
/// (limit, base) at 0x1820.
#[rustfmt::skip]
const GDT: [u8; 0x26] = [
    0, 0, 0, 0, 0, 0, 0, 0,
    0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xcf, 0x00,
    0xff, 0xff, 0x00, 0x00, 0x00, 0x92, 0xcf, 0x00,
    0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xaf, 0x00,
    0x1f, 0x00, 0x00, 0x18, 0x00, 0x00,
];

/// Lay the probe's guest out in `low` (LOW_MEM bytes at guest address 0): code, GDT, and page
/// tables identity-mapping the first 2 MiB (PML4 0x2000 → PDPT 0x3000 → PD 0x4000, 2 MiB page).
fn lay_out(low: &mut [u8], iterations: u32) {
    low[0x1000..0x1000 + PROBE_CODE.len()].copy_from_slice(&PROBE_CODE);
    low[0x1052..0x1056].copy_from_slice(&iterations.max(1).to_le_bytes());
    low[0x1800..0x1800 + GDT.len()].copy_from_slice(&GDT);
    low[0x2000..0x2008].copy_from_slice(&(0x3000u64 | 3).to_le_bytes());
    low[0x3000..0x3008].copy_from_slice(&(0x4000u64 | 3).to_le_bytes());
    low[0x4000..0x4008].copy_from_slice(&0x83u64.to_le_bytes());
}

/// The probe guest's memory, mapped and filled before the fork.
struct GuestMem {
    low: *mut u8,
    reset: *mut u8,
    /// `struct kvm_cpuid2` with room for [`CPUID_ENTRIES`]: the guest must see the CPU's
    /// features (long mode above all) or its EFER write faults even where KVM works.
    cpuid: *mut u8,
}

impl GuestMem {
    fn new(iterations: u32) -> Option<GuestMem> {
        let map = |len: usize| {
            // SAFETY: an anonymous private mapping; checked below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            (p != libc::MAP_FAILED).then_some(p.cast::<u8>())
        };
        let low = map(LOW_MEM)?;
        let Some(reset) = map(4096) else {
            // SAFETY: unmapping what was mapped above.
            unsafe { libc::munmap(low.cast(), LOW_MEM) };
            return None;
        };
        let Some(cpuid) = map(CPUID_BUF) else {
            // SAFETY: unmapping what was mapped above.
            unsafe {
                libc::munmap(low.cast(), LOW_MEM);
                libc::munmap(reset.cast(), 4096);
            }
            return None;
        };
        // SAFETY: both mappings are as long as the slices made of them, and zero-filled.
        unsafe {
            lay_out(std::slice::from_raw_parts_mut(low, LOW_MEM), iterations);
            std::slice::from_raw_parts_mut(reset, 4096)[0xff0..0xff0 + RESET_CODE.len()]
                .copy_from_slice(&RESET_CODE);
            std::slice::from_raw_parts_mut(cpuid, 4)
                .copy_from_slice(&(CPUID_ENTRIES as u32).to_le_bytes());
        }
        Some(GuestMem { low, reset, cpuid })
    }
}

impl Drop for GuestMem {
    fn drop(&mut self) {
        // SAFETY: the mappings made by new().
        unsafe {
            libc::munmap(self.low.cast(), LOW_MEM);
            libc::munmap(self.reset.cast(), 4096);
            libc::munmap(self.cpuid.cast(), CPUID_BUF);
        }
    }
}

#[repr(C)]
struct MemoryRegion {
    slot: u32,
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
}

/// The probe's steps; runs in the forked child, so only system calls on prepared data.
/// Returns the index into [`STEPS`].
fn probe_in_child(dev: &std::ffi::CStr, mem: &GuestMem) -> i32 {
    // SAFETY: raw system calls on fds and memory owned by this function; the child exits
    // right after, so nothing is released.
    unsafe {
        let kvm = libc::open(dev.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if kvm < 0 {
            return 1;
        }
        if libc::ioctl(kvm, KVM_GET_API_VERSION, 0) != 12 {
            return 2;
        }
        let vm = libc::ioctl(kvm, KVM_CREATE_VM, 0);
        if vm < 0 {
            return 3;
        }
        // Guest memory is laid out before the fork (no allocation in the child): `low` is the
        // probe's low memory, `reset` the page holding the reset vector.
        let regions = [
            MemoryRegion {
                slot: 0,
                flags: 0,
                guest_phys_addr: 0,
                memory_size: LOW_MEM as u64,
                userspace_addr: mem.low as u64,
            },
            MemoryRegion {
                slot: 1,
                flags: 0,
                guest_phys_addr: RESET_PAGE,
                memory_size: 4096,
                userspace_addr: mem.reset as u64,
            },
        ];
        for r in &regions {
            if libc::ioctl(vm, KVM_SET_USER_MEMORY_REGION, r) < 0 {
                return 5;
            }
        }
        let vcpu = libc::ioctl(vm, KVM_CREATE_VCPU, 0);
        if vcpu < 0 {
            return 6;
        }
        if libc::ioctl(kvm, KVM_GET_SUPPORTED_CPUID, mem.cpuid) < 0 {
            return 13;
        }
        if libc::ioctl(vcpu, KVM_SET_CPUID2, mem.cpuid) < 0 {
            return 14;
        }
        let size = libc::ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
        if size < 64 {
            return 7;
        }
        let run = libc::mmap(
            std::ptr::null_mut(),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            vcpu,
            0,
        );
        if run == libc::MAP_FAILED {
            return 8;
        }
        let run = run.cast::<u8>();
        // struct kvm_run: exit_reason at 8; io { direction u8, size u8, port u16, count u32,
        // data_offset u64 } at 32.
        let exit_reason = || std::ptr::read_volatile(run.add(8).cast::<u32>());
        if libc::ioctl(vcpu, KVM_RUN, 0) < 0 {
            return 9;
        }
        let port = std::ptr::read_volatile(run.add(34).cast::<u16>());
        let data_off = std::ptr::read_volatile(run.add(40).cast::<u64>());
        let value = if data_off > 0 && data_off < size as u64 {
            std::ptr::read_volatile(run.add(data_off as usize))
        } else {
            0
        };
        if exit_reason() != KVM_EXIT_IO {
            return EXIT_REASON_BASE + (exit_reason() as i32).min(100);
        }
        if port != 0x10 || value != 0x42 {
            return 10;
        }
        if libc::ioctl(vcpu, KVM_RUN, 0) < 0 {
            return 11;
        }
        if exit_reason() != KVM_EXIT_HLT {
            return 12;
        }
        0
    }
}

/// Run the probe against `dev` (normally `/dev/kvm`), bounded by `timeout`.
pub fn probe_kvm(dev: &str, timeout: Duration) -> ProbeResult {
    probe_kvm_loop(dev, timeout, PROBE_LOOP)
}

/// The probe with `iterations` of its loop.
fn probe_kvm_loop(dev: &str, timeout: Duration, iterations: u32) -> ProbeResult {
    let Ok(cdev) = std::ffi::CString::new(dev) else {
        return ProbeResult::Unusable(format!("bad device path {dev:?}"));
    };
    if let Err(e) = std::fs::metadata(dev) {
        return ProbeResult::Unusable(format!("{dev}: {e}"));
    }
    let Some(mem) = GuestMem::new(iterations) else {
        return ProbeResult::Unusable("cannot map the probe's guest memory".into());
    };
    // SAFETY: the child only makes system calls on data prepared before the fork and leaves
    // with _exit; it never returns into the parent's code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return ProbeResult::Unusable(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let code = probe_in_child(&cdev, &mem);
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) {
                let code = libc::WEXITSTATUS(status);
                return if code == 0 {
                    ProbeResult::Works
                } else if code >= EXIT_REASON_BASE {
                    ProbeResult::Unusable(format!(
                        "the probe's guest stopped with {}",
                        exit_reason_name(code - EXIT_REASON_BASE)
                    ))
                } else {
                    ProbeResult::Unusable(
                        STEPS
                            .get(code as usize)
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| format!("probe exited with {code}")),
                    )
                };
            }
            return ProbeResult::Unusable(format!("the probe died (status {status:#x})"));
        }
        if r < 0 {
            return ProbeResult::Unusable(format!(
                "waiting for the probe: {}",
                std::io::Error::last_os_error()
            ));
        }
        if std::time::Instant::now() >= deadline {
            // SAFETY: our own child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return ProbeResult::Unusable(format!(
                "the probe's guest did not run {} million instructions within {} ms (KVM here does not execute guest code at native speed)",
                2 * PROBE_LOOP / 1_000_000,
                timeout.as_millis()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Decide the accelerator for `choice`; `auto` logs one line with the outcome. `kvm` is taken
/// as asked (a guest that does not boot is then a bounded, named error).
pub fn choose(choice: AccelChoice) -> Accel {
    match choice {
        AccelChoice::Kvm => Accel::Kvm,
        AccelChoice::Tcg => Accel::Tcg,
        AccelChoice::Auto => match probe_kvm("/dev/kvm", PROBE_TIMEOUT) {
            ProbeResult::Works => {
                tracing::info!("VM accelerator: kvm (the KVM probe ran guest code)");
                Accel::Kvm
            }
            ProbeResult::Unusable(why) => {
                tracing::info!("VM accelerator: tcg (KVM not used: {why})");
                Accel::Tcg
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse() {
        assert_eq!(AccelChoice::parse("auto"), Some(AccelChoice::Auto));
        assert_eq!(AccelChoice::parse(" KVM "), Some(AccelChoice::Kvm));
        assert_eq!(AccelChoice::parse("tcg"), Some(AccelChoice::Tcg));
        assert_eq!(AccelChoice::parse(""), Some(AccelChoice::Auto));
        assert_eq!(AccelChoice::parse("hvf"), None);
    }

    #[test]
    fn probe_guest_jumps_land_on_its_labels() {
        // ljmpl 0x08:pm32 and ljmp 0x18:lm64 name the offsets of the 32- and 64-bit code.
        assert_eq!(PROBE_CODE[0x0e..0x10], [0x66, 0xea]);
        let pm32 = u32::from_le_bytes([
            PROBE_CODE[0x10],
            PROBE_CODE[0x11],
            PROBE_CODE[0x12],
            PROBE_CODE[0x13],
        ]);
        assert_eq!(pm32, 0x1016);
        assert_eq!(PROBE_CODE[0x16..0x18], [0x66, 0xb8], "mov ax at pm32");
        let lm64 = u32::from_le_bytes([
            PROBE_CODE[0x4b],
            PROBE_CODE[0x4c],
            PROBE_CODE[0x4d],
            PROBE_CODE[0x4e],
        ]);
        assert_eq!(lm64, 0x1051);
        let n = u32::from_le_bytes([
            PROBE_CODE[0x52],
            PROBE_CODE[0x53],
            PROBE_CODE[0x54],
            PROBE_CODE[0x55],
        ]);
        assert_eq!((PROBE_CODE[0x51], n), (0xb9, PROBE_LOOP));
        // jnz rel8 -4 from the end of the jnz (0x5a) is the dec at 0x56.
        assert_eq!(0x5a - 4, 0x56);
        assert_eq!(
            PROBE_CODE[0x56..],
            [0xff, 0xc9, 0x75, 0xfc, 0xb0, 0x42, 0xe6, 0x10, 0xf4]
        );
        let mut low = vec![0u8; LOW_MEM];
        lay_out(&mut low, PROBE_LOOP);
        assert_eq!(low[0x1051..0x105f], PROBE_CODE[0x51..]);
        // lgdt [0x1820] reads limit 0x1f, base 0x1800; the 64-bit code segment has L set.
        assert_eq!(low[0x1820..0x1826], [0x1f, 0, 0, 0x18, 0, 0]);
        assert_eq!(low[0x1800 + 0x18 + 6], 0xaf);
        assert_eq!(low[0x2000], 0x03);
        assert_eq!(low[0x2001], 0x30);
        assert_eq!(low[0x4000], 0x83);
    }

    #[test]
    fn probe_guest_reaches_long_mode_where_kvm_runs_guest_code_at_all() {
        // With a short loop even an emulating KVM finishes: this checks the guest's path from
        // the reset vector to long mode, its port write and its halt, on any host with KVM.
        if std::fs::File::open("/dev/kvm").is_err() {
            eprintln!("no /dev/kvm here: nothing to check");
            return;
        }
        assert_eq!(
            probe_kvm_loop("/dev/kvm", Duration::from_secs(5), 1000),
            ProbeResult::Works
        );
    }

    #[test]
    fn probe_of_a_missing_device_is_unusable_at_once() {
        let t = std::time::Instant::now();
        let r = probe_kvm("/nonexistent/kvm", PROBE_TIMEOUT);
        assert!(matches!(r, ProbeResult::Unusable(ref m) if m.contains("/nonexistent/kvm")));
        assert!(t.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn probe_of_a_device_that_is_not_kvm_is_unusable() {
        // /dev/null opens, but its ioctls fail: the probe names the step.
        let r = probe_kvm("/dev/null", PROBE_TIMEOUT);
        assert_eq!(
            r,
            ProbeResult::Unusable("KVM_GET_API_VERSION is not 12".into())
        );
    }

    #[test]
    fn probe_never_takes_much_longer_than_its_timeout() {
        // Whatever KVM does on this machine (works, fails, hangs), the answer comes in time.
        let t = std::time::Instant::now();
        let r = probe_kvm("/dev/kvm", PROBE_TIMEOUT);
        eprintln!("KVM probe on this machine: {r:?} in {:?}", t.elapsed());
        assert!(
            t.elapsed() < PROBE_TIMEOUT + Duration::from_millis(500),
            "{r:?}"
        );
    }
}
