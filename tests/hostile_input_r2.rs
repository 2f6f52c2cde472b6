//! Hostile-input corpus, round 2 (issue 14, items 3, 4, 5, 8 and 9, runner-side input).
//!
//! [`corpus`]: every case runs the real `lnst-runner` binary — `plan`, `pool check DIR`, or
//! `run` with a pool whose machines point at loopback listeners — and must end with exit code
//! 2 and exactly one stderr line `lnst-runner: ...` naming the culprit, nothing on stdout, no
//! panic, within a time limit (FIFOs and endless devices must not hang), the case's home
//! unchanged, and, for `run`, no connection to any pool machine: the listeners' accept queues
//! must be empty (bad input is found before any agent is contacted).
//!
//! The other tests cover what is not an exit-2 rejection: pool files at the limits load in
//! linear time, MULTIMATCH over a 1000-machine pool stops at its cap with bounded memory and
//! without contacting anything, TEST_DB credentials appear in no output (logs included), an
//! unknown OCI runtime is refused by the engine preflight, and the agent's `--secret-file`
//! refuses special and oversized files at once.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Replaced by the case's home directory.
const HOME: &str = "@HOME@";
/// Replaced by the port the case's loopback "agents" listen on.
const PORT: &str = "@PORT@";
/// A case that takes longer than this hangs.
const CASE_TIMEOUT: Duration = Duration::from_secs(20);
/// A rejection slower than this is a CPU sink (each case takes well under a second alone; the
/// budget allows for a loaded 2-core machine and a debug build).
const CASE_BUDGET: Duration = Duration::from_secs(8);
/// Parallel runner processes.
const WORKERS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    /// Item 3: bad input found late (after agents were contacted, or never).
    Late,
    /// Item 4: special files named by input (FIFOs, devices, huge files).
    SpecialFile,
    /// Item 5: inputs past the size limits.
    Limit,
    /// Item 9: lenient parsing.
    Lenient,
    /// Item 8: credentials in messages.
    Credentials,
}

enum Input {
    /// `plan` with these variables on top of RECIPE=SimpleNetworkRecipe (an empty RECIPE
    /// unsets it).
    Plan(Vec<(&'static str, Vec<u8>)>),
    /// `plan` with TEST_DB naming a file holding these bytes.
    TestDb(Vec<u8>),
    /// `pool check DIR`; DIR holds these files.
    Pool(Vec<(&'static str, Vec<u8>)>),
    /// `pool check DIR`; DIR prepared by the function (DIR, home).
    PoolMade(fn(&Path, &Path)),
    /// `run` with LNST_POOL_DIR holding these files, RECIPE=SimpleNetworkRecipe and these
    /// variables (an empty RECIPE unsets it).
    RunPool(Vec<(&'static str, Vec<u8>)>, Vec<(&'static str, Vec<u8>)>),
}

struct Case {
    name: &'static str,
    family: Family,
    input: Input,
    /// Substring of the error line that names the culprit.
    culprit: &'static str,
    /// Substrings that must appear nowhere in the output.
    never: &'static [&'static str],
}

fn case(name: &'static str, family: Family, input: Input, culprit: &'static str) -> Case {
    Case {
        name,
        family,
        input,
        culprit,
        never: &[],
    }
}

fn plan(vars: &[(&'static str, &str)]) -> Input {
    Input::Plan(
        vars.iter()
            .map(|(k, v)| (*k, v.as_bytes().to_vec()))
            .collect(),
    )
}

fn params(p: &str) -> Input {
    plan(&[("RECIPE_PARAMS", p)])
}

/// A machine file: hostname, rpc_port @PORT@, one NIC on net1 with MAC ...:0`n`, and `extra`
/// inside `<agentmachine>`.
fn machine_xml(host: &str, n: u8, extra: &str) -> Vec<u8> {
    format!(
        r#"<agentmachine><params><param name="hostname" value="{host}"/><param name="rpc_port" value="@PORT@"/></params><interfaces><eth id="eth0" label="net1"><params><param name="hwaddr" value="52:54:00:00:00:0{n}"/></params></eth></interfaces>{extra}</agentmachine>"#
    )
    .into_bytes()
}

/// `pool check` of one machine file `m.xml`.
fn pool1(xml: impl Into<Vec<u8>>) -> Input {
    Input::Pool(vec![("m.xml", xml.into())])
}

/// `pool check` of a machine whose hostname is `host`.
fn host(h: &str) -> Input {
    pool1(machine_xml(h, 1, ""))
}

/// `pool check` of a machine whose NIC has this hwaddr.
fn mac(m: &str) -> Input {
    pool1(format!(
        r#"<agentmachine><params><param name="hostname" value="198.18.0.1"/></params><interfaces><eth id="eth0" label="net1"><params><param name="hwaddr" value="{m}"/></params></eth></interfaces></agentmachine>"#
    ))
}

/// `pool check` of a machine with this text at the start of the file and in a param value.
fn xml_text(prolog: &str, value: &str) -> Input {
    pool1(format!(
        r#"{prolog}<agentmachine><params><param name="hostname" value="198.18.0.1"/><param name="note">{value}</param></params></agentmachine>"#
    ))
}

/// `<security>` with the secret in file `path`.
fn secret_file(path: &str) -> String {
    format!("<security><auth_type>password</auth_type><auth_password_file>{path}</auth_password_file></security>")
}

/// Two machines on loopback (127.0.0.1 and 127.0.0.2, port @PORT@) that satisfy
/// SimpleNetworkRecipe; the first with `extra`.
fn lab(extra: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("m1.xml", machine_xml("127.0.0.1", 1, extra)),
        ("m2.xml", machine_xml("127.0.0.2", 2, "")),
    ]
}

fn run_lab(extra: &str, vars: &[(&'static str, &str)]) -> Input {
    Input::RunPool(
        lab(extra),
        vars.iter()
            .map(|(k, v)| (*k, v.as_bytes().to_vec()))
            .collect(),
    )
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::S_IRWXU)
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", p.display()));
}

fn write(p: &Path, data: impl AsRef<[u8]>) {
    std::fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// A TEST_DB of `n` SimpleNetworkRecipe entries.
fn test_db_entries(n: usize) -> Vec<u8> {
    let entry = r#"{"recipe_name": "SimpleNetworkRecipe"}"#;
    format!("[{}]", vec![entry; n].join(",")).into_bytes()
}

/// One machine with `eths` interfaces of `params` extra params each.
fn wide_machine(eths: usize, params: usize) -> Vec<u8> {
    let mut s = String::from(
        r#"<agentmachine><params><param name="hostname" value="198.18.0.1"/></params><interfaces>"#,
    );
    for i in 0..eths {
        s.push_str(&format!(
            r#"<eth id="e{i}" label="net1"><params><param name="hwaddr" value="52:54:00:00:{:02x}:{:02x}"/>"#,
            i / 256,
            i % 256
        ));
        for j in 0..params {
            s.push_str(&format!(r#"<param name="p{j}" value="v"/>"#));
        }
        s.push_str("</params></eth>");
    }
    s.push_str("</interfaces></agentmachine>");
    s.into_bytes()
}

/// The corpus.
fn corpus() -> Vec<Case> {
    use Family::*;
    let db_with_uuid = |u: &str| {
        Input::TestDb(
            format!(r#"[{{"uuid": "{u}", "recipe_name": "SimpleNetworkRecipe"}}]"#).into_bytes(),
        )
    };
    let mut v = vec![
        // ---- Item 3: found before anything is contacted, exit 2. ----
        case("baseline_missing", Late, plan(&[("LNST_BASELINE_FILE", "@HOME@/no-such-baseline.json")]), "LNST_BASELINE_FILE: @HOME@/no-such-baseline.json: No such file"),
        case("baseline_malformed", Late, Input::Plan(vec![("LNST_BASELINE_FILE", b"@HOME@/malformed.json".to_vec()), ("MAKE_FILE", b"malformed.json={".to_vec())]), "LNST_BASELINE_FILE: @HOME@/malformed.json: not valid JSON"),
        case("baseline_negative_threshold", Late, Input::Plan(vec![("LNST_BASELINE_FILE", b"@HOME@/b.json".to_vec()), ("MAKE_FILE", br#"b.json={"default_threshold_pct": -5}"#.to_vec())]), "default_threshold_pct must be a non-negative number"),
        case("run_baseline_missing", Late, run_lab("", &[("LNST_BASELINE_FILE", "@HOME@/no-such-baseline.json")]), "LNST_BASELINE_FILE: "),
        case("run_baseline_malformed", Late, Input::RunPool(lab(""), vec![("LNST_BASELINE_FILE", b"@HOME@/b.json".to_vec()), ("MAKE_FILE", b"b.json=[1, 2".to_vec())]), "LNST_BASELINE_FILE: @HOME@/b.json: not valid JSON"),
        case("pool_secret_file_missing", Late, pool1(machine_xml("198.18.0.1", 1, &secret_file("missing.key"))), "m.xml: auth_password_file @HOME@/pooldir/missing.key: No such file"),
        case("pool_secret_file_absolute_missing", Late, pool1(machine_xml("198.18.0.1", 1, &secret_file("/nonexistent/lnst/secret"))), "auth_password_file /nonexistent/lnst/secret: No such file"),
        case("pool_secret_file_blank", Late, Input::Pool(vec![("m.xml", machine_xml("198.18.0.1", 1, &secret_file("blank.key"))), ("blank.key", b" \n\t \n".to_vec())]), "auth_password_file @HOME@/pooldir/blank.key is empty"),
        case("pool_secret_file_directory", Late, pool1(machine_xml("198.18.0.1", 1, &secret_file("."))), "not a regular file (a directory)"),
        case("run_pool_secret_file_missing", Late, run_lab(&secret_file("missing.key"), &[]), "m1.xml: auth_password_file"),
        case("test_db_uuid_summary_json", Late, db_with_uuid("summary.json"), "uuid 'summary.json' is the name of a file of the results directory"),
        case("test_db_uuid_junit_xml", Late, db_with_uuid("junit.xml"), "uuid 'junit.xml' is the name of a file"),
        case("test_db_uuid_results_zip", Late, db_with_uuid("results.zip"), "uuid 'results.zip' is the name of a file"),
        case("test_db_uuid_dotdot", Late, db_with_uuid(".."), "uuid '..' is not a safe directory name"),
        case("test_db_uuid_slash", Late, db_with_uuid("a/b"), "uuid 'a/b' is not a safe directory name"),
        case("test_db_uuid_nul", Late, db_with_uuid("a\\u0000b"), "is not a safe directory name"),
        case("run_test_db_uuid_summary_json", Late, Input::RunPool(lab(""), vec![("RECIPE", Vec::new()), ("TEST_DB", b"@HOME@/db.json".to_vec()), ("MAKE_FILE", br#"db.json=[{"uuid": "summary.json", "recipe_name": "SimpleNetworkRecipe"}]"#.to_vec())]), "uuid 'summary.json' is the name of a file"),
        case("oci_runtime_path", Late, plan(&[("LNST_OCI_RUNTIME", "/usr/bin/runc")]), "LNST_OCI_RUNTIME: '/usr/bin/runc' is not an OCI runtime name"),
        case("oci_runtime_relative_path", Late, plan(&[("LNST_OCI_RUNTIME", "../../tmp/evil")]), "LNST_OCI_RUNTIME: '../../tmp/evil' is not an OCI runtime name"),
        case("oci_runtime_with_option", Late, plan(&[("LNST_OCI_RUNTIME", "runc --debug")]), "LNST_OCI_RUNTIME: 'runc --debug'"),
        case("oci_runtime_shell", Late, plan(&[("LNST_OCI_RUNTIME", "crun;id")]), "LNST_OCI_RUNTIME: 'crun;id'"),
        case("oci_runtime_newline", Late, plan(&[("LNST_OCI_RUNTIME", "crun\nkrun")]), "LNST_OCI_RUNTIME: 'crun\\nkrun'"),
        case("image_name_traversal", Late, plan(&[("IMAGE_NAME", "x/../../containers/abc")]), "IMAGE_NAME: 'x/../../containers/abc' is not an image reference"),
        case("image_name_dot_segment", Late, plan(&[("IMAGE_NAME", "localhost/./agent")]), "IMAGE_NAME: 'localhost/./agent'"),
        case("image_name_empty_segment", Late, plan(&[("IMAGE_NAME", "localhost//agent")]), "IMAGE_NAME: 'localhost//agent'"),
        case("image_name_trailing_dotdot", Late, plan(&[("IMAGE_NAME", "a/..")]), "IMAGE_NAME: 'a/..'"),
        case("pool_hostname_with_port", Late, host("198.18.0.1:22"), "hostname '198.18.0.1:22' is not an IP address or a DNS name (give the port in the rpc_port param)"),
        case("pool_hostname_with_word", Late, host("198.18.0.1 evil"), "hostname '198.18.0.1 evil' is not an IP address or a DNS name"),
        case("pool_hostname_url", Late, host("http://198.18.0.1/"), "hostname 'http://198.18.0.1/' is not an IP address or a DNS name (a URL"),
        case("pool_hostname_bad_octet", Late, host("198.18.0.256"), "hostname '198.18.0.256' is not an IP address"),
        case("pool_hostname_hex_number", Late, host("0x7f000001"), "hostname '0x7f000001' is not an IP address"),
        case("pool_hostname_v6_with_port", Late, host("[fd00::1]:22"), "hostname '[fd00::1]:22'"),
        case("pool_hostname_shell", Late, host("h;id"), "hostname 'h;id'"),
        case("run_pool_hostname_with_port", Late, Input::RunPool(vec![("m1.xml", machine_xml("127.0.0.1:@PORT@", 1, "")), ("m2.xml", machine_xml("127.0.0.2", 2, ""))], Vec::new()), "hostname '127.0.0.1:"),
        // ---- Item 4: special files named by input. ----
        case("baseline_dev_zero", SpecialFile, plan(&[("LNST_BASELINE_FILE", "/dev/zero")]), "LNST_BASELINE_FILE: /dev/zero: not a regular file (a character device)"),
        case("baseline_fifo", SpecialFile, Input::Plan(vec![("LNST_BASELINE_FILE", b"@HOME@/fifo".to_vec()), ("MAKE_FIFO", b"fifo".to_vec())]), "LNST_BASELINE_FILE: @HOME@/fifo: not a regular file (a FIFO)"),
        case("baseline_directory", SpecialFile, plan(&[("LNST_BASELINE_FILE", "@HOME@")]), "not a regular file (a directory)"),
        case("baseline_oversized", SpecialFile, Input::Plan(vec![("LNST_BASELINE_FILE", b"@HOME@/big.json".to_vec()), ("MAKE_SPARSE", b"big.json".to_vec())]), "LNST_BASELINE_FILE: @HOME@/big.json: larger than the limit of 8388608 bytes"),
        case("run_baseline_dev_zero", SpecialFile, run_lab("", &[("LNST_BASELINE_FILE", "/dev/zero")]), "LNST_BASELINE_FILE: /dev/zero: not a regular file"),
        case("pool_secret_file_dev_zero", SpecialFile, pool1(machine_xml("198.18.0.1", 1, &secret_file("/dev/zero"))), "auth_password_file /dev/zero: not a regular file (a character device)"),
        case("pool_secret_file_dev_urandom_link", SpecialFile, Input::PoolMade(|d, _| {
            std::os::unix::fs::symlink("/dev/urandom", d.join("rand.key")).unwrap_or_else(|e| panic!("{e}"));
            write(&d.join("m.xml"), subst(&machine_xml("198.18.0.1", 1, &secret_file("rand.key")), d, 9999));
        }), "rand.key: not a regular file (a character device)"),
        case("pool_secret_file_fifo", SpecialFile, Input::PoolMade(|d, _| {
            mkfifo(&d.join("s.fifo"));
            write(&d.join("m.xml"), subst(&machine_xml("198.18.0.1", 1, &secret_file("s.fifo")), d, 9999));
        }), "s.fifo: not a regular file (a FIFO)"),
        case("pool_secret_file_oversized", SpecialFile, Input::PoolMade(|d, _| {
            let f = std::fs::File::create(d.join("big.key")).unwrap_or_else(|e| panic!("{e}"));
            f.set_len(70 * 1024).unwrap_or_else(|e| panic!("{e}"));
            write(&d.join("m.xml"), subst(&machine_xml("198.18.0.1", 1, &secret_file("big.key")), d, 9999));
        }), "big.key: larger than the limit of 65536 bytes"),
        case("run_pool_secret_file_fifo", SpecialFile, Input::RunPool(vec![("m1.xml", machine_xml("127.0.0.1", 1, &secret_file("s.fifo"))), ("m2.xml", machine_xml("127.0.0.2", 2, ""))], vec![("MAKE_POOL_FIFO", b"s.fifo".to_vec())]), "s.fifo: not a regular file (a FIFO)"),
        case("test_db_dev_urandom", SpecialFile, plan(&[("RECIPE", ""), ("TEST_DB", "/dev/urandom")]), "TEST_DB: cannot read /dev/urandom: not a regular file (a character device)"),
        case("test_db_oversized_sparse", SpecialFile, Input::Plan(vec![("RECIPE", Vec::new()), ("TEST_DB", b"@HOME@/big.json".to_vec()), ("MAKE_SPARSE", b"big.json".to_vec())]), "TEST_DB: cannot read @HOME@/big.json: larger than the limit"),
        // ---- Item 5: past the limits, a clear message at once. ----
        case("test_db_60k_entries", Limit, Input::TestDb(test_db_entries(60_000)), "TEST_DB: 60000 tests; the limit is 10000"),
        case("pool_8000_interfaces", Limit, pool1(wide_machine(8000, 0)), "more than 1024 interfaces in one machine; the limit is 1024"),
        case("pool_30k_machine_params", Limit, pool1({
            let ps: String = (0..30_000).map(|i| format!(r#"<param name="p{i}" value="v"/>"#)).collect();
            format!(r#"<agentmachine><params><param name="hostname" value="198.18.0.1"/>{ps}</params></agentmachine>"#)
        }), "more than 1024 parameters; the limit is 1024"),
        case("pool_2000_interface_params", Limit, pool1(wide_machine(1, 2000)), "more than 1024 parameters"),
        case("pool_5000_machine_files", Limit, Input::PoolMade(|d, _| {
            for i in 0..5000 {
                write(&d.join(format!("m{i}.xml")), "<agentmachine/>");
            }
        }), "more than 4096 machine files (*.xml); the limit is 4096"),
        case("params_dict_9000_keys_then_true", Limit, params(&format!("coalescing_settings={{{}, True: 1}}", (0..9_000).map(|i| format!("{i}:0")).collect::<Vec<_>>().join(","))), "RECIPE_PARAMS: coalescing_settings: column 61893: dict keys 1 and True are the same key in Python"),
        // ---- Item 9: no lenient parsing. ----
        case("xml_char_ref_surrogate", Lenient, xml_text("", "a&#xD800;b"), "m.xml:1:86: character reference '&#xD800;' is not a character XML allows"),
        case("xml_char_ref_above_unicode", Lenient, xml_text("", "&#x110000;"), "character reference '&#x110000;' is not a character XML allows"),
        case("xml_char_ref_decimal_surrogate", Lenient, xml_text("", "&#57343;"), "character reference '&#57343;'"),
        case("xml_char_ref_nul", Lenient, xml_text("", "&#0;"), "character reference '&#0;'"),
        case("xml_char_ref_huge", Lenient, xml_text("", "&#x7FFFFFFFFFFFFFFF;"), "character reference '&#x7FFFFFFFFFFFFFFF;'"),
        case("xml_char_ref_in_attribute", Lenient, pool1(r#"<agentmachine><params><param name="hostname" value="198.18.0.1&#xDFFF;"/></params></agentmachine>"#), "character reference '&#xDFFF;'"),
        case("xml_encoding_utf16", Lenient, xml_text(r#"<?xml version="1.0" encoding="UTF-16"?>"#, "x"), "m.xml:1:31: encoding 'UTF-16' is not supported: pool XML is read as UTF-8"),
        case("xml_encoding_latin1", Lenient, xml_text(r#"<?xml version="1.0" encoding='ISO-8859-1'?>"#, "x"), "encoding 'ISO-8859-1' is not supported"),
        case("xml_encoding_ebcdic", Lenient, xml_text(r#"<?xml version="1.0" encoding="IBM037"?>"#, "x"), "encoding 'IBM037' is not supported"),
        case("xml_encoding_ascii_with_utf8", Lenient, xml_text(r#"<?xml version="1.0" encoding="US-ASCII"?>"#, "é"), "encoding 'US-ASCII' is not supported"),
        case("hwaddr_all_zero", Lenient, mac("00:00:00:00:00:00"), "hwaddr 00:00:00:00:00:00 of interface eth0 is the all-zero address"),
        case("hwaddr_broadcast", Lenient, mac("FF:FF:FF:FF:FF:FF"), "hwaddr ff:ff:ff:ff:ff:ff of interface eth0 is the broadcast address"),
        case("hwaddr_ipv4_multicast", Lenient, mac("01:00:5e:00:00:fb"), "hwaddr 01:00:5e:00:00:fb of interface eth0 is a multicast address"),
        case("hwaddr_ipv6_multicast", Lenient, mac("33-33-00-00-00-01"), "is a multicast address"),
        case("hwaddr_odd_first_octet", Lenient, mac("53:54:00:00:00:01"), "is a multicast address"),
        case("params_dict_one_and_true", Lenient, params("coalescing_settings={1:'x', True:'y'}"), "RECIPE_PARAMS: coalescing_settings: column 9: dict keys 1 and True are the same key in Python (1 == True)"),
        case("params_dict_zero_false_float", Lenient, params("coalescing_settings={False:'x', 0.0:'y'}"), "dict keys False and 0.0 are the same key in Python"),
        case("params_dict_negative_zero", Lenient, params("coalescing_settings={0:'x', -0.0:'y'}"), "dict keys 0 and -0.0 are the same key in Python"),
        case("params_dict_float_one", Lenient, params("offload_combinations=[{1.0:'x', 1:'y'}]"), "dict keys 1.0 and 1 are the same key in Python"),
        case("params_dict_tuple_keys", Lenient, params("coalescing_settings={(1, 'a'):'x', (True, 'a'):'y'}"), "dict keys (1, 'a') and (True, 'a') are the same key in Python"),
        // ---- Item 8: URL credentials never shown. ----
        Case {
            never: &["s3cr3tpw", "alice"],
            ..case("test_db_url_credentials", Credentials, plan(&[("RECIPE", ""), ("TEST_DB", "http://alice:s3cr3tpw@127.0.0.1:1/db.json")]), "TEST_DB: cannot read http://***@127.0.0.1:1/db.json: ")
        },
        Case {
            never: &["s3cr3tpw", "bob"],
            ..case("test_db_url_credentials_refused_host", Credentials, plan(&[("RECIPE", ""), ("TEST_DB", "http://bob:s3cr3tpw@198.51.100.1/db.json")]), "TEST_DB: cannot read http://***@198.51.100.1/db.json: plain http:// is refused")
        },
        Case {
            never: &["s3cr3tpw", "carol"],
            ..case("test_db_url_credentials_https_closed", Credentials, plan(&[("RECIPE", ""), ("TEST_DB", "https://carol:s3cr3tpw@127.0.0.1:1/db.json")]), "TEST_DB: cannot read https://***@127.0.0.1:1/db.json: ")
        },
    ];
    v.sort_by_key(|c| c.family);
    v
}

/// `input` with the placeholders replaced.
fn subst(input: &[u8], home: &Path, port: u16) -> Vec<u8> {
    let mut s = input.to_vec();
    let port = port.to_string();
    for (pat, rep) in [(HOME, home.as_os_str().as_bytes()), (PORT, port.as_bytes())] {
        let pat = pat.as_bytes();
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            if s[i..].starts_with(pat) {
                out.extend_from_slice(rep);
                i += pat.len();
            } else {
                out.push(s[i]);
                i += 1;
            }
        }
        s = out;
    }
    s
}

fn os(b: Vec<u8>) -> std::ffi::OsString {
    std::ffi::OsStr::from_bytes(&b).to_os_string()
}

/// Every path under `dir` (not following symlinks), sorted.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

/// What a finished (or killed) process left.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
    hung: bool,
    /// Peak resident memory (VmHWM) seen while it ran, in KiB.
    peak_kib: u64,
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Run a command with a deadline (a child still running then is killed), sampling its peak
/// memory.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Outcome {
    let t0 = Instant::now();
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pid = child.id();
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = pipe(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = pipe(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let mut hung = false;
    let mut peak_kib = 0;
    let status = loop {
        if let Some(k) = vm_hwm_kib(pid) {
            peak_kib = peak_kib.max(k);
        }
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if t0.elapsed() > timeout => {
                hung = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("wait: {e}"),
        }
    };
    let took = t0.elapsed();
    let text = |h: std::thread::JoinHandle<Vec<u8>>| {
        String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
    };
    Outcome {
        code: if hung {
            None
        } else {
            status.and_then(|s| s.code())
        },
        stdout: text(out),
        stderr: text(err),
        took,
        hung,
        peak_kib,
    }
}

/// Loopback "agents": listeners on 127.0.0.1 and 127.0.0.2 at one port that never accept;
/// a connection attempt stays in their accept queue.
struct Agents {
    listeners: Vec<TcpListener>,
    port: u16,
}

impl Agents {
    fn new() -> Agents {
        for _ in 0..50 {
            let Ok(first) = TcpListener::bind("127.0.0.1:0") else {
                continue;
            };
            let Ok(port) = first.local_addr().map(|a| a.port()) else {
                continue;
            };
            if let Ok(second) = TcpListener::bind(("127.0.0.2", port)) {
                return Agents {
                    listeners: vec![first, second],
                    port,
                };
            }
        }
        panic!("no free loopback port pair");
    }

    /// Connections made to any of them so far.
    fn contacted(&self) -> usize {
        let mut n = 0;
        for l in &self.listeners {
            if l.set_nonblocking(true).is_err() {
                continue;
            }
            while l.accept().is_ok() {
                n += 1;
            }
        }
        n
    }
}

/// Make what the `MAKE_*` pseudo-variables ask for in `home` (or the pool dir); they are not
/// passed to the runner.
fn make_extra(k: &str, v: &[u8], home: &Path, pool: &Path) -> bool {
    let text = String::from_utf8_lossy(v).into_owned();
    match k {
        "MAKE_FILE" => {
            let (name, content) = text.split_once('=').unwrap_or((&text, ""));
            write(&home.join(name), content);
        }
        "MAKE_FIFO" => mkfifo(&home.join(&text)),
        "MAKE_POOL_FIFO" => mkfifo(&pool.join(&text)),
        "MAKE_SPARSE" => {
            let f = std::fs::File::create(home.join(&text)).unwrap_or_else(|e| panic!("{e}"));
            f.set_len(9 * 1024 * 1024).unwrap_or_else(|e| panic!("{e}"));
        }
        _ => return false,
    }
    true
}

/// Set up `input` in home `h` and add its arguments and variables to `cmd`.
fn prepare(cmd: &mut Command, input: &Input, h: &Path, port: u16) {
    let pool = h.join("pooldir");
    let mk_pool = |files: &[(&'static str, Vec<u8>)]| {
        std::fs::create_dir(&pool).unwrap_or_else(|e| panic!("{e}"));
        for (name, data) in files {
            write(&pool.join(name), subst(data, h, port));
        }
    };
    let vars = |cmd: &mut Command, vars: &[(&'static str, Vec<u8>)]| {
        for (k, v) in vars {
            if !make_extra(k, v, h, &pool) {
                cmd.env(k, os(subst(v, h, port)));
            }
        }
    };
    match input {
        Input::Plan(vs) => {
            cmd.arg("plan").env("RECIPE", "SimpleNetworkRecipe");
            vars(cmd, vs);
        }
        Input::TestDb(b) => {
            let f = h.join("test_db.json");
            write(&f, subst(b, h, port));
            cmd.arg("plan").env("TEST_DB", &f);
        }
        Input::Pool(files) => {
            mk_pool(files);
            cmd.args(["pool", "check"]).arg(&pool);
        }
        Input::PoolMade(make) => {
            std::fs::create_dir(&pool).unwrap_or_else(|e| panic!("{e}"));
            make(&pool, h);
            cmd.args(["pool", "check"]).arg(&pool);
        }
        Input::RunPool(files, vs) => {
            mk_pool(files);
            cmd.arg("run")
                .env("RECIPE", "SimpleNetworkRecipe")
                .env("LNST_POOL_DIR", &pool);
            vars(cmd, vs);
        }
    }
}

/// A runner command with a clean environment in home `h`.
fn runner_in(h: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lnst-runner"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", h)
        .env("LNST_POOL_DIR", h.join("pool"))
        .env("LNST_RESULTS_DIR", h.join("results"))
        // A run that gets past the checks by mistake must not start netns agents.
        .env("LNST_AGENT_BIN", h.join("no-such-agent"))
        .current_dir(h);
    cmd
}

fn shows_crash(text: &str) -> bool {
    text.contains("panicked") || text.contains("RUST_BACKTRACE") || text.contains("overflowed")
}

fn clip(s: &str) -> String {
    let mut t: String = s.chars().take(400).collect();
    if s.chars().nth(400).is_some() {
        t.push('…');
    }
    t
}

/// Run one case; returns its failures (empty: it passed) and its run time.
fn run_case(c: &Case) -> (Vec<String>, Duration) {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let h = home.path();
    let agents = Agents::new();
    let mut cmd = runner_in(h);
    prepare(&mut cmd, &c.input, h, agents.port);
    let before = tree(h);
    let o = run_with_timeout(cmd, CASE_TIMEOUT);
    let after = tree(h);
    let contacted = agents.contacted();

    let mut fails = Vec::new();
    let mut fail = |m: String| fails.push(m);
    if o.hung {
        fail(format!("hung: killed after {:?}", o.took));
    } else if o.took > CASE_BUDGET {
        fail(format!("took {:.1} s to reject", o.took.as_secs_f64()));
    }
    if !o.hung && o.code != Some(2) {
        fail(format!("exit code {:?}, expected 2", o.code));
    }
    if contacted > 0 {
        fail(format!(
            "{contacted} connection(s) to the pool's agents before the rejection"
        ));
    }
    for (what, text) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        if shows_crash(text) {
            fail(format!("{what} shows a panic or an overflow"));
        }
        for n in c.never {
            if text.contains(n) {
                fail(format!("{what} shows {n:?}: {:?}", clip(text)));
            }
        }
    }
    if !o.stdout.is_empty() {
        fail(format!("stdout is not empty: {:?}", clip(&o.stdout)));
    }
    let lines: Vec<&str> = o.stderr.lines().collect();
    if lines.len() != 1 || !o.stderr.ends_with('\n') {
        fail(format!(
            "stderr is {} lines, expected exactly one: {:?}",
            lines.len(),
            clip(&o.stderr)
        ));
    }
    let first = lines.first().copied().unwrap_or("");
    if !first.starts_with("lnst-runner: ") {
        fail(format!(
            "stderr line lacks the 'lnst-runner: ' prefix: {:?}",
            clip(first)
        ));
    }
    let culprit =
        String::from_utf8_lossy(&subst(c.culprit.as_bytes(), h, agents.port)).into_owned();
    if !first.contains(&culprit) {
        fail(format!(
            "stderr line does not name the culprit {culprit:?}: {:?}",
            clip(first)
        ));
    }
    if before != after {
        let new: Vec<&PathBuf> = after.iter().filter(|p| !before.contains(p)).collect();
        let gone: Vec<&PathBuf> = before.iter().filter(|p| !after.contains(p)).collect();
        fail(format!("home changed: new {new:?}, gone {gone:?}"));
    }
    (fails, o.took)
}

#[test]
fn corpus_r2_covers_every_family() {
    let c = corpus();
    let mut names: Vec<&str> = c.iter().map(|c| c.name).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "case names must be unique");
    for f in [
        Family::Late,
        Family::SpecialFile,
        Family::Limit,
        Family::Lenient,
        Family::Credentials,
    ] {
        assert!(
            c.iter().filter(|x| x.family == f).count() >= 3,
            "family {f:?} is thin"
        );
    }
    assert!(c.iter().all(|x| !x.culprit.is_empty()));
}

#[test]
fn hostile_inputs_r2_are_rejected_with_one_line_and_exit_2() {
    let cases = corpus();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Vec<String>, Duration)>> = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(c) = cases.get(i) else { break };
                let (fails, took) = run_case(c);
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, fails, took));
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|r| r.0);
    let mut report = String::new();
    let mut per_family: BTreeMap<Family, (usize, usize)> = BTreeMap::new();
    for (i, fails, _) in &results {
        let c = &cases[*i];
        let e = per_family.entry(c.family).or_default();
        e.0 += 1;
        if !fails.is_empty() {
            e.1 += 1;
            for f in fails {
                report.push_str(&format!("  {:?}/{}: {f}\n", c.family, c.name));
            }
        }
    }
    let slowest = results.iter().max_by_key(|r| r.2);
    eprintln!(
        "hostile corpus r2: {} cases in {:.1} s (slowest: {} in {:.2} s)",
        cases.len(),
        t0.elapsed().as_secs_f64(),
        slowest.map_or("-", |r| cases[r.0].name),
        slowest.map_or(0.0, |r| r.2.as_secs_f64())
    );
    for (f, (n, failed)) in &per_family {
        eprintln!("  {f:?}: {n} cases, {failed} failed");
    }
    assert!(report.is_empty(), "hostile inputs mishandled:\n{report}");
}

/// Pool files within the limits but as large as allowed: `pool check` accepts them in time
/// linear in their size (line and column used to be computed from the start of the file for
/// every parameter: 34 000 params took 17 s, 8000 `<eth>` 3.8 s, in a release build).
#[test]
fn pool_files_at_the_limits_load_in_linear_time() {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let h = home.path();
    for (name, xml, machines_ifaces) in [
        // ~1 MiB: 32 interfaces of 1000 params each (32 000 params).
        ("params", wide_machine(32, 1000), 32),
        // 1024 interfaces (the limit) of 30 params each.
        ("eths", wide_machine(1024, 30), 1024),
    ] {
        assert!(xml.len() <= 1024 * 1024, "{name}: {} bytes", xml.len());
        let dir = h.join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        write(&dir.join("m.xml"), &xml);
        let mut cmd = runner_in(h);
        cmd.args(["pool", "check"]).arg(&dir);
        let o = run_with_timeout(cmd, Duration::from_secs(60));
        assert_eq!(o.code, Some(0), "{name}: {}", clip(&o.stderr));
        assert!(
            o.stdout
                .contains(&format!("interface e{}:", machines_ifaces - 1)),
            "{name}: {}",
            clip(&o.stdout)
        );
        // Generous for a debug build on a loaded 2-core machine; the quadratic reader took
        // more than 40 s (debug) on either file.
        assert!(
            o.took < Duration::from_secs(15),
            "{name}: pool check took {:.1} s",
            o.took.as_secs_f64()
        );
        eprintln!(
            "{name}: {} bytes checked in {:.2} s, peak {} MiB",
            xml.len(),
            o.took.as_secs_f64(),
            o.peak_kib / 1024
        );
    }
}

/// MULTIMATCH over 1000 pool machines (a million matches of SimpleNetworkRecipe's two hosts):
/// the mapper stops at its cap with a clear message, memory stays small, and no agent is
/// contacted (the matches used to be enumerated first: 3.7 GB and 9 s).
#[test]
fn multimatch_over_a_huge_pool_stops_at_the_cap() {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let h = home.path();
    let agents = Agents::new();
    let pool = h.join("pooldir");
    std::fs::create_dir(&pool).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..1000u32 {
        // Every machine on loopback; the first two (the first match) on the listeners.
        let xml = format!(
            r#"<agentmachine><params><param name="hostname" value="127.0.{}.{}"/><param name="rpc_port" value="{}"/></params><interfaces><eth id="eth0" label="net1"><params><param name="hwaddr" value="52:54:00:00:{:02x}:{:02x}"/></params></eth></interfaces></agentmachine>"#,
            i / 250,
            i % 250 + 1,
            agents.port,
            i / 256,
            i % 256
        );
        write(&pool.join(format!("m{i:04}.xml")), xml);
    }
    let mut cmd = runner_in(h);
    cmd.arg("run")
        .env("RECIPE", "SimpleNetworkRecipe")
        .env("MULTIMATCH", "1")
        .env("LNST_POOL_DIR", &pool);
    let o = run_with_timeout(cmd, Duration::from_secs(60));
    let contacted = agents.contacted();
    let all = format!("{}\n{}", o.stdout, o.stderr);
    assert!(!o.hung, "killed after {:?}: {}", o.took, clip(&o.stderr));
    assert!(!shows_crash(&all), "{}", clip(&all));
    assert_eq!(o.code, Some(1), "{}", clip(&all));
    assert!(
        all.contains("MULTIMATCH: the pool has more than 1000 matches for the recipe's hosts; the limit is 1000"),
        "{}",
        clip(&all)
    );
    assert_eq!(contacted, 0, "agents were contacted");
    assert!(
        o.peak_kib < 512 * 1024,
        "peak memory {} MiB",
        o.peak_kib / 1024
    );
    eprintln!(
        "MULTIMATCH over 1000 machines: refused in {:.2} s, peak {} MiB",
        o.took.as_secs_f64(),
        o.peak_kib / 1024
    );
}

/// A loopback HTTP server answering every request with 500 and recording the requests.
fn http_500_server() -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut req = vec![0u8; 8192];
            let n = s.read(&mut req).unwrap_or(0);
            let _ =
                s.write_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if tx
                .send(String::from_utf8_lossy(&req[..n]).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    (port, rx)
}

/// TEST_DB `https://user:password@...` and `http://...@127.0.0.1`: the credentials reach the
/// server (as a Basic header) and appear in no output, debug logs of the HTTP client included.
#[test]
fn test_db_credentials_appear_in_no_output() {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let h = home.path();
    let (port, requests) = http_500_server();
    let url = format!("http://alice:s3cr3tpw@127.0.0.1:{port}/db.json");
    for extra in [None, Some(("DEBUG", "1")), Some(("RUST_LOG", "trace"))] {
        let mut cmd = runner_in(h);
        cmd.arg("plan").env("TEST_DB", &url);
        if let Some((k, v)) = extra {
            cmd.env(k, v);
        }
        let o = run_with_timeout(cmd, Duration::from_secs(30));
        let all = format!("{}\n{}", o.stdout, o.stderr);
        assert_eq!(o.code, Some(2), "{extra:?}: {}", clip(&all));
        assert!(
            all.contains(&format!(
                "TEST_DB: cannot read http://***@127.0.0.1:{port}/db.json: HTTP status 500"
            )),
            "{extra:?}: {}",
            clip(&all)
        );
        for secret in ["s3cr3tpw", "alice", "YWxpY2U6czNjcjN0cHc"] {
            assert!(
                !all.contains(secret),
                "{extra:?} shows {secret}: {}",
                clip(&all)
            );
        }
        let req = requests
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("no request: {e}"));
        assert!(
            req.contains("Authorization: Basic YWxpY2U6czNjcjN0cHc=\r\n"),
            "credentials not sent: {req}"
        );
    }
}

/// LNST_OCI_RUNTIME naming a runtime the engine does not have: refused by the Podman
/// preflight (exit 2, one line, before any container exists).
#[test]
fn podman_preflight_refuses_an_unknown_oci_runtime() {
    if !common::require(
        Path::new(common::podman::SOCK).exists(),
        "the Podman API socket is not running",
    ) {
        return;
    }
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = runner_in(home.path());
    cmd.arg("run")
        .env("RECIPE", "SimpleNetworkRecipe")
        .env("PODMAN_URI", common::podman::URI)
        .env("LNST_OCI_RUNTIME", "no-such-runtime");
    let before = common::podman::leftovers();
    let o = run_with_timeout(cmd, Duration::from_secs(60));
    assert_eq!(o.code, Some(2), "{}", clip(&o.stderr));
    assert_eq!(
        o.stderr.lines().count(),
        1,
        "one line expected: {}",
        clip(&o.stderr)
    );
    assert!(
        o.stderr.starts_with("lnst-runner: LNST_OCI_RUNTIME 'no-such-runtime': the engine has no such OCI runtime (it has: ")
            && o.stderr.contains("runc"),
        "{}",
        clip(&o.stderr)
    );
    assert_eq!(
        common::podman::leftovers(),
        before,
        "resources were created"
    );
}

/// The agent's `--secret-file`: a FIFO, a device, a directory or an oversized file is refused
/// at once with a message naming it (a FIFO used to hang the agent's start, /dev/zero to fill
/// its memory).
#[test]
fn agent_secret_file_must_be_a_small_regular_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let fifo = d.join("secret.fifo");
    mkfifo(&fifo);
    let big = d.join("big.secret");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(65 * 1024))
        .unwrap_or_else(|e| panic!("{e}"));
    for (path, want) in [
        (fifo.clone(), "not a regular file (a FIFO)".to_string()),
        (
            PathBuf::from("/dev/zero"),
            "not a regular file (a character device)".to_string(),
        ),
        (
            d.to_path_buf(),
            "not a regular file (a directory)".to_string(),
        ),
        (
            big.clone(),
            "larger than the limit of 65536 bytes".to_string(),
        ),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lnst-agent"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--stdio")
            .arg("--secret-file")
            .arg(&path);
        let o = run_with_timeout(cmd, Duration::from_secs(15));
        assert!(!o.hung, "{}: the agent hung", path.display());
        assert_ne!(o.code, Some(0), "{}: accepted", path.display());
        let line = format!("cannot read secret file {}: {want}", path.display());
        assert!(
            o.stderr.contains(&line),
            "{}: {}",
            path.display(),
            clip(&o.stderr)
        );
        assert!(
            o.peak_kib < 256 * 1024,
            "{}: {} MiB",
            path.display(),
            o.peak_kib / 1024
        );
        assert!(!shows_crash(&o.stderr), "{}", clip(&o.stderr));
    }
}

/// The image name reaches the engine as one percent-encoded path segment
/// (`localhost%2Fname%3Atag`): a real Podman decodes it and finds the image (a name with `/`
/// and `:`), while `x/../../containers/abc` cannot reach another endpoint (see the unit test
/// `provision::podman::tests::preflight_encodes_the_image_and_checks_the_runtime`).
#[tokio::test]
async fn podman_preflight_finds_an_image_named_with_slash_and_tag() {
    use lnst_runner::provision::podman::{PodmanOptions, PodmanProvisioner};
    if !common::require(
        Path::new(common::podman::SOCK).exists() && common::have("podman"),
        "the Podman API socket is not running or podman is not installed",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let tar = dir.path().join("empty.tar");
    // An empty tar archive: two 512-byte zero blocks.
    write(&tar, vec![0u8; 1024]);
    let image = format!("localhost/lnst-r2-probe-{}:t1", std::process::id());
    let o = common::podman::podman_cli(&["import", &tar.to_string_lossy(), &image]);
    assert!(o.status.success(), "{}", common::output_text(&o));
    let prov =
        PodmanProvisioner::connect(PodmanOptions::new(common::podman::URI, &image, "r2probe"))
            .unwrap_or_else(|e| panic!("{e}"));
    let found = prov.preflight().await;
    let missing = PodmanProvisioner::connect(PodmanOptions::new(
        common::podman::URI,
        format!("{image}-missing"),
        "r2probe",
    ))
    .unwrap_or_else(|e| panic!("{e}"))
    .preflight()
    .await
    .err()
    .map(|e| e.to_string());
    let _ = common::podman::podman_cli(&["rmi", "-f", &image]);
    if let Err(e) = found {
        panic!("preflight of {image}: {e}");
    }
    assert_eq!(
        missing,
        Some(format!(
            "image '{image}-missing' not found in the engine — build it with container_files/build-images.sh"
        ))
    );
}
