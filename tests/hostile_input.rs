//! Hostile-input corpus (issue "Control-plane security and robustness", scope item 2).
//!
//! Every case of [`corpus`] runs the real `lnst-runner` binary — `plan` (contacts nothing) for
//! RECIPE_PARAMS, TEST_DB and environment cases, `pool check DIR` for pool XML — and must end
//! with exit code 2 and exactly one stderr line `lnst-runner: ...` that names the culprit (the
//! variable, parameter, key or file), no panic, nothing on stdout, within a time limit (FIFOs
//! and endless devices must not hang), with nothing executed or created: inputs that try to run
//! code name a canary file that must stay absent, the case's home directory must be unchanged,
//! and no `lnst-` network namespace may appear.
//!
//! [`agent_fatal_frames`] and [`agent_survives_bad_requests`] send hostile frames to a real
//! `lnst-agent --stdio`: oversized, truncated, garbage and deeply nested frames get an `Error`
//! and a clean close; well-framed but bad requests get an error reply and the agent goes on
//! serving.

mod common;

use lnst_runner::protocol::{self, ErrorKind, Message, Op, MAX_FRAME, PROTOCOL_VERSION};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// Replaced by the case's canary path (a file that must never appear).
const CANARY: &str = "@CANARY@";
/// Replaced by the case's home directory.
const HOME: &str = "@HOME@";
/// A case that takes longer than this hangs.
const CASE_TIMEOUT: Duration = Duration::from_secs(15);
/// A rejection slower than this is a CPU sink (every case takes well under 1 s; a 60 000-
/// character parameter name once took 4 s of edit-distance computations).
const CASE_BUDGET: Duration = Duration::from_secs(5);
/// Parallel runner processes (the machine has 2 cores; most cases are a few ms of CPU).
const WORKERS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cat {
    /// Python eval escapes in RECIPE_PARAMS (and shell syntax).
    Injection,
    /// 100k-deep nesting in RECIPE_PARAMS and TEST_DB.
    Nesting,
    /// Huge numbers, out-of-range values.
    Numbers,
    /// Invalid UTF-8 in the environment, NUL in strings.
    Encoding,
    /// Unbalanced brackets and quotes, trailing garbage, duplicate/unknown keys, wrong types.
    Syntax,
    /// Bad values of the other variables.
    Env,
    /// TEST_DB documents and locations.
    TestDb,
    /// Pool XML files and directories.
    PoolXml,
}

enum Input {
    /// `plan` with RECIPE=SimpleNetworkRecipe and RECIPE_PARAMS set to these bytes.
    Params(Vec<u8>),
    /// `plan` with these variables (raw bytes) on top of the defaults.
    Env(Vec<(&'static str, Vec<u8>)>),
    /// `plan` with TEST_DB naming a regular file holding these bytes.
    TestDb(Vec<u8>),
    /// `plan` with TEST_DB set to this value.
    TestDbAt(Vec<u8>),
    /// `plan` with TEST_DB naming what the function makes in the case's home.
    TestDbMade(fn(&Path) -> PathBuf),
    /// `pool check DIR`, DIR holding `m.xml` with these bytes.
    Pool(Vec<u8>),
    /// `pool check DIR`, DIR prepared by the function.
    PoolMade(fn(&Path)),
    /// The inner input through `lnst-runner run` (RECIPE=SimpleNetworkRecipe; a pool directory
    /// becomes LNST_POOL_DIR): rejected before anything runs. LNST_AGENT_BIN names a missing
    /// file, so that an input accepted by mistake fails preflight instead of provisioning.
    Run(Box<Input>),
}

struct Case {
    name: &'static str,
    cat: Cat,
    input: Input,
    /// Substring of the error line that names the culprit.
    culprit: &'static str,
}

fn case(name: &'static str, cat: Cat, input: Input, culprit: &'static str) -> Case {
    Case {
        name,
        cat,
        input,
        culprit,
    }
}

fn p(s: impl Into<String>) -> Input {
    Input::Params(s.into().into_bytes())
}

fn env(vars: &[(&'static str, &[u8])]) -> Input {
    Input::Env(vars.iter().map(|(k, v)| (*k, v.to_vec())).collect())
}

fn db(s: impl Into<Vec<u8>>) -> Input {
    Input::TestDb(s.into())
}

/// A TEST_DB document with one SimpleNetworkRecipe entry whose params object is `params`.
fn db_params(params: &str) -> Input {
    db(format!(
        r#"[{{"recipe_name": "SimpleNetworkRecipe", "params": {params}}}]"#
    ))
}

fn run(i: Input) -> Input {
    Input::Run(Box::new(i))
}

fn xml(s: impl Into<Vec<u8>>) -> Input {
    Input::Pool(s.into())
}

/// A valid machine with `extra` inside `<agentmachine>` after the hostname param.
fn machine(extra: &str) -> Input {
    xml(format!(
        r#"<agentmachine><params><param name="hostname" value="198.18.0.1"/></params>{extra}</agentmachine>"#
    ))
}

/// A valid machine with one interface whose `<eth>` body is `eth`.
fn iface(eth: &str) -> Input {
    machine(&format!("<interfaces>{eth}</interfaces>"))
}

const MAC1: &str = r#"<params><param name="hwaddr" value="52:54:00:00:00:01"/></params>"#;

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::S_IRWXU)
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", p.display()));
}

fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
}

/// The corpus: (name, category, input, culprit).
fn corpus() -> Vec<Case> {
    use Cat::*;
    let mut v = vec![
        // ---- Code injection in RECIPE_PARAMS: never evaluated, every form rejected. ----
        case("import_system", Injection, p("perf_iterations=__import__('os').system('touch @CANARY@')"), "RECIPE_PARAMS: perf_iterations"),
        case("open_write", Injection, p("driver=open('@CANARY@','w').write('x')"), "RECIPE_PARAMS: driver"),
        case("fstring", Injection, p(r#"driver=f'{__import__("os").system("touch @CANARY@")}'"#), "RECIPE_PARAMS: driver"),
        case("fstring_rf_prefix", Injection, p(r#"driver=RF'{open("@CANARY@","w")}'"#), "RECIPE_PARAMS: driver"),
        case("lambda_call", Injection, p("driver=(lambda: __import__('os').system('touch @CANARY@'))()"), "RECIPE_PARAMS: driver"),
        case("dunder_subclasses", Injection, p("driver=().__class__.__base__.__subclasses__()"), "RECIPE_PARAMS: driver"),
        case("str_method_call", Injection, p("driver=''.join(open('@CANARY@','w'))"), "RECIPE_PARAMS: driver"),
        case("list_comprehension", Injection, p("perf_tool_cpu=[__import__('os').system('touch @CANARY@') for _ in [1]]"), "RECIPE_PARAMS: perf_tool_cpu"),
        case("generator_expression", Injection, p("perf_tool_cpu=(open('@CANARY@','w') for _ in 'a')"), "RECIPE_PARAMS: perf_tool_cpu"),
        case("dict_comprehension", Injection, p("coalescing_settings={k: open('@CANARY@','w') for k in 'a'}"), "RECIPE_PARAMS: coalescing_settings"),
        case("set_of_call", Injection, p("driver={open('@CANARY@','w')}"), "RECIPE_PARAMS: driver"),
        case("walrus_import", Injection, p("perf_iterations=(x:=__import__('os'))"), "RECIPE_PARAMS: perf_iterations"),
        case("walrus_number", Injection, p("perf_iterations=(x:=1)"), "RECIPE_PARAMS: perf_iterations"),
        case("backticks", Injection, p("driver=`touch @CANARY@`"), "RECIPE_PARAMS: driver"),
        case("shell_substitution", Injection, p("driver=$(touch @CANARY@)"), "RECIPE_PARAMS: driver"),
        case("shell_variable", Injection, p("driver=${HOME}"), "RECIPE_PARAMS: driver"),
        case("shell_substitution_as_key", Injection, p("$(touch @CANARY@)=1"), "RECIPE_PARAMS: '$(touch"),
        case("shell_command_after_semicolon", Injection, p("driver='ice'; touch @CANARY@"), "RECIPE_PARAMS: 'touch"),
        case("statement_after_semicolon", Injection, p("perf_iterations=1;__import__('os').system('touch @CANARY@')"), "RECIPE_PARAMS: \"__import__"),
        case("eval_call", Injection, p("perf_iterations=eval('1')"), "RECIPE_PARAMS: perf_iterations"),
        case("exec_call", Injection, p("driver=exec('import os')"), "RECIPE_PARAMS: driver"),
        case("compile_call", Injection, p("driver=compile('1','x','eval')"), "RECIPE_PARAMS: driver"),
        case("getattr_builtins", Injection, p("perf_iterations=getattr(__builtins__,'open')('@CANARY@','w')"), "RECIPE_PARAMS: perf_iterations"),
        case("builtins_subscript", Injection, p("driver=__builtins__['open']('@CANARY@','w')"), "RECIPE_PARAMS: driver"),
        case("globals_call", Injection, p("driver=globals()"), "RECIPE_PARAMS: driver"),
        case("import_statement", Injection, p("driver=import os"), "RECIPE_PARAMS: driver"),
        case("os_system_attribute", Injection, p("driver=os.system('touch @CANARY@')"), "RECIPE_PARAMS: driver"),
        case("decorator", Injection, p("driver=@x"), "RECIPE_PARAMS: driver"),
        case("starred_call", Injection, p("perf_tool_cpu=[*open('@CANARY@','w')]"), "RECIPE_PARAMS: perf_tool_cpu"),
        case("dict_unpack", Injection, p("coalescing_settings={**globals()}"), "RECIPE_PARAMS: coalescing_settings"),
        case("conditional_expression", Injection, p("perf_iterations=1 if open('@CANARY@','w') else 2"), "RECIPE_PARAMS: perf_iterations"),
        case("boolean_and", Injection, p("perf_iterations=True and __import__('os')"), "RECIPE_PARAMS: perf_iterations"),
        case("not_operator", Injection, p("perf_test_simulation=not False"), "RECIPE_PARAMS: perf_test_simulation"),
        case("comparison", Injection, p("perf_iterations=1 < 2"), "RECIPE_PARAMS: perf_iterations"),
        case("bitwise_or", Injection, p("perf_iterations=1 | 2"), "RECIPE_PARAMS: perf_iterations"),
        case("invert", Injection, p("perf_iterations=~1"), "RECIPE_PARAMS: perf_iterations"),
        case("format_method", Injection, p("driver='{0.__class__}'.format(1)"), "RECIPE_PARAMS: driver"),
        case("percent_format_call", Injection, p("driver='%s' % open('@CANARY@','w')"), "RECIPE_PARAMS: driver"),
        case("string_repeat_huge", Injection, p("driver='a' * 10**9"), "RECIPE_PARAMS: driver"),
        case("list_repeat_huge", Injection, p("perf_tool_cpu=[0] * 10**9"), "RECIPE_PARAMS: perf_tool_cpu"),
        case("bytes_literal", Injection, p(r"driver=b'\x00'"), "RECIPE_PARAMS: driver"),
        case("raw_bytes_literal", Injection, p("driver=Rb'x'"), "RECIPE_PARAMS: driver"),
        case("fullwidth_eval", Injection, p("driver=\u{ff45}\u{ff56}\u{ff41}\u{ff4c}('1')"), "RECIPE_PARAMS: driver"),
        case("escaped_identifier", Injection, p(r"driver=\u0065val('1')"), "RECIPE_PARAMS: driver"),
        case("yield_expression", Injection, p("driver=(yield)"), "RECIPE_PARAMS: driver"),
        case("await_expression", Injection, p("driver=await x"), "RECIPE_PARAMS: driver"),
        case("ellipsis", Injection, p("driver=..."), "RECIPE_PARAMS: driver"),
        case("subscript", Injection, p("driver='abc'[0]"), "RECIPE_PARAMS: driver"),
        case("call_on_parenthesis", Injection, p("perf_iterations=(1)(2)"), "RECIPE_PARAMS: perf_iterations"),
        case("attribute_of_true", Injection, p("perf_test_simulation=True.__class__"), "RECIPE_PARAMS: perf_test_simulation"),
        case("attribute_of_number", Injection, p("perf_iterations=1 .real"), "RECIPE_PARAMS: perf_iterations"),
        case("newline_statement", Injection, p("driver='ice'\nimport os"), "RECIPE_PARAMS: driver"),
        case("comment", Injection, p("driver='ice' # ; x=1"), "RECIPE_PARAMS: driver"),
        case("import_as_dict_key", Injection, p("coalescing_settings={__import__('os'): 1}"), "RECIPE_PARAMS: coalescing_settings"),
        case("dunder_name", Injection, p("driver=__reduce__"), "RECIPE_PARAMS: driver"),
        case("path_as_key", Injection, p("../../etc/passwd=1"), "RECIPE_PARAMS: '../../etc/passwd'"),
        case("pickle_opcodes", Injection, p("driver=cos\nsystem\n(S'touch @CANARY@'\ntR."), "RECIPE_PARAMS: driver"),
        // ---- Nesting. ----
        case("params_list_100k_over_size_limit", Nesting, p(format!("perf_tests={}", "[".repeat(100_000))), "RECIPE_PARAMS: input is"),
        case("params_list_60k", Nesting, p(format!("perf_tests={}", "[".repeat(60_000))), "RECIPE_PARAMS: perf_tests"),
        case("params_tuple_60k", Nesting, p(format!("perf_tests={}", "(".repeat(60_000))), "RECIPE_PARAMS: perf_tests"),
        case("params_dict_13k", Nesting, p(format!("coalescing_settings={}", "{'a':".repeat(13_000))), "RECIPE_PARAMS: coalescing_settings"),
        case("params_mixed_45k", Nesting, p(format!("perf_tests={}", "[({".repeat(15_000))), "RECIPE_PARAMS: perf_tests"),
        case("params_balanced_33", Nesting, p(format!("perf_tests={}{}", "[".repeat(33), "]".repeat(33))), "RECIPE_PARAMS: perf_tests"),
        case("params_balanced_20k", Nesting, p(format!("perf_tests={}{}", "[".repeat(20_000), "]".repeat(20_000))), "RECIPE_PARAMS: perf_tests"),
        case("params_unary_60k", Nesting, p(format!("perf_iterations={}1", "-".repeat(60_000))), "RECIPE_PARAMS: perf_iterations"),
        case("params_power_chain_20k", Nesting, p(format!("perf_iterations=2{}", "**2".repeat(20_000))), "RECIPE_PARAMS: perf_iterations"),
        case("params_parentheses_40", Nesting, p(format!("perf_iterations={}1{}", "(".repeat(40), ")".repeat(40))), "RECIPE_PARAMS: perf_iterations"),
        case("test_db_list_100k", Nesting, db("[".repeat(100_000)), "TEST_DB: not valid JSON"),
        case("test_db_dict_100k", Nesting, db(r#"{"a":"#.repeat(100_000)), "TEST_DB: not valid JSON"),
        case("test_db_balanced_100k", Nesting, db(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))), "TEST_DB: not valid JSON"),
        case("test_db_params_100k", Nesting, db_params(&format!(r#"{{"perf_tests": {}}}"#, "[".repeat(100_000))), "TEST_DB: not valid JSON"),
        case("test_db_params_list_100", Nesting, db_params(&format!(r#"{{"perf_tests": {}{}}}"#, "[".repeat(100), "]".repeat(100))), "TEST_DB: entry 0: params: perf_tests"),
        case("test_db_params_dict_100", Nesting, db_params(&format!(r#"{{"coalescing_settings": {}1{}}}"#, r#"{"a":"#.repeat(100), "}".repeat(100))), "TEST_DB: entry 0: params: coalescing_settings"),
        case("test_db_entry_in_lists_100", Nesting, db(format!(r#"{}{{"recipe_name": "SimpleNetworkRecipe"}}{}"#, "[".repeat(100), "]".repeat(100))), "TEST_DB: entry 0"),
        // ---- Huge numbers and out-of-range values. ----
        case("power_tower", Numbers, p("perf_iterations=10**10**10"), "RECIPE_PARAMS: perf_iterations"),
        case("power_99999", Numbers, p("perf_iterations=2**99999"), "RECIPE_PARAMS: perf_iterations"),
        case("power_1024_overflow", Numbers, p("perf_iterations=2**1024"), "RECIPE_PARAMS: perf_iterations"),
        case("ten_thousand_nines", Numbers, p(format!("perf_iterations={}", "9".repeat(10_000))), "RECIPE_PARAMS: perf_iterations"),
        case("negative_huge_hex", Numbers, p(format!("perf_iterations=-0x{}", "f".repeat(100))), "RECIPE_PARAMS: perf_iterations"),
        case("huge_binary", Numbers, p(format!("perf_iterations=0b{}", "1".repeat(200))), "RECIPE_PARAMS: perf_iterations"),
        case("hex_i64_min_magnitude", Numbers, p("perf_iterations=0x8000000000000000"), "RECIPE_PARAMS: perf_iterations"),
        case("underscored_huge", Numbers, p("perf_iterations=1_000_000_000_000_000_000_000"), "RECIPE_PARAMS: perf_iterations"),
        case("float_1e999999", Numbers, p("ping_interval=1e999999"), "RECIPE_PARAMS: ping_interval"),
        case("float_minus_1e999999", Numbers, p("ping_interval=-1e999999"), "RECIPE_PARAMS: ping_interval"),
        case("float_overflow_product", Numbers, p("ping_interval=1e308*10"), "RECIPE_PARAMS: ping_interval"),
        case("i64_max_plus_one", Numbers, p("perf_iterations=9223372036854775808"), "RECIPE_PARAMS: perf_iterations"),
        case("i64_min_minus_one", Numbers, p("perf_iterations=-9223372036854775809"), "RECIPE_PARAMS: perf_iterations"),
        case("two_pow_63", Numbers, p("perf_iterations=2**63"), "RECIPE_PARAMS: perf_iterations"),
        case("float_1e19_as_int", Numbers, p("perf_iterations=1e19"), "RECIPE_PARAMS: perf_iterations"),
        case("division_by_zero", Numbers, p("perf_iterations=1/0"), "RECIPE_PARAMS: perf_iterations"),
        case("zero_to_negative_power", Numbers, p("perf_iterations=0**-1"), "RECIPE_PARAMS: perf_iterations"),
        case("non_integral_int", Numbers, p("perf_duration=1.5"), "RECIPE_PARAMS: perf_duration"),
        case("negative_iterations", Numbers, p("perf_iterations=-1"), "RECIPE_PARAMS: perf_iterations"),
        case("zero_duration", Numbers, p("perf_duration=0"), "RECIPE_PARAMS: perf_duration"),
        case("duration_above_iperf_max", Numbers, p("perf_duration=86401"), "RECIPE_PARAMS: perf_duration"),
        case("mtu_huge", Numbers, p("mtu=99999999999"), "RECIPE_PARAMS: mtu"),
        case("mtu_negative", Numbers, p("mtu=-1"), "RECIPE_PARAMS: mtu"),
        case("ping_count_above_u32", Numbers, p("ping_count=2**40"), "RECIPE_PARAMS: ping_count"),
        case("ping_psize_negative", Numbers, p("ping_psize=-56"), "RECIPE_PARAMS: ping_psize"),
        case("ping_interval_zero", Numbers, p("ping_interval=0"), "RECIPE_PARAMS: ping_interval"),
        case("ping_interval_1e300", Numbers, p("ping_interval=1e300"), "RECIPE_PARAMS: ping_interval"),
        case("ping_interval_tiny_10k_digits", Numbers, p(format!("ping_interval=0.{}1", "0".repeat(10_000))), "RECIPE_PARAMS: ping_interval"),
        case("streams_above_iperf_max", Numbers, p("perf_parallel_streams=129"), "RECIPE_PARAMS: perf_parallel_streams"),
        case("processes_100k", Numbers, p("perf_parallel_processes=100000"), "RECIPE_PARAMS: perf_parallel_processes"),
        case("cpu_negative", Numbers, p("perf_tool_cpu=[0, -1]"), "RECIPE_PARAMS: perf_tool_cpu"),
        case("msg_size_zero", Numbers, p("perf_msg_sizes=[0]"), "RECIPE_PARAMS: perf_msg_sizes"),
        case("test_db_1e999999", Numbers, db_params(r#"{"perf_iterations": 1e999999}"#), "TEST_DB: not valid JSON"),
        case("test_db_10k_digits", Numbers, db_params(&format!(r#"{{"perf_iterations": {}}}"#, "9".repeat(10_000))), "TEST_DB: not valid JSON"),
        case("test_db_u64_max", Numbers, db_params(r#"{"mtu": 18446744073709551615}"#), "TEST_DB: entry 0: params: mtu"),
        case("test_db_above_u64", Numbers, db_params(r#"{"perf_iterations": 18446744073709551616}"#), "TEST_DB: entry 0: params: perf_iterations"),
        case("test_db_negative_iterations", Numbers, db_params(r#"{"perf_iterations": -1}"#), "TEST_DB: entry 0: params: perf_iterations"),
        case("test_db_negative_zero_interval", Numbers, db_params(r#"{"ping_interval": -0.0}"#), "TEST_DB: entry 0: params: ping_interval"),
        // ---- Invalid UTF-8 in every variable we read; NUL in strings. ----
        case("utf8_recipe", Encoding, env(&[("RECIPE", b"Simple\xffNetworkRecipe")]), "RECIPE: value is not valid UTF-8"),
        case("utf8_recipe_params", Encoding, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("RECIPE_PARAMS", b"driver='\xff'")]), "RECIPE_PARAMS: value is not valid UTF-8"),
        case("utf8_formatters", Encoding, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("FORMATTERS", b"json;\xfe")]), "FORMATTERS: value is not valid UTF-8"),
        case("utf8_debug_overlong", Encoding, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("DEBUG", b"\xc0\xb1")]), "DEBUG: value is not valid UTF-8"),
        case("utf8_multimatch_surrogate", Encoding, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("MULTIMATCH", b"\xed\xa0\x80")]), "MULTIMATCH: value is not valid UTF-8"),
        case("utf8_podman_uri", Encoding, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("PODMAN_URI", b"unix:///run/\xff.sock")]), "PODMAN_URI: value is not valid UTF-8"),
        case("utf8_test_db", Encoding, env(&[("TEST_DB", b"/tmp/\xff.json")]), "TEST_DB: value is not valid UTF-8"),
        case("utf8_image_name", Encoding, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("IMAGE_NAME", b"agent\x80")]), "IMAGE_NAME: value is not valid UTF-8"),
        case("utf8_pool_dir_5_byte_form", Encoding, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("LNST_POOL_DIR", b"/tmp/\xf8\x88\x80\x80\x80")]), "LNST_POOL_DIR: value is not valid UTF-8"),
        case("utf8_results_dir_truncated", Encoding, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("LNST_RESULTS_DIR", b"/tmp/\xe2\x82")]), "LNST_RESULTS_DIR: value is not valid UTF-8"),
        case("utf8_oci_runtime", Encoding, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("LNST_OCI_RUNTIME", b"crun\xff")]), "LNST_OCI_RUNTIME: value is not valid UTF-8"),
        case("utf8_home", Encoding, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("HOME", b"/root/\xff")]), "HOME: value is not valid UTF-8"),
        case("nul_hex_escape", Encoding, p(r"driver='ice\x00evil'"), "RECIPE_PARAMS: driver"),
        case("nul_octal_escape", Encoding, p(r"driver='\0'"), "RECIPE_PARAMS: driver"),
        case("nul_three_digit_octal", Encoding, p(r"driver='\000'"), "RECIPE_PARAMS: driver"),
        case("nul_u_escape", Encoding, p(r#"driver="\u0000""#), "RECIPE_PARAMS: driver"),
        case("nul_big_u_escape", Encoding, p(r"driver='\U00000000'"), "RECIPE_PARAMS: driver"),
        case("nul_in_dict_key", Encoding, p(r"coalescing_settings={'a\x00': 1}"), "RECIPE_PARAMS: coalescing_settings"),
        case("surrogate_escape", Encoding, p(r"driver='\ud800'"), "RECIPE_PARAMS: driver"),
        case("escape_above_unicode", Encoding, p(r"driver='\U00110000'"), "RECIPE_PARAMS: driver"),
        case("bidi_override_in_key", Encoding, p("perf_iterations\u{202e}=1"), "RECIPE_PARAMS: 'perf_iterations"),
        case("zero_width_in_recipe", Encoding, env(&[("RECIPE", "SimpleNetworkRecipe\u{200b}".as_bytes())]), "RECIPE: unknown recipe"),
        case("newline_in_recipe", Encoding, env(&[("RECIPE", b"Simple\nNetworkRecipe")]), "RECIPE: unknown recipe"),
        case("test_db_nul_escape_in_param", Encoding, db_params(r#"{"driver": "ice\u0000evil"}"#), "TEST_DB: entry 0: params: driver"),
        case("test_db_raw_nul_byte", Encoding, db(&b"[{\"recipe_name\": \"Simple\0NetworkRecipe\"}]"[..]), "TEST_DB: not valid JSON"),
        case("test_db_invalid_utf8", Encoding, db(&b"[{\"recipe_name\": \"Simple\xffNetworkRecipe\"}]"[..]), "TEST_DB: not valid JSON"),
        case("test_db_lone_surrogate", Encoding, db_params(r#"{"driver": "\ud800"}"#), "TEST_DB: not valid JSON"),
        case("test_db_utf16", Encoding, db(&b"\xff\xfe[\x00]\x00"[..]), "TEST_DB: not valid JSON"),
        case("test_db_nul_in_uuid", Encoding, db(r#"[{"uuid": "a\u0000b", "recipe_name": "SimpleNetworkRecipe"}]"#), "TEST_DB: entry 0: uuid"),
        // ---- Syntax, duplicates, unknown keys, wrong types. ----
        case("unclosed_list", Syntax, p("perf_tests=['tcp_stream'"), "RECIPE_PARAMS: perf_tests"),
        case("extra_bracket", Syntax, p("perf_tests=['tcp_stream']]"), "RECIPE_PARAMS: perf_tests"),
        case("closing_bracket_only", Syntax, p("perf_tests=]"), "RECIPE_PARAMS: perf_tests"),
        case("unterminated_quote", Syntax, p("driver='ice"), "RECIPE_PARAMS: driver"),
        case("mismatched_quotes", Syntax, p(r#"driver="ice'"#), "RECIPE_PARAMS: driver"),
        case("unclosed_dict", Syntax, p("coalescing_settings={'a': 1"), "RECIPE_PARAMS: coalescing_settings"),
        case("unclosed_tuple", Syntax, p("ip_versions=('ipv4',"), "RECIPE_PARAMS: ip_versions"),
        case("trailing_number", Syntax, p("perf_iterations=1 2"), "RECIPE_PARAMS: perf_iterations"),
        case("trailing_parenthesis", Syntax, p("perf_iterations=1)"), "RECIPE_PARAMS: perf_iterations"),
        case("duplicate_key", Syntax, p("perf_iterations=1;perf_iterations=2"), "RECIPE_PARAMS: perf_iterations: parameter given more than once"),
        case("duplicate_key_spaced", Syntax, p("perf_iterations=1; perf_iterations =1"), "RECIPE_PARAMS: perf_iterations: parameter given more than once"),
        case("duplicate_key_same_value", Syntax, p("driver='a';driver='a'"), "RECIPE_PARAMS: driver: parameter given more than once"),
        case("duplicate_dict_key", Syntax, p("coalescing_settings={'a': 1, 'a': 2}"), "RECIPE_PARAMS: coalescing_settings"),
        case("unknown_key", Syntax, p("bogus=1"), "'bogus'"),
        case("misspelt_key", Syntax, p("perf_iteration=1"), "'perf_iteration'"),
        case("upper_case_key", Syntax, p("PERF_ITERATIONS=1"), "'PERF_ITERATIONS'"),
        case("str_for_int", Syntax, p("perf_iterations='5'"), "RECIPE_PARAMS: perf_iterations"),
        case("bool_for_int", Syntax, p("perf_iterations=True"), "RECIPE_PARAMS: perf_iterations"),
        case("none_for_int", Syntax, p("perf_iterations=None"), "RECIPE_PARAMS: perf_iterations"),
        case("int_for_bool", Syntax, p("perf_test_simulation=1"), "RECIPE_PARAMS: perf_test_simulation"),
        case("str_for_float", Syntax, p("ping_interval='0.2'"), "RECIPE_PARAMS: ping_interval"),
        case("int_for_network", Syntax, p("net_ipv4=5"), "RECIPE_PARAMS: net_ipv4"),
        case("network_host_bits", Syntax, p("net_ipv4='198.18.0.1/24'"), "RECIPE_PARAMS: net_ipv4"),
        case("network_wrong_family", Syntax, p("net_ipv4='fd00::/64'"), "RECIPE_PARAMS: net_ipv4"),
        case("choice_unknown", Syntax, p("net_perf_tool='netperf'"), "RECIPE_PARAMS: net_perf_tool"),
        case("tuple_for_list", Syntax, p("perf_msg_sizes=(1, 2)"), "RECIPE_PARAMS: perf_msg_sizes"),
        case("str_items_for_int_list", Syntax, p("perf_msg_sizes=['a']"), "RECIPE_PARAMS: perf_msg_sizes"),
        case("list_for_dict", Syntax, p("coalescing_settings=[]"), "RECIPE_PARAMS: coalescing_settings"),
        case("bare_string_for_sequence", Syntax, p("ip_versions='ipv4'"), "RECIPE_PARAMS: ip_versions"),
        case("unknown_ip_version", Syntax, p("ip_versions=('ipv5',)"), "RECIPE_PARAMS: ip_versions"),
        case("int_for_perf_tests", Syntax, p("perf_tests=5"), "RECIPE_PARAMS: perf_tests"),
        case("offload_value_not_on_off", Syntax, p("offload_combinations=[{'gro': 'maybe'}]"), "RECIPE_PARAMS: offload_combinations"),
        case("offload_not_a_dict", Syntax, p("offload_combinations=['gro']"), "RECIPE_PARAMS: offload_combinations"),
        case("set_literal", Syntax, p("perf_tool_cpu={1, 2}"), "RECIPE_PARAMS: perf_tool_cpu"),
        case("leading_zeros", Syntax, p("perf_iterations=010"), "RECIPE_PARAMS: perf_iterations"),
        case("complex_number", Syntax, p("perf_iterations=1j"), "RECIPE_PARAMS: perf_iterations"),
        case("truncated_hex_escape", Syntax, p(r"driver='\x4'"), "RECIPE_PARAMS: driver"),
        case("triple_quotes", Syntax, p("driver='''x'''"), "RECIPE_PARAMS: driver"),
        case("named_escape", Syntax, p(r"driver='\N{BULLET}'"), "RECIPE_PARAMS: driver"),
        case("empty_key", Syntax, p("=1"), "RECIPE_PARAMS: '=1': empty parameter name"),
        case("key_starting_with_digit", Syntax, p("1a=1"), "RECIPE_PARAMS: '1a'"),
        case("key_with_space", Syntax, p("a b=1"), "RECIPE_PARAMS: 'a b'"),
        case("non_ascii_key", Syntax, p("p\u{e9}rf=1"), "RECIPE_PARAMS: 'p\u{e9}rf'"),
        case("missing_equals", Syntax, p("perf_iterations"), "RECIPE_PARAMS: 'perf_iterations': missing '='"),
        case("double_equals", Syntax, p("perf_iterations==1"), "RECIPE_PARAMS: perf_iterations"),
        case("empty_value", Syntax, p("perf_iterations="), "RECIPE_PARAMS: perf_iterations"),
        case("unknown_key_60k", Syntax, p(format!("perf_iterations{}=1", "x".repeat(60_000))), "RECIPE_PARAMS: 'perf_iterationsxxx"),
        case("input_over_64k", Syntax, p(format!("driver='{}'", "a".repeat(70_000))), "RECIPE_PARAMS: input is"),
        // ---- Other variables. ----
        case("debug_not_truth", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("DEBUG", b"maybe")]), "DEBUG: 'maybe'"),
        case("debug_shell", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("DEBUG", b"1; touch @CANARY@")]), "DEBUG: "),
        case("debug_newline", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("DEBUG", b"1\n0")]), "DEBUG: "),
        case("multimatch_two", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("MULTIMATCH", b"2")]), "MULTIMATCH: "),
        case("multimatch_shell", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("MULTIMATCH", b"$(touch @CANARY@)")]), "MULTIMATCH: "),
        case("formatters_unknown", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("FORMATTERS", b"xml")]), "FORMATTERS: unknown formatter 'xml'"),
        case("formatters_backticks", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("FORMATTERS", b"json;`touch @CANARY@`")]), "FORMATTERS: unknown formatter"),
        case("podman_uri_http", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("PODMAN_URI", b"http://198.51.100.1:8080")]), "PODMAN_URI: "),
        case("podman_uri_space_in_host", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("PODMAN_URI", b"tcp://a b:1")]), "PODMAN_URI: "),
        case("podman_uri_relative_socket", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("PODMAN_URI", b"unix://relative.sock")]), "PODMAN_URI: "),
        case("podman_uri_port_range", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("PODMAN_URI", b"tcp://127.0.0.1:99999")]), "PODMAN_URI: "),
        case("recipe_unknown", Env, env(&[("RECIPE", b"NoSuchRecipe")]), "RECIPE: unknown recipe 'NoSuchRecipe'"),
        case("recipe_code", Env, env(&[("RECIPE", b"__import__('os').system('touch @CANARY@')")]), "RECIPE: unknown recipe"),
        case("recipe_path", Env, env(&[("RECIPE", b"../../../etc/passwd")]), "RECIPE: unknown recipe"),
        case("recipe_shell", Env, env(&[("RECIPE", b"$(touch @CANARY@)")]), "RECIPE: unknown recipe"),
        case("recipe_100k", Env, Input::Env(vec![("RECIPE", b"A".repeat(100_000))]), "RECIPE: unknown recipe"),
        case("image_name_shell", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("IMAGE_NAME", b"x; touch @CANARY@")]), "IMAGE_NAME: "),
        case("image_name_substitution", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("IMAGE_NAME", b"$(touch @CANARY@)")]), "IMAGE_NAME: "),
        case("pool_dir_is_a_file", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("LNST_POOL_DIR", b"/etc/hostname")]), "LNST_POOL_DIR: "),
        case("pool_dir_is_a_device", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("LNST_POOL_DIR", b"/dev/null")]), "LNST_POOL_DIR: "),
        case("pool_dir_name_too_long", Env, Input::Env(vec![("RECIPE", b"SimpleNetworkRecipe".to_vec()), ("LNST_POOL_DIR", [b"/".to_vec(), b"a".repeat(100_000)].concat())]), "LNST_POOL_DIR: "),
        case("nothing_to_run", Env, env(&[]), "set RECIPE (and RECIPE_PARAMS) or TEST_DB"),
        // ---- TEST_DB. ----
        case("db_unclosed_object", TestDb, db("{"), "TEST_DB: not valid JSON"),
        case("db_unclosed_list", TestDb, db("["), "TEST_DB: not valid JSON"),
        case("db_bracket_mismatch", TestDb, db("[{]"), "TEST_DB: not valid JSON"),
        case("db_trailing_garbage", TestDb, db(r#"[{"recipe_name": "SimpleNetworkRecipe"}] x"#), "TEST_DB: not valid JSON"),
        case("db_utf8_bom", TestDb, db(&b"\xef\xbb\xbf[{\"recipe_name\": \"SimpleNetworkRecipe\"}]"[..]), "TEST_DB: not valid JSON"),
        case("db_object", TestDb, db("{}"), "TEST_DB: expected a JSON list"),
        case("db_string", TestDb, db(r#""tests""#), "TEST_DB: expected a JSON list"),
        case("db_empty_list", TestDb, db("[]"), "TEST_DB: the list of tests is empty"),
        case("db_number_entry", TestDb, db("[1]"), "TEST_DB: entry 0: expected an object"),
        case("db_null_entry", TestDb, db("[null]"), "TEST_DB: entry 0: expected an object"),
        case("db_recipe_name_number", TestDb, db(r#"[{"recipe_name": 5}]"#), "TEST_DB: entry 0: recipe_name"),
        case("db_unknown_recipe", TestDb, db(r#"[{"recipe_name": "Nope"}]"#), "TEST_DB: entry 0: unknown recipe 'Nope'"),
        case("db_params_list", TestDb, db_params("[]"), "TEST_DB: entry 0: params must be an object"),
        case("db_params_string", TestDb, db_params(r#""perf_iterations=1""#), "TEST_DB: entry 0: params must be an object"),
        case("db_uuid_traversal", TestDb, db(r#"[{"uuid": "../../x", "recipe_name": "SimpleNetworkRecipe"}]"#), "TEST_DB: entry 0: uuid"),
        case("db_uuid_number", TestDb, db(r#"[{"uuid": 5, "recipe_name": "SimpleNetworkRecipe"}]"#), "TEST_DB: entry 0: uuid"),
        case("db_duplicate_uuid", TestDb, db(r#"[{"uuid": "a", "recipe_name": "SimpleNetworkRecipe"}, {"uuid": "a", "recipe_name": "SimpleNetworkRecipe"}]"#), "TEST_DB: entry 1 (a): duplicate test id"),
        case("db_duplicate_param_key", TestDb, db_params(r#"{"perf_iterations": 1, "perf_iterations": 100}"#), "duplicate key 'perf_iterations'"),
        case("db_duplicate_recipe_name", TestDb, db(r#"[{"recipe_name": "Nope", "recipe_name": "SimpleNetworkRecipe"}]"#), "duplicate key 'recipe_name'"),
        case("db_unknown_field", TestDb, db(r#"[{"recipe_name": "SimpleNetworkRecipe", "parms": {"perf_iterations": 1}}]"#), "TEST_DB: entry 0: unknown field 'parms'"),
        case("db_unknown_param", TestDb, db_params(r#"{"bogus": 1}"#), "TEST_DB: entry 0: params: 'bogus'"),
        case("db_unknown_param_100k", TestDb, db_params(&format!(r#"{{"{}": 1}}"#, "p".repeat(100_000))), "TEST_DB: entry 0: params: 'ppp"),
        case("db_wrong_type", TestDb, db_params(r#"{"perf_iterations": "5"}"#), "TEST_DB: entry 0: params: perf_iterations"),
        case("db_null_param", TestDb, db_params(r#"{"perf_iterations": null}"#), "TEST_DB: entry 0: params: perf_iterations"),
        case("db_code_in_int_param", TestDb, db_params(r#"{"perf_iterations": "__import__('os').system('touch @CANARY@')"}"#), "TEST_DB: entry 0: params: perf_iterations"),
        case("db_bare_string_ip_versions", TestDb, db_params(r#"{"ip_versions": "ipv4"}"#), "TEST_DB: entry 0: params: ip_versions"),
        case("db_huge_file", TestDb, db(format!("[{}]", " ".repeat(9 * 1024 * 1024))), "TEST_DB: cannot read"),
        case("db_missing_file", TestDb, Input::TestDbAt(b"@HOME@/missing.json".to_vec()), "TEST_DB: cannot read"),
        case("db_directory", TestDb, Input::TestDbAt(b"@HOME@".to_vec()), "TEST_DB: cannot read"),
        case("db_file_url_directory", TestDb, Input::TestDbAt(b"file://@HOME@".to_vec()), "TEST_DB: cannot read"),
        case("db_dev_zero", TestDb, Input::TestDbAt(b"/dev/zero".to_vec()), "TEST_DB: cannot read /dev/zero"),
        case("db_fifo", TestDb, Input::TestDbMade(|h| {
            let f = h.join("db.fifo");
            mkfifo(&f);
            f
        }), "TEST_DB: cannot read"),
        case("db_symlink_loop", TestDb, Input::TestDbMade(|h| {
            symlink("b.json", &h.join("a.json"));
            symlink("a.json", &h.join("b.json"));
            h.join("a.json")
        }), "TEST_DB: cannot read"),
        // Refused before any connection: 198.51.100.0/24 (TEST-NET-2) is never contacted.
        case("db_plain_http_outside", TestDb, Input::TestDbAt(b"http://198.51.100.1/test_db.json".to_vec()), "TEST_DB: cannot read http://198.51.100.1"),
        case("db_plain_http_userinfo_trick", TestDb, Input::TestDbAt(b"http://127.0.0.1@198.51.100.1/x".to_vec()), "TEST_DB: cannot read"),
        case("db_plain_http_mapped_v6", TestDb, Input::TestDbAt(b"http://[::ffff:198.51.100.1]/x".to_vec()), "TEST_DB: cannot read"),
        case("db_ftp_url_is_a_path", TestDb, Input::TestDbAt(b"ftp://198.51.100.1/x".to_vec()), "TEST_DB: cannot read"),
        case("db_https_closed_loopback_port", TestDb, Input::TestDbAt(b"https://127.0.0.1:1/test_db.json".to_vec()), "TEST_DB: cannot read https://127.0.0.1:1"),
        case("db_http_closed_loopback_port", TestDb, Input::TestDbAt(b"http://127.0.0.1:1/test_db.json".to_vec()), "TEST_DB: cannot read http://127.0.0.1:1"),
        case("db_empty_https_url", TestDb, Input::TestDbAt(b"https://".to_vec()), "TEST_DB: cannot read"),
        case("db_malformed_url", TestDb, Input::TestDbAt(b"http://[::1".to_vec()), "TEST_DB: cannot read"),
        // ---- Pool XML. ----
        case("xml_internal_entity", PoolXml, xml(r#"<!DOCTYPE agentmachine [<!ENTITY h "198.18.0.1">]><agentmachine><params><param name="hostname" value="&h;"/></params></agentmachine>"#), "m.xml:1:"),
        case("xml_external_entity", PoolXml, xml(r#"<!DOCTYPE agentmachine [<!ENTITY x SYSTEM "file:///etc/passwd">]><agentmachine><params><param name="hostname">&x;</param></params></agentmachine>"#), "m.xml:1:"),
        case("xml_billion_laughs", PoolXml, xml(&include_bytes!("fixtures/pool/bad/billion_laughs/m.xml")[..]), "m.xml:1:"),
        case("xml_parameter_entity", PoolXml, xml(r#"<!DOCTYPE x [<!ENTITY % p SYSTEM "http://198.51.100.1/x.dtd"> %p;]><agentmachine/>"#), "m.xml:1:"),
        case("xml_external_dtd", PoolXml, xml(r#"<!DOCTYPE agentmachine SYSTEM "http://198.51.100.1/x.dtd"><agentmachine/>"#), "m.xml:1:"),
        case("xml_undeclared_entity", PoolXml, xml(r#"<agentmachine><params><param name="hostname" value="&passwd;"/></params></agentmachine>"#), "m.xml:1:"),
        case("xml_nul_char_reference", PoolXml, machine(r#"<params><param name="x" value="&#0;"/></params>"#), "m.xml:1:"),
        case("xml_xinclude", PoolXml, machine(r#"<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="/etc/passwd"/>"#), "m.xml:1:"),
        case("xml_nesting_100k_open", PoolXml, xml(format!("<agentmachine>{}", "<params>".repeat(100_000))), "m.xml:1:"),
        case("xml_nesting_1000_balanced", PoolXml, xml(format!("<agentmachine>{}{}</agentmachine>", "<a>".repeat(1000), "</a>".repeat(1000))), "m.xml:1:"),
        case("xml_huge_attribute", PoolXml, iface(&format!(r#"<eth id="e" label="n"><params><param name="hwaddr" value="{}"/></params></eth>"#, "A".repeat(900_000))), "m.xml:1:"),
        case("xml_huge_element_name", PoolXml, machine(&format!("<{}/>", "t".repeat(500_000))), "m.xml:1:"),
        case("xml_invalid_utf8", PoolXml, xml(&b"<agentmachine><params><param name=\"hostname\" value=\"\xff\"/></params></agentmachine>"[..]), "m.xml:1:1: not valid UTF-8"),
        case("xml_nul_byte", PoolXml, xml(&b"<agentmachine>\0</agentmachine>"[..]), "m.xml:1:"),
        case("xml_utf16_bom", PoolXml, xml(&b"\xff\xfe<\x00a\x00/\x00>\x00"[..]), "m.xml:1:1: not valid UTF-8"),
        case("xml_wrong_root", PoolXml, xml(r#"<agentmachines><params><param name="hostname" value="198.18.0.1"/></params></agentmachines>"#), "m.xml:1:1: root element must be <agentmachine>"),
        case("xml_missing_hostname", PoolXml, xml("<agentmachine><params/></agentmachine>"), "m.xml:1:1: mandatory parameter 'hostname' missing"),
        case("xml_empty_hostname", PoolXml, xml(r#"<agentmachine><params><param name="hostname" value=" "/></params></agentmachine>"#), "parameter 'hostname' of machine m is empty"),
        case("xml_duplicate_hostname_param", PoolXml, machine(r#"<params><param name="hostname">198.18.0.2</param></params>"#), "duplicate parameter 'hostname'"),
        case("xml_duplicate_eth_id", PoolXml, iface(&format!(r#"<eth id="e" label="n">{MAC1}</eth><eth id="e" label="n"><params><param name="hwaddr" value="52:54:00:00:00:02"/></params></eth>"#)), "duplicate interface id 'e'"),
        case("xml_duplicate_hwaddr", PoolXml, iface(&format!(r#"<eth id="e1" label="n">{MAC1}</eth><eth id="e2" label="n">{MAC1}</eth>"#)), "duplicate hwaddr 52:54:00:00:00:01"),
        case("xml_eth_without_label", PoolXml, iface(&format!(r#"<eth id="e">{MAC1}</eth>"#)), "without a label attribute"),
        case("xml_param_without_name", PoolXml, machine(r#"<params><param value="x"/></params>"#), "<param> without a name attribute"),
        case("xml_bad_mac", PoolXml, iface(r#"<eth id="e" label="n"><params><param name="hwaddr" value="52:54:00:00:00:zz"/></params></eth>"#), "is not a MAC address"),
        case("xml_rpc_port_zero", PoolXml, machine(r#"<params><param name="rpc_port" value="0"/></params>"#), "rpc_port '0' is not a TCP port"),
        case("xml_rpc_port_99999", PoolXml, machine(r#"<params><param name="rpc_port" value="99999"/></params>"#), "rpc_port '99999' is not a TCP port"),
        case("xml_rpc_port_shell", PoolXml, machine(r#"<params><param name="rpc_port" value="9999; touch @CANARY@"/></params>"#), "rpc_port '9999; touch"),
        case("xml_processing_instruction", PoolXml, machine("<?php system('touch @CANARY@'); ?>"), "processing instructions are not allowed"),
        case("xml_stylesheet_pi", PoolXml, xml(r#"<?xml-stylesheet href="http://198.51.100.1/x.xsl"?><agentmachine><params><param name="hostname" value="198.18.0.1"/></params></agentmachine>"#), "m.xml:1:1: processing instructions"),
        case("xml_cdata_markup_in_value", PoolXml, machine(r#"<params><param name="rpc_port"><![CDATA[9999</param><param name="x">]]></param></params>"#), "rpc_port '9999</param>"),
        case("xml_cdata_in_container", PoolXml, machine(r#"<interfaces><![CDATA[<eth id="e"/>]]></interfaces>"#), "unexpected text inside <interfaces>"),
        case("xml_unknown_attribute", PoolXml, xml(r#"<agentmachine><params><param name="hostname" value="198.18.0.1" valeu="x"/></params></agentmachine>"#), "unknown attribute 'valeu' on <param>"),
        case("xml_unknown_element", PoolXml, machine("<script>touch @CANARY@</script>"), "unexpected element <script>"),
        case("xml_namespaced_root", PoolXml, xml(r#"<x:agentmachine xmlns:x="urn:evil"><x:params><x:param name="hostname" value="198.18.0.1"/></x:params></x:agentmachine>"#), "is in a namespace"),
        case("xml_value_and_text", PoolXml, machine(r#"<params><param name="x" value="a">b</param></params>"#), "has both a value attribute and text"),
        case("xml_pubkey_security", PoolXml, machine("<security><auth_type>pubkey</auth_type></security>"), "auth_type 'pubkey' is not supported"),
        case("xml_auth_type_multiline", PoolXml, machine("<security><auth_type>none\nrm</auth_type></security>"), "unknown auth_type"),
        case("xml_json_content", PoolXml, xml(r#"{"hostname": "198.18.0.1"}"#), "m.xml:1:1:"),
        case("xml_elf_binary", PoolXml, xml(&b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0>\0"[..]), "m.xml:1:"),
        case("xml_empty_file", PoolXml, xml(""), "m.xml:1:"),
        case("xml_trailing_garbage", PoolXml, xml(r#"<agentmachine><params><param name="hostname" value="198.18.0.1"/></params></agentmachine><agentmachine/>"#), "m.xml:1:"),
        case("xml_oversized_file", PoolXml, machine(&"<!-- padding -->".repeat(70_000)), "m.xml:1:1: file is larger than"),
        case("xml_symlink_loop", PoolXml, Input::PoolMade(|d| {
            symlink("b.xml", &d.join("a.xml"));
            symlink("a.xml", &d.join("b.xml"));
        }), "a.xml: Too many levels of symbolic links"),
        case("xml_fifo", PoolXml, Input::PoolMade(|d| mkfifo(&d.join("m.xml"))), "m.xml: not a regular file (a FIFO)"),
        case("xml_dangling_symlink", PoolXml, Input::PoolMade(|d| symlink("/nonexistent/lnst/m.xml", &d.join("m.xml"))), "m.xml: No such file"),
        case("xml_symlink_to_dev_zero", PoolXml, Input::PoolMade(|d| symlink("/dev/zero", &d.join("m.xml"))), "m.xml: not a regular file (a character device)"),
        case("xml_non_utf8_file_name", PoolXml, Input::PoolMade(|d| {
            let f = d.join(std::ffi::OsStr::from_bytes(b"m\xff.xml"));
            std::fs::write(f, "<agentmachine/>").unwrap_or_else(|e| panic!("{e}"));
        }), "file name is not valid UTF-8"),
        // ---- The same through `run`, and warnings that must not add lines. ----
        case("run_import_system", Injection, run(p("perf_iterations=__import__('os').system('touch @CANARY@')")), "RECIPE_PARAMS: perf_iterations"),
        case("run_fstring", Injection, run(p(r#"driver=f'{open("@CANARY@","w")}'"#)), "RECIPE_PARAMS: driver"),
        case("run_shell_substitution", Injection, run(p("driver=$(touch @CANARY@)")), "RECIPE_PARAMS: driver"),
        case("run_params_list_60k", Nesting, run(p(format!("perf_tests={}", "[".repeat(60_000)))), "RECIPE_PARAMS: perf_tests"),
        case("run_ping_interval_1e300", Numbers, run(p("ping_interval=1e300")), "RECIPE_PARAMS: ping_interval"),
        case("run_duplicate_key", Syntax, run(p("perf_iterations=1;perf_iterations=2")), "RECIPE_PARAMS: perf_iterations: parameter given more than once"),
        case("run_pool_nesting_100k", PoolXml, run(xml(format!("<agentmachine>{}", "<params>".repeat(100_000)))), "m.xml:1:"),
        case("run_pool_fifo", PoolXml, run(Input::PoolMade(|d| mkfifo(&d.join("m.xml")))), "m.xml: not a regular file (a FIFO)"),
        case("run_pool_external_entity", PoolXml, run(xml(r#"<!DOCTYPE agentmachine [<!ENTITY x SYSTEM "file:///etc/passwd">]><agentmachine><params><param name="hostname">&x;</param></params></agentmachine>"#)), "m.xml:1:"),
        case("recipe_with_test_db_and_bad_params", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("TEST_DB", b"/nonexistent.json"), ("RECIPE_PARAMS", b"bogus=1")]), "RECIPE_PARAMS: 'bogus'"),
        case("debug_on_with_bad_params", Env, env(&[("RECIPE", b"SimpleNetworkRecipe"), ("DEBUG", b"1"), ("RECIPE_PARAMS", b"perf_iterations=-1")]), "RECIPE_PARAMS: perf_iterations"),
    ];
    // Keep the declaration order stable for the report.
    v.sort_by_key(|c| c.cat);
    v
}

/// `input` with the placeholders replaced.
fn subst(input: &[u8], home: &Path) -> Vec<u8> {
    let canary = home.join("canary");
    let mut s = input.to_vec();
    for (pat, rep) in [
        (CANARY, canary.as_os_str().as_bytes()),
        (HOME, home.as_os_str().as_bytes()),
    ] {
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

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
    hung: bool,
    pid: u32,
}

/// Run a command with a deadline; a child still running then is killed.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Outcome {
    let t0 = Instant::now();
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start lnst-runner: {e}"));
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
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if t0.elapsed() > timeout => {
                hung = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
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
        pid,
    }
}

fn os(b: Vec<u8>) -> std::ffi::OsString {
    std::ffi::OsString::from(std::ffi::OsStr::from_bytes(&b))
}

/// Set up `input` in home `h` and add its arguments and variables to `cmd`; `run` selects
/// `lnst-runner run` instead of `plan` / `pool check`.
fn prepare(cmd: &mut Command, input: &Input, h: &Path, run: bool) {
    let plan = if run { "run" } else { "plan" };
    let pool = |cmd: &mut Command, d: &Path| {
        if run {
            cmd.arg("run")
                .env("RECIPE", "SimpleNetworkRecipe")
                .env("LNST_POOL_DIR", d);
        } else {
            cmd.args(["pool", "check"]).arg(d);
        }
    };
    match input {
        Input::Params(b) => {
            cmd.arg(plan)
                .env("RECIPE", "SimpleNetworkRecipe")
                .env("RECIPE_PARAMS", os(subst(b, h)));
        }
        Input::Env(vars) => {
            cmd.arg(plan);
            for (k, v) in vars {
                cmd.env(k, os(subst(v, h)));
            }
        }
        Input::TestDb(b) => {
            let f = h.join("test_db.json");
            std::fs::write(&f, subst(b, h)).unwrap_or_else(|e| panic!("{e}"));
            cmd.arg(plan).env("TEST_DB", &f);
        }
        Input::TestDbAt(b) => {
            cmd.arg(plan).env("TEST_DB", os(subst(b, h)));
        }
        Input::TestDbMade(make) => {
            let f = make(h);
            cmd.arg(plan).env("TEST_DB", f);
        }
        Input::Pool(b) => {
            let d = h.join("pooldir");
            std::fs::create_dir(&d).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(d.join("m.xml"), subst(b, h)).unwrap_or_else(|e| panic!("{e}"));
            pool(cmd, &d);
        }
        Input::PoolMade(make) => {
            let d = h.join("pooldir");
            std::fs::create_dir(&d).unwrap_or_else(|e| panic!("{e}"));
            make(&d);
            pool(cmd, &d);
        }
        Input::Run(inner) => {
            cmd.env("LNST_AGENT_BIN", h.join("no-such-agent"));
            prepare(cmd, inner, h, true);
        }
    }
}

/// Run one case; returns its failures (empty: it passed), the runner's pid and its run time.
fn run_case(c: &Case) -> (Vec<String>, u32, Duration) {
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let h = home.path();
    let canary = h.join("canary");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lnst-runner"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", h)
        .env("LNST_POOL_DIR", h.join("pool"))
        .env("LNST_RESULTS_DIR", h.join("results"))
        .current_dir(h);
    prepare(&mut cmd, &c.input, h, false);
    let before = tree(h);
    let o = run_with_timeout(cmd, CASE_TIMEOUT);
    let after = tree(h);

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
    for (what, text) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        if shows_crash(text) {
            fail(format!("{what} shows a panic or an overflow"));
        }
    }
    if !o.stdout.is_empty() {
        fail(format!("stdout is not empty: {:?}", clip(&o.stdout)));
    }
    let lines: Vec<&str> = o.stderr.lines().collect();
    if lines.len() != 1 || !o.stderr.ends_with('\n') || o.stderr.matches('\n').count() != 1 {
        fail(format!(
            "stderr is {} lines, expected exactly one: {:?}",
            lines.len(),
            clip(&o.stderr)
        ));
    }
    let first = lines.first().copied().unwrap_or("");
    if first.trim().is_empty() {
        fail("stderr line is empty".into());
    } else if !first.starts_with("lnst-runner: ") {
        fail(format!(
            "stderr line lacks the 'lnst-runner: ' prefix: {:?}",
            clip(first)
        ));
    }
    if !first.contains(c.culprit) {
        fail(format!(
            "stderr line does not name the culprit {:?}: {:?}",
            c.culprit,
            clip(first)
        ));
    }
    if canary.exists() {
        fail("the canary file was created: input was executed".into());
    }
    if before != after {
        let new: Vec<&PathBuf> = after.iter().filter(|p| !before.contains(p)).collect();
        let gone: Vec<&PathBuf> = before.iter().filter(|p| !after.contains(p)).collect();
        fail(format!("home changed: new {new:?}, gone {gone:?}"));
    }
    (fails, o.pid, o.took)
}

/// Output of a panic or a stack overflow.
fn shows_crash(text: &str) -> bool {
    text.contains("panicked") || text.contains("RUST_BACKTRACE") || text.contains("overflowed")
}

fn clip(s: &str) -> String {
    let mut t: String = s.chars().take(300).collect();
    if s.chars().nth(300).is_some() {
        t.push('…');
    }
    t
}

#[test]
fn corpus_has_at_least_100_cases() {
    let c = corpus();
    assert!(c.len() >= 100, "only {} cases", c.len());
    let mut names: Vec<&str> = c.iter().map(|c| c.name).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "case names must be unique");
    for cat in [
        Cat::Injection,
        Cat::Nesting,
        Cat::Numbers,
        Cat::Encoding,
        Cat::Syntax,
        Cat::Env,
        Cat::TestDb,
        Cat::PoolXml,
    ] {
        assert!(
            c.iter().filter(|x| x.cat == cat).count() >= 5,
            "category {cat:?} is thin"
        );
    }
    assert!(c.iter().all(|x| !x.culprit.is_empty()));
}

/// `lnst-` namespaces in /run/netns.
fn lnst_namespaces() -> Vec<String> {
    common::netns_with_prefix("lnst-")
}

/// Runner state files (`/run/lnst-runner/*.json`) as (pid, namespaces).
fn run_states() -> Vec<(u32, Vec<String>)> {
    let Ok(rd) = std::fs::read_dir("/run/lnst-runner") else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .map(|v| {
            let pid = v["pid"].as_u64().unwrap_or(0) as u32;
            let ns = v["namespaces"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            (pid, ns)
        })
        .collect()
}

#[test]
fn hostile_inputs_are_rejected_with_one_line_and_exit_2() {
    let cases = corpus();
    let root = common::is_root();
    let ns_before = lnst_namespaces();
    let next = AtomicUsize::new(0);
    type Done = (usize, Vec<String>, u32, Duration);
    let results: Mutex<Vec<Done>> = Mutex::new(Vec::new());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(c) = cases.get(i) else { break };
                let (fails, pid, took) = run_case(c);
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, fails, pid, took));
            });
        }
    });
    let took = t0.elapsed();
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|r| r.0);
    let pids: Vec<u32> = results.iter().map(|r| r.2).collect();

    let mut report = String::new();
    let mut per_cat: BTreeMap<Cat, (usize, usize)> = BTreeMap::new();
    for (i, fails, _, _) in &results {
        let c = &cases[*i];
        let e = per_cat.entry(c.cat).or_default();
        e.0 += 1;
        if !fails.is_empty() {
            e.1 += 1;
            for f in fails {
                report.push_str(&format!("  {:?}/{}: {f}\n", c.cat, c.name));
            }
        }
    }
    // Nothing provisioned: no new lnst- namespace that a run of ours created (another
    // session's live run may own new ones; those are listed in its state file).
    if root {
        let states = run_states();
        for ns in lnst_namespaces() {
            if ns_before.contains(&ns) {
                continue;
            }
            let owner = states
                .iter()
                .find(|(_, list)| list.contains(&ns))
                .map(|(pid, _)| *pid);
            match owner {
                Some(pid) if !pids.contains(&pid) => {}
                _ if !Path::new("/run/netns").join(&ns).exists() => {}
                _ => report.push_str(&format!("  network namespace {ns} appeared\n")),
            }
        }
        for (pid, ns) in &states {
            if pids.contains(pid) {
                report.push_str(&format!("  runner {pid} left a state file for {ns:?}\n"));
            }
        }
    } else {
        eprintln!("note: not root, the network namespace check is skipped");
    }
    let slowest = results.iter().max_by_key(|r| r.3);
    eprintln!(
        "hostile corpus: {} cases in {:.1} s (slowest: {} in {:.2} s)",
        cases.len(),
        took.as_secs_f64(),
        slowest.map_or("-", |r| cases[r.0].name),
        slowest.map_or(0.0, |r| r.3.as_secs_f64())
    );
    for (cat, (n, failed)) in &per_cat {
        eprintln!("  {cat:?}: {n} cases, {failed} failed");
    }
    assert!(report.is_empty(), "hostile inputs mishandled:\n{report}");
}

// ---------------------------------------------------------------------------------------------
// The agent: hostile frames over stdio.
// ---------------------------------------------------------------------------------------------

/// A `lnst-agent --stdio` child; frames are read by a thread.
struct Agent {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    frames: mpsc::Receiver<Result<Message, String>>,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Read one frame synchronously: Ok(None) on a clean EOF.
fn read_frame(r: &mut impl Read) -> Result<Option<Vec<u8>>, String> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err("EOF inside a length prefix".into()),
            Ok(n) => got += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(format!("agent sent a {n}-byte frame"));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(Some(buf))
}

impl Agent {
    /// Start the agent and read its Hello.
    fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let stderr_path = dir.path().join("agent.log");
        let log = std::fs::File::create(&stderr_path).unwrap_or_else(|e| panic!("{e}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_lnst-agent"))
            .arg("--stdio")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn lnst-agent: {e}"));
        let mut out = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || loop {
            let m = match read_frame(&mut out) {
                Ok(None) => break,
                Ok(Some(b)) => serde_json::from_slice::<Message>(&b).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            let stop = m.is_err();
            if tx.send(m).is_err() || stop {
                break;
            }
        });
        let mut a = Agent {
            child,
            stdin,
            frames: rx,
            stderr_path,
            _dir: dir,
        };
        match a.recv() {
            Some(Message::Hello(h)) => assert!(!h.auth_required),
            other => panic!("expected Hello, got {other:?}"),
        }
        a
    }

    /// Start the agent and complete the (unauthenticated) handshake.
    fn started() -> Agent {
        let mut a = Agent::start();
        a.send(&Message::Start {
            protocol_version: PROTOCOL_VERSION,
        });
        a
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        if let Some(w) = self.stdin.as_mut() {
            // The agent may already have closed the connection; that is checked by the caller.
            let _ = w.write_all(bytes).and_then(|_| w.flush());
        }
    }

    fn send(&mut self, m: &Message) {
        let f = protocol::encode_message(m).unwrap_or_else(|e| panic!("encode: {e}"));
        self.send_raw(&f);
    }

    /// Send `payload` as one frame.
    fn send_payload(&mut self, payload: &[u8]) {
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(payload);
        self.send_raw(&f);
    }

    /// The next frame that is not a log event; None on EOF. A malformed frame from the agent
    /// or no frame within 10 s fails the test.
    fn recv(&mut self) -> Option<Message> {
        loop {
            match self.frames.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(Message::Event { .. })) => continue,
                Ok(Ok(m)) => return Some(m),
                Ok(Err(e)) => panic!("agent sent a bad frame: {e}"),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("no frame from the agent in 10 s"),
            }
        }
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Wait for the agent to exit; returns (success, stderr).
    fn finish(mut self) -> (bool, String) {
        self.close_stdin();
        let t0 = Instant::now();
        let ok = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st.success(),
                Ok(None) if t0.elapsed() > Duration::from_secs(10) => {
                    panic!("agent still running 10 s after its input closed")
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("wait: {e}"),
            }
        };
        let log = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        (ok, log)
    }
}

fn assert_no_panic(what: &str, log: &str) {
    assert!(!shows_crash(log), "{what}: agent log shows a panic:\n{log}");
}

/// One hostile frame sequence that must end the connection: what is sent after the Hello
/// (and after Start when `handshake`), and whether an `Error` reply is required.
struct FatalCase {
    name: &'static str,
    handshake: bool,
    bytes: Vec<u8>,
    /// Close stdin after sending (the agent then sees EOF).
    close: bool,
    /// The `Error` kind expected before the close; None: an Error or a plain close.
    error: Option<ErrorKind>,
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

fn fatal_corpus() -> Vec<FatalCase> {
    let big = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    let fc = |name, handshake, bytes: Vec<u8>, close, error| FatalCase {
        name,
        handshake,
        bytes,
        close,
        error,
    };
    let mut truncated = 100u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(br#"{"type":"#);
    vec![
        fc(
            "length_above_max_before_handshake",
            false,
            big.clone(),
            false,
            Some(ErrorKind::Protocol),
        ),
        fc(
            "length_above_max_after_handshake",
            true,
            big,
            false,
            Some(ErrorKind::Protocol),
        ),
        fc(
            "length_u32_max",
            true,
            vec![0xff; 4],
            false,
            Some(ErrorKind::Protocol),
        ),
        fc("truncated_payload_then_eof", true, truncated, true, None),
        fc("truncated_length_then_eof", true, vec![0, 0], true, None),
        fc(
            "zero_length_frame",
            true,
            framed(b""),
            false,
            Some(ErrorKind::Protocol),
        ),
        fc(
            "garbage_json",
            true,
            framed(b"{{{{{"),
            false,
            Some(ErrorKind::Protocol),
        ),
        fc(
            "invalid_utf8_payload",
            true,
            framed(b"\xff\xfe\xfd"),
            false,
            Some(ErrorKind::Protocol),
        ),
        fc(
            "unknown_message_type",
            true,
            framed(br#"{"type":"Frobnicate","cmd":"touch /tmp/x"}"#),
            false,
            Some(ErrorKind::Protocol),
        ),
        fc(
            "deep_array_1mib",
            true,
            framed(&b"[".repeat(1 << 20)),
            false,
            Some(ErrorKind::Protocol),
        ),
        fc(
            "deep_object_100k",
            true,
            framed(br#"{"a":"#.repeat(100_000).as_slice()),
            false,
            Some(ErrorKind::Protocol),
        ),
        fc(
            "request_without_id",
            true,
            framed(br#"{"type":"Request","op":{"op":"ListInterfaces"}}"#),
            false,
            Some(ErrorKind::Protocol),
        ),
        fc(
            "request_negative_id",
            true,
            framed(br#"{"type":"Request","id":-1,"op":{"op":"ListInterfaces"}}"#),
            false,
            Some(ErrorKind::Protocol),
        ),
        fc(
            "response_from_controller",
            true,
            framed(br#"{"type":"Response","id":1,"result":{"Ok":{"reply":"Ok"}}}"#),
            false,
            Some(ErrorKind::Protocol),
        ),
        fc(
            "request_before_handshake",
            false,
            framed(br#"{"type":"Request","id":1,"op":{"op":"Shell","argv":["touch","/tmp/x"]}}"#),
            false,
            Some(ErrorKind::AuthFailed),
        ),
        fc(
            "garbage_before_handshake",
            false,
            framed(b"GET / HTTP/1.1\r\n\r\n"),
            false,
            Some(ErrorKind::Protocol),
        ),
        fc(
            "http_request_as_frame_header",
            false,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            false,
            Some(ErrorKind::Protocol),
        ),
        fc(
            "wrong_protocol_version",
            false,
            framed(br#"{"type":"Start","protocol_version":3}"#),
            false,
            Some(ErrorKind::VersionMismatch),
        ),
        fc(
            "version_above_u32",
            false,
            framed(br#"{"type":"Start","protocol_version":4294967296}"#),
            false,
            Some(ErrorKind::Protocol),
        ),
        fc(
            "auth_to_agent_without_secret",
            false,
            framed(
                format!(
                    r#"{{"type":"Auth","protocol_version":2,"client_nonce":"{}","mac":"00"}}"#,
                    "ab".repeat(32)
                )
                .as_bytes(),
            ),
            false,
            Some(ErrorKind::AuthFailed),
        ),
    ]
}

#[test]
fn agent_fatal_frames() {
    let cases = fatal_corpus();
    assert!(cases.len() >= 15);
    let mut report = String::new();
    for c in &cases {
        let mut a = if c.handshake {
            Agent::started()
        } else {
            Agent::start()
        };
        a.send_raw(&c.bytes);
        if c.close {
            a.close_stdin();
        }
        let reply = a.recv();
        match (&reply, c.error) {
            (Some(Message::Error(e)), Some(kind)) if e.kind == kind => {}
            (Some(Message::Error(_)) | None, None) => {}
            (other, want) => report.push_str(&format!(
                "  {}: expected an Error {want:?}, got {other:?}\n",
                c.name
            )),
        }
        if reply.is_some() {
            let after = a.recv();
            if after.is_some() {
                report.push_str(&format!(
                    "  {}: connection not closed after the error: {after:?}\n",
                    c.name
                ));
            }
        }
        let (ok, log) = a.finish();
        if !ok {
            report.push_str(&format!("  {}: agent exited with an error\n", c.name));
        }
        if shows_crash(&log) {
            report.push_str(&format!("  {}: agent panicked:\n{log}\n", c.name));
        }
    }
    eprintln!("agent fatal frames: {} cases", cases.len());
    assert!(
        report.is_empty(),
        "agent mishandled hostile frames:\n{report}"
    );
}

#[test]
fn agent_survives_bad_requests() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let canary = dir.path().join("canary");
    let c = canary.display().to_string();
    let deep = format!(
        r#"{{"type":"Request","id":{{ID}},"op":{{"op":"Shell","argv":{}{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let long_name = "x".repeat(100_000);
    // (name, request payload with {ID}, expected error kind or None for any error)
    let bad: Vec<(&str, String, Option<ErrorKind>)> = vec![
        ("unknown_op", format!(r#"{{"type":"Request","id":{{ID}},"op":{{"op":"RunShell","cmd":"touch {c}"}}}}"#), Some(ErrorKind::BadRequest)),
        ("missing_field", r#"{"type":"Request","id":{ID},"op":{"op":"SetMtu","ifname":"lo"}}"#.into(), Some(ErrorKind::BadRequest)),
        ("negative_mtu", r#"{"type":"Request","id":{ID},"op":{"op":"SetMtu","ifname":"nosuch0","mtu":-1}}"#.into(), Some(ErrorKind::BadRequest)),
        ("mtu_as_string", r#"{"type":"Request","id":{ID},"op":{"op":"SetMtu","ifname":"nosuch0","mtu":"1500"}}"#.into(), Some(ErrorKind::BadRequest)),
        ("mtu_above_u32", r#"{"type":"Request","id":{ID},"op":{"op":"SetMtu","ifname":"nosuch0","mtu":1099511627776}}"#.into(), Some(ErrorKind::BadRequest)),
        ("unknown_field", r#"{"type":"Request","id":{ID},"op":{"op":"SetMtu","ifname":"nosuch0","mtu":1400,"argv":["touch","/tmp/x"]}}"#.into(), Some(ErrorKind::BadRequest)),
        ("unknown_field_in_message", r#"{"type":"Request","id":{ID},"op":{"op":"GetOffloads","ifname":"nosuch0"},"shell":true}"#.into(), Some(ErrorKind::BadRequest)),
        ("op_not_an_object", r#"{"type":"Request","id":{ID},"op":"ListInterfaces; touch /tmp/x"}"#.into(), Some(ErrorKind::BadRequest)),
        ("deeply_nested_op", deep, Some(ErrorKind::BadRequest)),
        ("unknown_job_spec", format!(r#"{{"type":"Request","id":{{ID}},"op":{{"op":"StartJob","spec":{{"kind":"Exec","argv":["touch","{c}"]}}}}}}"#), Some(ErrorKind::BadRequest)),
        ("shell_not_allowed", format!(r#"{{"type":"Request","id":{{ID}},"op":{{"op":"Shell","argv":["touch","{c}"]}}}}"#), Some(ErrorKind::NotAllowed)),
        ("sysctl_escape", format!(r#"{{"type":"Request","id":{{ID}},"op":{{"op":"SysctlWrite","path":"/proc/sys/../../{c}","value":"1"}}}}"#), Some(ErrorKind::NotAllowed)),
        ("sysctl_relative_escape", r#"{"type":"Request","id":{ID},"op":{"op":"SysctlWrite","path":"net/../../../tmp/x","value":"1"}}"#.into(), Some(ErrorKind::NotAllowed)),
        ("set_mtu_unknown_interface", r#"{"type":"Request","id":{ID},"op":{"op":"SetMtu","ifname":"nosuch0","mtu":1400}}"#.into(), Some(ErrorKind::NotFound)),
        ("offloads_path_like_interface", r#"{"type":"Request","id":{ID},"op":{"op":"GetOffloads","ifname":"../../etc"}}"#.into(), Some(ErrorKind::BadRequest)),
        ("interface_name_100k", format!(r#"{{"type":"Request","id":{{ID}},"op":{{"op":"SetLink","ifname":"{long_name}","up":true}}}}"#), Some(ErrorKind::BadRequest)),
        ("interface_name_100k_start_recipe", format!(r#"{{"type":"Request","id":{{ID}},"op":{{"op":"StartRecipe","interfaces":["{long_name}"]}}}}"#), Some(ErrorKind::BadRequest)),
        ("interface_name_with_nul", r#"{"type":"Request","id":{ID},"op":{"op":"SetLink","ifname":"lo\u0000x","up":false}}"#.into(), Some(ErrorKind::BadRequest)),
        ("interface_name_option_like", r#"{"type":"Request","id":{ID},"op":{"op":"GetOffloads","ifname":"--help"}}"#.into(), Some(ErrorKind::BadRequest)),
        ("wait_unknown_job", r#"{"type":"Request","id":{ID},"op":{"op":"WaitJob","job_id":999,"timeout_ms":10}}"#.into(), Some(ErrorKind::NotFound)),
        ("stop_unknown_job", r#"{"type":"Request","id":{ID},"op":{"op":"StopJob","job_id":18446744073709551615}}"#.into(), Some(ErrorKind::NotFound)),
        ("bad_address", r#"{"type":"Request","id":{ID},"op":{"op":"AddAddress","ifname":"nosuch0","addr":"not-an-address"}}"#.into(), None),
    ];
    let mut a = Agent::started();
    let mut report = String::new();
    for (i, (name, payload, want)) in bad.iter().enumerate() {
        let id = 1000 + i as u64;
        a.send_payload(payload.replace("{ID}", &id.to_string()).as_bytes());
        match a.recv() {
            Some(Message::Response {
                id: rid,
                result: Err(e),
            }) if rid == id && want.is_none_or(|k| k == e.kind) => {
                if e.message.len() > 2000 {
                    report.push_str(&format!(
                        "  {name}: {}-byte error message\n",
                        e.message.len()
                    ));
                }
            }
            other => report.push_str(&format!(
                "  {name}: expected an error response {want:?} for id {id}, got {other:?}\n"
            )),
        }
    }
    // Extreme but valid values: u64::MAX milliseconds must not overflow a deadline.
    a.send_payload(
        br#"{"type":"Request","id":3,"op":{"op":"WaitDad","ifname":"lo","timeout_ms":18446744073709551615}}"#,
    );
    match a.recv() {
        Some(Message::Response {
            id: 3,
            result: Ok(_),
        }) => {}
        other => report.push_str(&format!("  WaitDad lo u64::MAX ms: {other:?}\n")),
    }
    a.send_payload(
        br#"{"type":"Request","id":4,"op":{"op":"StartJob","spec":{"kind":"CpuStat","interval_ms":18446744073709551615}}}"#,
    );
    match a.recv() {
        Some(Message::Response {
            id: 4,
            result: Ok(protocol::Reply::JobId(job)),
        }) => {
            a.send(&Message::Request {
                id: 5,
                op: Op::StopJob { job_id: job },
            });
            match a.recv() {
                Some(Message::Response {
                    id: 5,
                    result: Ok(_),
                }) => {}
                other => report.push_str(&format!("  StopJob of the sampler: {other:?}\n")),
            }
        }
        other => report.push_str(&format!("  CpuStat u64::MAX ms: {other:?}\n")),
    }
    // The session still works: a valid request, a keepalive, then a clean bye.
    a.send(&Message::Request {
        id: 1,
        op: Op::ListInterfaces,
    });
    match a.recv() {
        Some(Message::Response {
            id: 1,
            result: Ok(protocol::Reply::Interfaces(ifs)),
        }) => assert!(ifs.iter().any(|i| i.name == "lo"), "{ifs:?}"),
        other => report.push_str(&format!(
            "  ListInterfaces after the bad requests: {other:?}\n"
        )),
    }
    a.send(&Message::Ping { seq: 77 });
    match a.recv() {
        Some(Message::Pong { seq: 77 }) => {}
        other => report.push_str(&format!("  Ping after the bad requests: {other:?}\n")),
    }
    a.send(&Message::Request { id: 2, op: Op::Bye });
    match a.recv() {
        Some(Message::Response {
            id: 2,
            result: Ok(_),
        }) => {}
        other => report.push_str(&format!("  Bye: {other:?}\n")),
    }
    let (ok, log) = a.finish();
    assert_no_panic("bad requests", &log);
    assert!(ok, "agent exited with an error:\n{log}");
    assert!(!canary.exists(), "a request was executed");
    eprintln!("agent bad requests: {} cases", bad.len());
    assert!(
        report.is_empty(),
        "agent mishandled bad requests:\n{report}"
    );
}
