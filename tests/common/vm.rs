//! VM end-to-end helpers: the guest kernel, the prerequisites, and the leftover checks.
use super::*;
use lnst_runner::provision::vm;
use std::path::Path;

/// The guest kernel and its modules: LNST_VM_KERNEL/LNST_VM_MODULES, or the cache of
/// .ci/vm-kernel.sh.
pub fn vm_kernel() -> Option<(String, String)> {
    if let (Ok(k), Ok(m)) = (
        std::env::var("LNST_VM_KERNEL"),
        std::env::var("LNST_VM_MODULES"),
    ) {
        return Some((k, m));
    }
    let env = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/vm-kernel/env");
    let text = std::fs::read_to_string(env).ok()?;
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    Some((get("LNST_VM_KERNEL")?, get("LNST_VM_MODULES")?))
}

pub fn require_vm_e2e() -> Option<(String, String)> {
    if !(require_netns_e2e()
        && require(
            have("qemu-system-x86_64"),
            "qemu-system-x86_64 is not installed",
        )
        && require(have("modprobe"), "kmod (modprobe) is not installed"))
    {
        return None;
    }
    let k = vm_kernel();
    let ok = k
        .as_ref()
        .is_some_and(|(k, m)| Path::new(k).is_file() && Path::new(m).join("modules.dep").is_file());
    if !require(
        ok,
        "no VM kernel: run .ci/vm-kernel.sh (or set LNST_VM_KERNEL and LNST_VM_MODULES)",
    ) {
        return None;
    }
    k
}

/// The release of the guest kernel: the last component of the modules tree path.
pub fn guest_release(modules: &str) -> String {
    Path::new(modules)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn vm_vars(k: &(String, String)) -> Vec<(&str, &str)> {
    vec![
        ("LNST_AGENTS", "vm"),
        ("LNST_VM_KERNEL", k.0.as_str()),
        ("LNST_VM_MODULES", k.1.as_str()),
    ]
}

/// Run directories of VM runs.
pub fn vm_run_dirs() -> Vec<String> {
    std::fs::read_dir("/run/lnst-runner")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("vm-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Nothing of run `run_id` is left: no QEMU process, run directory, namespace (switch with its
/// bridges and taps) or state file of that run (other runs on the machine have their own).
pub fn assert_no_vm_leftovers(run_id: &str, text: &str) {
    assert!(!run_id.is_empty(), "no run id\n{text}");
    let ours: Vec<_> = vm::vm_processes()
        .into_iter()
        .filter(|p| p.run_id == run_id)
        .collect();
    assert_eq!(ours, Vec::new(), "QEMU processes left\n{text}");
    let dirs: Vec<String> = vm_run_dirs()
        .into_iter()
        .filter(|d| d.contains(run_id))
        .collect();
    assert_eq!(dirs, Vec::<String>::new(), "run directories left\n{text}");
    assert_eq!(
        netns_with_prefix(&format!("lnst-{run_id}-")),
        Vec::<String>::new(),
        "namespaces left\n{text}"
    );
    assert!(
        !Path::new(&format!("/run/lnst-runner/{run_id}.json")).exists(),
        "state file left\n{text}"
    );
}

/// The run id in the human summary's match description (`uses "lnst-<run>-host1"`).
pub fn run_id_in(text: &str) -> String {
    text.split("uses \"lnst-")
        .nth(1)
        .and_then(|r| r.split('-').next())
        .unwrap_or_default()
        .to_string()
}
