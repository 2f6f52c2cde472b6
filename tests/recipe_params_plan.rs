//! Recipe parameters that cannot work are refused when the plan is made: `lnst-runner plan`
//! exits 2 with one line naming the parameter, before any agent is contacted.

use std::process::Command;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn plan(recipe: &str, params: &str) -> Run {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_lnst-runner"))
        .arg("plan")
        .env_clear()
        .env("HOME", home.path())
        .env("RECIPE", recipe)
        .env("RECIPE_PARAMS", params)
        .output()
        .unwrap_or_else(|e| panic!("cannot start lnst-runner: {e}"));
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Exit 2, nothing on stdout, exactly one stderr line `lnst-runner: RECIPE_PARAMS: <want>...`.
fn refused(recipe: &str, params: &str, want: &str) {
    let r = plan(recipe, params);
    assert_eq!(
        r.code,
        Some(2),
        "{params}: stdout {} stderr {}",
        r.stdout,
        r.stderr
    );
    assert!(r.stdout.is_empty(), "{params}: {}", r.stdout);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{params}: {:?}", r.stderr);
    let prefix = format!("lnst-runner: RECIPE_PARAMS: {want}");
    assert!(
        lines[0].starts_with(&prefix),
        "{params}: {:?} lacks {prefix:?}",
        lines[0]
    );
}

fn accepted(recipe: &str, params: &str) {
    let r = plan(recipe, params);
    assert_eq!(r.code, Some(0), "{params}: {}", r.stderr);
}

const SNR: &str = "SimpleNetworkRecipe";

#[test]
fn networks_too_small_for_two_hosts() {
    for (p, want) in [
        (
            "net_ipv4='198.18.0.0/31'",
            "net_ipv4: '198.18.0.0/31' is too small",
        ),
        (
            "net_ipv4='198.18.0.7/32'",
            "net_ipv4: '198.18.0.7/32' is too small",
        ),
        (
            "net_ipv4='198.18.0.7'",
            "net_ipv4: '198.18.0.7/32' is too small",
        ),
        (
            "net_ipv6='fd00::/127'",
            "net_ipv6: 'fd00::/127' is too small",
        ),
        (
            "net_ipv6='fd00::5/128'",
            "net_ipv6: 'fd00::5/128' is too small",
        ),
    ] {
        refused(SNR, p, want);
    }
    accepted(SNR, "net_ipv4='198.18.0.0/30';net_ipv6='fd00::/126'");
}

#[test]
fn offload_names_ethtool_does_not_know() {
    for shown in ["'no-such-feature'", "'-K'", "'GRO'", "'gro '"] {
        let p = format!("offload_combinations=[{{'gro': 'on'}}, {{{shown}: 'off'}}]");
        refused(
            SNR,
            &p,
            &format!("offload_combinations: item 1: {shown} is not an ethtool feature name"),
        );
    }
    accepted(
        SNR,
        "offload_combinations=[{'gro': 'on', 'rx-checksum': 'off', 'generic-segmentation-offload': 'on', 'tx-udp-segmentation': 'off'}]",
    );
}

#[test]
fn cpu_indices_that_cannot_be_cpus() {
    for p in [
        "perf_tool_cpu=[4294967295]",
        "perf_tool_cpu=[0, 8192]",
        "dev_intr_cpu=[65536]",
    ] {
        let name = p.split('=').next().unwrap_or_default();
        refused(SNR, p, &format!("{name}: item "));
        let r = plan(SNR, p);
        assert!(
            r.stderr.contains("is out of range (0 to 8191)"),
            "{}",
            r.stderr
        );
    }
    accepted(SNR, "perf_tool_cpu=[0, 8191];dev_intr_cpu=[3]");
}

#[test]
fn ping_flood_addresses() {
    let r = "PingFloodRecipe";
    refused(
        r,
        "src_addr='banana'",
        "src_addr: 'banana' is not an address",
    );
    refused(
        r,
        "dst_addr=5",
        "dst_addr: expected a quoted string, got int 5",
    );
    refused(
        r,
        "src_addr='198.18.40.1/24';dst_addr='fd00::2/64'",
        "dst_addr: fd00::2/64 is ipv6, but src_addr 198.18.40.1/24 is ipv4",
    );
    refused(r, "count=0", "count: 0 is out of range");
    refused(r, "interval=0", "interval: 0.0 is out of range");
    refused(r, "mtu=67", "mtu: 67 is out of range");
    refused(
        r,
        "net_ipv4='198.18.0.0/24'",
        "'net_ipv4' is not a parameter of PingFloodRecipe",
    );
    accepted(
        r,
        "src_addr='fd00:40::1/64';dst_addr='fd00:40::2/64';size=1400;mtu=9000",
    );
}
