//! End to end on the VM source (LNST_AGENTS=vm): real QEMU virtual machines booting Debian's
//! kernel (fetched by .ci/vm-kernel.sh into .cache/vm-kernel; .ci/run exports its paths), real
//! agents over virtio-serial, real traffic over taps and bridges. Needs root and QEMU; under CI a
//! missing prerequisite fails instead of skipping. The tests run one at a time (each boots VMs).

mod common;
use common::vm::*;
use common::*;
use lnst_runner::protocol::{BondMode, BondOptions, LinkSpec, VlanProtocol};
use lnst_runner::provision::vm::{self, accel::Accel, VmOptions, VmProvisioner};
use lnst_runner::provision::Provisioner;
use lnst_runner::requirements::{HostReq, Requirements};
use lnst_runner::session::{AgentClient, ClientOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The run id of the (only) VMs running now.
fn running_vm_run_id() -> String {
    vm::vm_processes()
        .first()
        .map(|p| p.run_id.clone())
        .unwrap_or_default()
}

const PARAMS: &str = "perf_iterations=1;perf_duration=1;perf_tests=['tcp_stream'];offload_combinations=();ping_count=3;ping_interval=0.2;net_ipv4='198.18.40.0/24';net_ipv6='fd00:40::/64'";

#[test]
fn vm_simple_network_recipe_passes_on_the_guest_kernel() {
    let Some(k) = require_vm_e2e() else { return };
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let mut vars = vm_vars(&k);
    vars.extend([
        ("RECIPE", "SimpleNetworkRecipe"),
        ("RECIPE_PARAMS", PARAMS),
        ("LNST_VM_ACCEL", "auto"),
    ]);
    let out = runner(home.path(), &vars).output().unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("Overall result: PASS"), "{text}");
    // auto: one line with the choice (on this project's CI machines: tcg, KVM being unusable).
    assert!(text.contains("VM accelerator: "), "{text}");
    let accel = if text.contains("VM accelerator: kvm") {
        "kvm"
    } else {
        "tcg"
    };

    let res = home.path().join("results");
    let summary = read_json(&res.join("summary.json"));
    assert_eq!(summary["overall"], "PASS");
    let agents = &summary["tests"][0]["runs"][0]["agents"];
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let release = guest_release(&k.1);
    for h in ["host1", "host2"] {
        let a = &agents[h];
        assert_eq!(a["kernel_release"], release.as_str(), "{summary:#}");
        assert_ne!(a["kernel_release"], host_release.trim());
        assert_eq!(a["source"], "vm");
        assert_eq!(a["accelerator"], accel);
        assert_eq!(a["hostname"], h);
    }
    // Run data: one result per agent naming its kernel, with the details.
    let data = read_json(&res.join("0_SimpleNetworkRecipe/run-data-0.json"));
    let list = data.as_array().unwrap();
    for h in ["host1", "host2"] {
        let r = list
            .iter()
            .find(|r| {
                r["description"]
                    .as_str()
                    .is_some_and(|d| d.starts_with(&format!("Agent {h}: kernel {release}")))
            })
            .unwrap_or_else(|| panic!("no agent result for {h}: {data:#}"));
        assert_eq!(r["details"]["accelerator"], accel);
    }
    // Both IP versions carried traffic between the VMs.
    let flows: Vec<_> = list
        .iter()
        .filter(|r| r["measurement_type"] == "flow")
        .collect();
    assert_eq!(flows.len(), 2, "{data:#}");
    for f in flows {
        assert!(
            f["data"]["receiver_results"].as_f64().unwrap() > 0.0,
            "{f:#}"
        );
    }
    assert_no_vm_leftovers(&run_id_in(&text), &text);
    assert_nothing_to_clean_up(home.path(), &[]);
}

/// One VM through the library: an e1000e NIC (the model follows the `driver` parameter) and a
/// multi-queue virtio NIC; in it the agent creates a VLAN and a bond (8021q and bonding load on
/// demand from the modules tree), and deletes them when the recipe ends.
#[test]
fn vm_agent_creates_vlan_and_bond_on_an_e1000e_nic() {
    let Some(k) = require_vm_e2e() else { return };
    let _g = serial();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let agent = vm::check_agent_path(&agent_bin()).unwrap();
    let secret = "e2e-vm-secret-0123456789abcdef";
    let mut prov = VmProvisioner::new(VmOptions {
        run_id: lnst_runner::runner::new_run_id(),
        kernel: PathBuf::from(&k.0),
        modules_dir: PathBuf::from(&k.1),
        accel: Accel::Tcg,
        cpus: Some(2),
        memory_mib: 512,
        init: vm::find_init(&agent).unwrap(),
        agent,
        qemu: vm::find_qemu().unwrap(),
        boot_timeout: vm::default_boot_timeout(Accel::Tcg),
        agent_secret: Some(secret.into()),
        extra_append: Vec::new(),
        preload_modules: true,
        boot_kernel: vm::prepare_kernel(Path::new(&k.0)).unwrap(),
    });
    let mut reqs = Requirements::default();
    let e1000e: BTreeMap<String, String> = [("driver".to_string(), "e1000e".to_string())]
        .into_iter()
        .collect();
    reqs.hosts.insert(
        "host1".into(),
        HostReq::default()
            .with_interface("eth0", "net1", e1000e)
            .with_interface("eth1", "net2", BTreeMap::new()),
    );
    let sw = format!("lnst-{}-sw", prov.options().run_id);
    let outcome = rt.block_on(async {
        let eps = prov.provision(&reqs).await.map_err(|e| e.to_string())?;
        // The virtio NIC's tap is multi-queue, one queue per vCPU; the e1000e's is not.
        let taps = sh(&["ip", "-n", &sw, "-d", "link", "show", "type", "tun"]);
        let ep = eps.into_iter().next().ok_or("no endpoint")?;
        let macs: Vec<(String, String)> = ep
            .interfaces
            .iter()
            .map(|(id, b)| (id.clone(), b.hwaddr.clone()))
            .collect();
        let c = AgentClient::connect(
            "host1",
            ep.transport,
            Some(secret.as_bytes()),
            ClientOptions::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let ifaces = c.list_interfaces().await.map_err(|e| e.to_string())?;
        let by_mac = |mac: &str| ifaces.iter().find(|i| i.mac == mac).cloned();
        let nic0 = by_mac(&macs[0].1).ok_or(format!("no NIC with {:?}: {ifaces:?}", macs[0]))?;
        let nic1 = by_mac(&macs[1].1).ok_or(format!("no NIC with {:?}: {ifaces:?}", macs[1]))?;
        c.set_link(&nic0.name, true)
            .await
            .map_err(|e| e.to_string())?;
        c.create_link(
            "vlan10",
            LinkSpec::Vlan {
                parent: nic0.name.clone(),
                id: 10,
                protocol: VlanProtocol::default(),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        c.create_link(
            "bond0",
            LinkSpec::Bond(Box::new(BondOptions {
                mode: Some(BondMode::ActiveBackup),
                ..BondOptions::default()
            })),
        )
        .await
        .map_err(|e| e.to_string())?;
        let with_links = c.list_interfaces().await.map_err(|e| e.to_string())?;
        c.end_recipe().await.map_err(|e| e.to_string())?;
        let after = c.list_interfaces().await.map_err(|e| e.to_string())?;
        let _ = c.bye().await;
        Ok::<_, String>((
            nic0,
            nic1,
            with_links,
            after,
            c.hello().kernel_release.clone(),
            taps,
        ))
    });
    let td = rt.block_on(prov.teardown());
    let (nic0, nic1, with_links, after, release, taps) = outcome.unwrap();
    td.unwrap();
    let tap_line = |name: &str| {
        taps.lines()
            .skip_while(|l| !l.contains(&format!(" {name}: ")))
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(tap_line("tap0i1").contains("numqueues 2"), "{taps}");
    assert!(!tap_line("tap0i0").contains("multi_queue"), "{taps}");
    assert_eq!(release, guest_release(&k.1));
    assert_eq!(nic0.driver.as_deref(), Some("e1000e"), "{nic0:?}");
    assert_eq!(nic0.mac, "02:6c:6e:00:00:00");
    assert_eq!(nic1.driver.as_deref(), Some("virtio_net"), "{nic1:?}");
    let kind = |list: &[lnst_runner::protocol::InterfaceInfo], n: &str| {
        list.iter()
            .find(|i| i.name == n)
            .and_then(|i| i.kind.clone())
    };
    assert_eq!(
        kind(&with_links, "vlan10").as_deref(),
        Some("vlan"),
        "{with_links:?}"
    );
    assert_eq!(
        kind(&with_links, "bond0").as_deref(),
        Some("bond"),
        "{with_links:?}"
    );
    assert!(
        !after
            .iter()
            .any(|i| i.name == "vlan10" || i.name == "bond0"),
        "links not deleted at the end of the recipe: {after:?}"
    );
    assert_no_vm_leftovers(&prov.options().run_id, "");
}

/// Start a VM run, wait for `marker` on stderr, then `act(pid)`; returns the output.
fn vm_run_and(
    home: &Path,
    k: &(String, String),
    params: &str,
    marker: &str,
    act: impl FnOnce(u32),
) -> (std::process::Output, Duration) {
    let mut vars = vm_vars(k);
    vars.extend([
        ("RECIPE", "SimpleNetworkRecipe"),
        ("RECIPE_PARAMS", params),
        ("LNST_VM_ACCEL", "tcg"),
    ]);
    let w = Watched::start(runner(home, &vars));
    w.wait_for(marker, Duration::from_secs(180));
    let t0 = std::time::Instant::now();
    act(w.pid());
    let out = w.finish();
    (out, t0.elapsed())
}

/// Wait until `n` VMs run (the tests run one at a time: they are the runner's).
fn wait_for_vms(n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while vm::vm_processes().len() < n {
        assert!(std::time::Instant::now() < deadline, "VMs never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn vm_sigterm_during_boot_leaves_nothing() {
    let Some(k) = require_vm_e2e() else { return };
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let mut run_id = String::new();
    let (out, elapsed) = vm_run_and(
        home.path(),
        &k,
        PARAMS,
        "provisioning 2 agent(s) (vm)",
        |pid| {
            wait_for_vms(2);
            run_id = running_vm_run_id();
            std::thread::sleep(Duration::from_millis(500));
            sigterm(pid);
        },
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        elapsed < Duration::from_secs(15),
        "took {elapsed:?}\n{text}"
    );
    assert!(text.contains("interrupted by SIGTERM"), "{text}");
    assert_no_vm_leftovers(&run_id, &text);
    assert_nothing_to_clean_up(home.path(), &[]);
}

#[test]
fn vm_sigterm_during_traffic_leaves_nothing() {
    let Some(k) = require_vm_e2e() else { return };
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let params = "perf_iterations=3;perf_duration=3;perf_tests=['tcp_stream'];offload_combinations=();ip_versions=('ipv4',);ping_count=2;ping_interval=0.2;net_ipv4='198.18.41.0/24';net_ipv6='fd00:41::/64'";
    let mut run_id = String::new();
    let (out, elapsed) = vm_run_and(home.path(), &k, params, "iter 1/3", |pid| {
        run_id = running_vm_run_id();
        // The second iteration's iperf3 runs now.
        std::thread::sleep(Duration::from_millis(500));
        sigterm(pid);
    });
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        elapsed < Duration::from_secs(20),
        "took {elapsed:?}\n{text}"
    );
    let summary = read_json(&home.path().join("results/summary.json"));
    assert!(summary.to_string().contains("SIGTERM"), "{summary}");
    assert_no_vm_leftovers(&run_id, &text);
    assert_nothing_to_clean_up(home.path(), &[]);
}

#[test]
fn vm_cleanup_removes_the_vms_of_a_sigkilled_run() {
    let Some(k) = require_vm_e2e() else { return };
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let mut run_id = String::new();
    let (out, _) = vm_run_and(
        home.path(),
        &k,
        PARAMS,
        "provisioning 2 agent(s) (vm)",
        |pid| {
            wait_for_vms(2);
            run_id = running_vm_run_id();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        },
    );
    assert_eq!(out.status.code(), None, "killed by a signal");
    // The VMs outlive their runner (their own process group), still booting.
    let left: Vec<_> = vm::vm_processes()
        .into_iter()
        .filter(|p| p.run_id == run_id)
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(Path::new(&format!("/run/lnst-runner/vm-{run_id}")).exists());
    let c = runner(home.path(), &[]).arg("cleanup").output().unwrap();
    let text = output_text(&c);
    assert_eq!(c.status.code(), Some(0), "{text}");
    for p in &left {
        assert!(
            text.contains(&format!("removed VM {} (pid {})", p.name, p.pid)),
            "{text}"
        );
    }
    assert!(
        text.contains(&format!("removed lnst-{run_id}-sw")),
        "{text}"
    );
    assert_no_vm_leftovers(&run_id, &text);
    assert_nothing_to_clean_up(home.path(), &[]);
}

/// After its agent has started, a VM whose runner was SIGKILLed ends by itself (its init sees
/// the control channel close); cleanup then finds only the namespace and the run directory.
#[test]
fn vm_of_a_sigkilled_runner_stops_by_itself() {
    let Some(k) = require_vm_e2e() else { return };
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let mut run_id = String::new();
    let (out, _) = vm_run_and(home.path(), &k, PARAMS, "agents ready", |pid| {
        run_id = running_vm_run_id();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    });
    assert_eq!(out.status.code(), None, "killed by a signal");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !vm::vm_processes().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the VMs of a dead runner keep running: {:?}",
            vm::vm_processes()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let c = runner(home.path(), &[]).arg("cleanup").output().unwrap();
    let text = output_text(&c);
    assert!(!text.contains("removed VM lnst-"), "{text}");
    assert!(
        text.contains(&format!("removed lnst-{run_id}-sw")),
        "{text}"
    );
    assert_no_vm_leftovers(&run_id, &text);
}

#[test]
fn vm_bad_kernel_or_modules_is_exit_2_before_anything_starts() {
    if !require(is_root(), "needs root") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let modules = home.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    let ms = modules.to_string_lossy().to_string();
    // Readable, large enough, not a bzImage: its release is unknown, so the modules tree must
    // be given and valid.
    let fake = home.path().join("vmlinuz");
    std::fs::write(&fake, vec![0u8; 8192]).unwrap();
    let fs = fake.to_string_lossy().to_string();
    for (vars, culprit) in [
        (
            vec![
                ("LNST_VM_KERNEL", "/nonexistent/bzImage"),
                ("LNST_VM_MODULES", ms.as_str()),
            ],
            "LNST_VM_KERNEL: kernel /nonexistent/bzImage: ",
        ),
        (
            vec![
                ("LNST_VM_KERNEL", fs.as_str()),
                ("LNST_VM_MODULES", ms.as_str()),
            ],
            "LNST_VM_MODULES: modules tree ",
        ),
        (
            vec![("LNST_VM_KERNEL", fs.as_str())],
            "LNST_VM_MODULES: not set, and the release of ",
        ),
        (
            vec![("LNST_VM_KERNEL", fs.as_str()), ("LNST_VM_CPUS", "0")],
            "LNST_VM_CPUS: ",
        ),
    ] {
        let mut all = vec![("LNST_AGENTS", "vm"), ("RECIPE", "SimpleNetworkRecipe")];
        all.extend(vars);
        let out = runner(home.path(), &all).output().unwrap();
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{text}");
        assert!(
            err.starts_with(&format!("lnst-runner: {culprit}")),
            "{text}"
        );
        assert!(
            !home.path().join("results/summary.json").exists(),
            "nothing ran"
        );
    }
}

/// A NIC model QEMU does not have (igb arrived in QEMU 8.0) or no model at all: the test fails
/// with a line naming it, before any VM starts.
#[test]
fn vm_nic_model_not_in_qemu_is_a_clear_error() {
    let Some(k) = require_vm_e2e() else { return };
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("pool")).unwrap();
    let help = std::process::Command::new("qemu-system-x86_64")
        .args(["-machine", "none", "-device", "help"])
        .output()
        .unwrap();
    let has_igb = String::from_utf8_lossy(&help.stdout).contains("name \"igb\"");
    for (driver, expect) in [
        ("igb", "NIC model igb is not available in this QEMU"),
        ("ice", "NIC driver \"ice\" has no QEMU model"),
    ] {
        if driver == "igb" && has_igb {
            continue;
        }
        let params = format!("{PARAMS};driver='{driver}'");
        let mut vars = vm_vars(&k);
        vars.extend([
            ("RECIPE", "SimpleNetworkRecipe"),
            ("RECIPE_PARAMS", params.as_str()),
            ("LNST_VM_ACCEL", "tcg"),
        ]);
        let out = runner(home.path(), &vars).output().unwrap();
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains(expect), "{text}");
        assert!(!text.contains("agents ready"), "{text}");
        assert_eq!(vm_run_dirs(), Vec::<String>::new());
    }
}
