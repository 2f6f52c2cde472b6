//! Podman helpers of the end-to-end tests: the CLI (tests only; the runner never uses it),
//! prerequisites, and the resources a run labels as its own.
use super::*;
use std::path::Path;
use std::process::Command;

pub const SOCK: &str = "/run/podman/podman.sock";
pub const URI: &str = "unix:///run/podman/podman.sock";

pub fn podman_cli(args: &[&str]) -> std::process::Output {
    let mut c = Command::new("podman");
    if Path::new("/etc/lnst-runner/containers.conf").exists() {
        c.env("CONTAINERS_CONF", "/etc/lnst-runner/containers.conf");
    }
    c.args(args).output().expect("podman CLI")
}

pub fn image_exists(name: &str) -> bool {
    podman_cli(&["image", "exists", name]).status.success()
}

pub fn require_podman() -> bool {
    require_netns_e2e()
        && require(
            Path::new(SOCK).exists(),
            "the Podman API socket is not running",
        )
        && require(have("podman"), "podman is not installed")
        && require(
            image_exists("localhost/lnst-agent"),
            "image lnst-agent is not built",
        )
        && require(
            image_exists("localhost/lnst_controller"),
            "image lnst_controller is not built",
        )
}

/// Containers and networks labelled by lnst-runner.
pub fn leftovers() -> (String, String) {
    let c = podman_cli(&[
        "ps",
        "-a",
        "--filter",
        "label=lnst-runner.run",
        "--format",
        "{{.Names}}",
    ]);
    let n = podman_cli(&[
        "network",
        "ls",
        "--filter",
        "label=lnst-runner.run",
        "--format",
        "{{.Name}}",
    ]);
    (
        String::from_utf8_lossy(&c.stdout).trim().to_string(),
        String::from_utf8_lossy(&n.stdout).trim().to_string(),
    )
}
