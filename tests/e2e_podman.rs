//! End to end with Podman: the runner on the host driving agent containers through the API,
//! the controller image doing the same from a container (`--network=host`, socket mounted),
//! the controller image against a read-only mounted pool, interruption and leftovers, and the
//! exit-2 preflight errors. Needs the Podman API service and the images that `.ci/run` builds
//! (`container_files/build-images.sh`). The `podman` CLI is used only by the tests themselves.

mod common;
use common::lab::*;
use common::podman::*;
use common::*;
use std::time::Duration;

const PARAMS: &str = "perf_iterations=1;perf_duration=2;perf_tests=['tcp_stream'];offload_combinations=();net_ipv4='198.18.24.0/24';net_ipv6='fd00:24::/64';ping_count=3;ping_interval=0.2";

fn assert_clean() {
    let (c, n) = leftovers();
    assert!(
        c.is_empty() && n.is_empty(),
        "left behind: containers [{c}] networks [{n}]"
    );
}

#[test]
fn runner_on_host_with_podman_agents_passes() {
    if !require_podman() {
        return;
    }
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    let out = runner(
        home.path(),
        &[
            ("RECIPE", "SimpleNetworkRecipe"),
            ("RECIPE_PARAMS", PARAMS),
            ("PODMAN_URI", URI),
            ("IMAGE_NAME", "lnst-agent"),
        ],
    )
    .output()
    .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let summary = read_json(&home.path().join("results/summary.json"));
    assert_eq!(summary["overall"], "PASS");
    let data = read_json(
        &home
            .path()
            .join("results/0_SimpleNetworkRecipe/run-data-0.json"),
    );
    let flows: Vec<_> = data
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["measurement_type"] == "flow")
        .collect();
    assert_eq!(flows.len(), 2, "ipv4 and ipv6 tcp_stream");
    assert!(flows
        .iter()
        .all(|f| f["data"]["generator_results"].as_f64().unwrap() > 0.0));
    assert_clean();
}

#[test]
fn controller_image_drives_podman_through_the_mounted_socket() {
    if !require_podman() {
        return;
    }
    let _g = serial();
    let results = tempfile::tempdir().unwrap();
    let vol = format!("{}:/root/.lnst/results", results.path().display());
    let sock = format!("{SOCK}:{SOCK}");
    let out = podman_cli(&[
        "run",
        "--rm",
        "--network=host",
        "-v",
        &sock,
        "-v",
        &vol,
        "-e",
        "RECIPE=SimpleNetworkRecipe",
        "-e",
        &format!("RECIPE_PARAMS={PARAMS}"),
        "-e",
        &format!("PODMAN_URI={URI}"),
        "-e",
        "IMAGE_NAME=lnst-agent",
        "localhost/lnst_controller",
    ]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let summary = read_json(&results.path().join("summary.json"));
    assert_eq!(summary["overall"], "PASS");
    assert!(results.path().join("results.zip").exists());
    assert_clean();
}

#[test]
fn controller_image_with_read_only_pool_passes() {
    if !require_podman() {
        return;
    }
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    let secret = home.path().join("secret");
    std::fs::write(&secret, "image-pool-secret").unwrap();
    let lab = build_lab(&format!("{}", (std::process::id() + 7) % 10000), &secret);
    let pool = home.path().join("pool");
    write_pool(&pool, &lab, &password_security("image-pool-secret"));
    let results = home.path().join("results");
    std::fs::create_dir_all(&results).unwrap();
    let out = podman_cli(&[
        "run", "--rm", "--network=host",
        "-v", &format!("{}:/root/.lnst/pool:ro", pool.display()),
        "-v", &format!("{}:/root/.lnst/results", results.display()),
        "-e", "RECIPE=SimpleNetworkRecipe",
        "-e", "RECIPE_PARAMS=perf_iterations=1;perf_duration=1;perf_tests=['tcp_stream'];offload_combinations=();ip_versions=('ipv4',);net_ipv4='198.18.25.0/24';net_ipv6='fd00:25::/64';ping_count=2;ping_interval=0.2",
        "localhost/lnst_controller",
    ]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(read_json(&results.join("summary.json"))["overall"], "PASS");
    drop(lab);
}

/// Start a Podman run with long measurements on 198.18.`net`.0/24 and fd00:`net`::/64, and
/// wait until its containers exist.
fn podman_run_with_containers(home: &std::path::Path, net: u8) -> std::process::Child {
    let params = format!(
        "perf_iterations=3;perf_duration=5;perf_tests=['tcp_stream'];offload_combinations=();\
         ip_versions=('ipv4',);net_ipv4='198.18.{net}.0/24';net_ipv6='fd00:{net}::/64';\
         ping_count=20;ping_interval=0.2"
    );
    let mut child = runner(
        home,
        &[
            ("RECIPE", "SimpleNetworkRecipe"),
            ("RECIPE_PARAMS", &params),
            ("PODMAN_URI", URI),
        ],
    )
    .stderr(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .spawn()
    .unwrap();
    for _ in 0..100 {
        if !leftovers().0.is_empty() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the runner never created its containers");
}

#[test]
fn sigterm_during_a_podman_run_leaves_nothing() {
    if !require_podman() {
        return;
    }
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    let mut child = podman_run_with_containers(home.path(), 26);
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    assert_clean();
    assert_nothing_to_clean_up(home.path(), &[("PODMAN_URI", URI)]);
}

/// SIGKILL gives no teardown: the agents see their stdio close and exit, the containers and the
/// network stay, and `lnst-runner cleanup` removes them — without PODMAN_URI when the engine is
/// on the default rootful socket.
#[test]
fn sigkilled_podman_run_is_removed_by_cleanup() {
    if !require_podman() {
        return;
    }
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    let mut child = podman_run_with_containers(home.path(), 28);
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    let (containers, networks) = leftovers();
    assert!(
        !containers.is_empty() && !networks.is_empty(),
        "a killed run leaves its containers and network: {containers:?} {networks:?}"
    );
    // No PODMAN_URI: the engine is on the default rootful socket (URI), which cleanup finds.
    let vars: &[(&str, &str)] = &[];
    let c = runner(home.path(), vars).arg("cleanup").output().unwrap();
    let text = output_text(&c);
    assert_eq!(c.status.code(), Some(0), "{text}");
    for name in containers.lines().chain(networks.lines()) {
        assert!(
            text.contains(&format!("removed {name}")),
            "{name} not removed: {text}"
        );
    }
    assert_clean();
    assert_nothing_to_clean_up(home.path(), vars);
}

#[test]
fn missing_image_and_wrong_socket_are_exit_2() {
    if !require_podman() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = runner(
        home.path(),
        &[
            ("RECIPE", "SimpleNetworkRecipe"),
            ("PODMAN_URI", URI),
            ("IMAGE_NAME", "lnst-no-such-image"),
        ],
    )
    .output()
    .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lnst-no-such-image"), "{text}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {text}");

    let out = runner(
        home.path(),
        &[
            ("RECIPE", "SimpleNetworkRecipe"),
            ("PODMAN_URI", "unix:///run/podman/no-such.sock"),
        ],
    )
    .output()
    .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such.sock"),
        "{text}"
    );
    assert_clean();
}

#[test]
fn sigterm_in_provision_configure_and_teardown_leaves_nothing() {
    if !require_podman() {
        return;
    }
    let _g = serial();
    let phases = [
        ("provision", "provisioning "),
        ("configure", "configuring the test network"),
        ("teardown", "tearing down the podman agents"),
    ];
    for (phase, marker) in phases {
        let home = tempfile::tempdir().unwrap();
        let w = Watched::start(runner(
            home.path(),
            &[
                ("RECIPE", "SimpleNetworkRecipe"),
                ("RECIPE_PARAMS", "perf_iterations=1;perf_duration=1;perf_tests=['tcp_stream'];offload_combinations=();net_ipv4='198.18.27.0/24';net_ipv6='fd00:27::/64';ping_count=2;ping_interval=0.2"),
                ("PODMAN_URI", URI),
            ],
        ));
        w.wait_for(marker, Duration::from_secs(60));
        sigterm(w.pid());
        let out = w.finish();
        let text = format!("phase {phase}: {}", output_text(&out));
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(home.path().join("results/summary.json").exists(), "{text}");
        let (c, n) = leftovers();
        assert!(
            c.is_empty() && n.is_empty(),
            "SIGTERM in {phase} left containers [{c}] networks [{n}]\n{text}"
        );
    }
}
