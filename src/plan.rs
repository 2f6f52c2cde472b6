//! Plan: RECIPE/RECIPE_PARAMS or TEST_DB → validated tests.
//!
//! With `RECIPE` set (non-empty), the plan is one test `0_<Recipe>` whose parameters come from
//! `RECIPE_PARAMS` (a set `TEST_DB` is then ignored, as upstream). Otherwise `TEST_DB` names a
//! JSON file (path, `file://` path, or `http(s)://` URL; certificates are verified, 10 s
//! timeout, at most 8 MiB) holding `[{"uuid"?, "recipe_name", "params"?}, ...]`, at most
//! [`MAX_TEST_DB_ENTRIES`] of them. Every test is validated against its recipe's schema before
//! anything runs. The credentials of a URL (`https://user:password@host/...`) are never shown:
//! every message and log line gives the URL with them replaced by `***`.

use crate::config::Config;
use crate::params::{parse_params, ParamsError, Value};
use crate::recipes::{self, Planned, UnknownRecipe};
use crate::schema::{resolve, ResolvedParams, SchemaError};
use std::io::Read;
use std::time::Duration;

/// Largest accepted TEST_DB document.
pub const TEST_DB_LIMIT: u64 = 8 * 1024 * 1024;
/// Network timeout for fetching TEST_DB.
pub const TEST_DB_TIMEOUT: Duration = Duration::from_secs(10);
/// Most tests in one TEST_DB (each runs a recipe: far more than a day of testing).
pub const MAX_TEST_DB_ENTRIES: usize = 10_000;

/// One test to run.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSpec {
    /// Result directory name: the TEST_DB uuid, or `<index>_<recipe>`.
    pub id: String,
    pub recipe: String,
    /// The parameters as given and defaulted (for the plan output and the descriptions).
    pub params: ResolvedParams,
    /// The recipe with its typed parameters.
    pub planned: Planned,
}

/// The tests of one run, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub tests: Vec<TestSpec>,
}

/// Why no plan could be made; one line naming the culprit.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Params(#[from] ParamsError),
    #[error("RECIPE_PARAMS: {0}")]
    Schema(#[from] SchemaError),
    #[error("RECIPE: {0}")]
    UnknownRecipe(#[from] UnknownRecipe),
    #[error("nothing to run: set RECIPE (and RECIPE_PARAMS) or TEST_DB")]
    NothingToRun,
    #[error("TEST_DB: cannot read {location}: {message}")]
    TestDbRead { location: String, message: String },
    #[error("TEST_DB: {0}")]
    TestDb(String),
    #[error("TEST_DB: entry {index}{id}: {message}")]
    TestDbEntry {
        index: usize,
        /// ` (id)` when known.
        id: String,
        message: String,
    },
}

impl Plan {
    /// Build and validate the plan from the configuration.
    pub fn from_config(config: &Config) -> Result<Plan, PlanError> {
        if let Some(recipe) = &config.recipe {
            let def = recipes::find(recipe)?;
            let given = parse_params(&config.recipe_params)?;
            let params = resolve(def.name, &(def.params)(), given)?;
            let planned = (def.plan)(&params)?;
            // Warned only once the plan stands: bad input gets its one error line alone.
            if config.test_db.is_some() {
                tracing::warn!("RECIPE is set, so TEST_DB is ignored");
            }
            return Ok(Plan {
                tests: vec![TestSpec {
                    id: format!("0_{}", def.name),
                    recipe: def.name.to_string(),
                    params,
                    planned,
                }],
            });
        }
        let Some(location) = &config.test_db else {
            return Err(PlanError::NothingToRun);
        };
        let bytes = read_test_db(location)?;
        plan_from_test_db(&bytes)
    }
}

/// Whether `host` (as the URL parser normalised it: `127.0.0.1`, `[::1]`, `localhost`) is a
/// loopback address, the only place plain http is fetched from.
fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Fetch TEST_DB over https (certificates verified, redirects only to https), or over plain
/// http from a loopback address only (no redirects): a job description fetched in clear text
/// from the network could be swapped on the way.
///
/// Credentials in the URL are sent as a `Basic` Authorization header (as the HTTP client would
/// do itself), and the client is given the URL without them: its log lines quote the URL.
fn fetch_test_db(location: &str, buf: &mut Vec<u8>) -> Result<(), String> {
    let (location, userinfo) = split_userinfo(location);
    let location = location.as_str();
    let probe = ureq::AgentBuilder::new().build();
    let url = probe
        .get(location)
        .request_url()
        .map_err(|e| format!("not a valid URL: {e}"))?;
    let https = match url.scheme() {
        "https" => true,
        "http" if is_loopback_host(url.host()) => false,
        "http" => {
            return Err(format!(
                "plain http:// is refused for host {} (use https://, or a file path)",
                clip(url.host())
            ))
        }
        other => return Err(format!("unsupported URL scheme {}", clip(other))),
    };
    tracing::debug!(url = %redact_url(location), "fetching TEST_DB");
    let agent = ureq::AgentBuilder::new()
        .timeout(TEST_DB_TIMEOUT)
        .https_only(https)
        .redirects(if https { 5 } else { 0 })
        .build();
    let mut req = agent.get(location);
    if let Some(userinfo) = &userinfo {
        req = req.set(
            "Authorization",
            &format!("Basic {}", base64(userinfo.as_bytes())),
        );
    }
    let resp = req.call().map_err(|e| match e {
        ureq::Error::Status(code, _) => format!("HTTP status {code}"),
        ureq::Error::Transport(t) => t.to_string(),
    })?;
    if (300..400).contains(&resp.status()) {
        return Err(format!(
            "HTTP status {}: redirects are not followed for plain http",
            resp.status()
        ));
    }
    resp.into_reader()
        .take(TEST_DB_LIMIT + 1)
        .read_to_end(buf)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// `s` shortened to 200 characters for messages (env values may be 128 KiB).
fn clip(s: &str) -> String {
    crate::text::clip(s, 200)
}

/// Where the authority of a URL ends in `after` (the text after `://`): at `/`, `?`, `#`,
/// whitespace, a quote or an angle bracket.
fn authority_end(after: &str) -> usize {
    after
        .find(|c: char| matches!(c, '/' | '?' | '#' | '\'' | '"' | '<' | '>') || c.is_whitespace())
        .unwrap_or(after.len())
}

/// URL `url` without its userinfo, and the userinfo (`user:password`, as written) if it has
/// a non-empty one.
fn split_userinfo(url: &str) -> (String, Option<String>) {
    let Some(at) = url.find("://") else {
        return (url.to_string(), None);
    };
    let (head, after) = url.split_at(at + 3);
    let end = authority_end(after);
    match after[..end].rfind('@') {
        Some(i) => {
            let userinfo = &after[..i];
            let bare = format!("{head}{}", &after[i + 1..]);
            (bare, (!userinfo.is_empty()).then(|| userinfo.to_string()))
        }
        None => (url.to_string(), None),
    }
}

/// Standard base64 with padding (RFC 4648), for a Basic Authorization header.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `text` with the credentials of every URL in it (`scheme://user:password@host...`) replaced
/// by `***`: the userinfo is whatever stands between `://` and the last `@` of the authority
/// (which ends at `/`, `?`, `#`, whitespace or a quote). Applied to the TEST_DB location and to
/// every message about it (an HTTP client's error quotes the URL too).
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let (authority, tail) = after.split_at(authority_end(after));
        match authority.rfind('@') {
            Some(i) => {
                out.push_str("***");
                out.push_str(&authority[i..]);
            }
            None => out.push_str(authority),
        }
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Read the TEST_DB document from a path or URL, bounded in size and time.
fn read_test_db(location: &str) -> Result<Vec<u8>, PlanError> {
    let read_err = |message: String| PlanError::TestDbRead {
        location: clip(&redact_url(location)),
        message: redact_url(&message),
    };
    let mut buf = Vec::new();
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        fetch_test_db(location, &mut buf).map_err(read_err)?;
    } else {
        let path = location.strip_prefix("file://").unwrap_or(location);
        buf = crate::fsread::read_regular_file(std::path::Path::new(path), TEST_DB_LIMIT)
            .map_err(|e| read_err(e.reason()))?;
    }
    if buf.len() as u64 > TEST_DB_LIMIT {
        return Err(read_err(format!(
            "larger than the limit of {TEST_DB_LIMIT} bytes"
        )));
    }
    Ok(buf)
}

/// A JSON value parsed like `serde_json::Value`, except that an object with a duplicate key
/// is an error (serde_json keeps the last one silently, so `{"perf_iterations": 1,
/// "perf_iterations": 100}` would run 100 iterations without a word). serde_json's recursion
/// limit still applies.
struct StrictJson(serde_json::Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        serde_json::Number::from_f64(v)
            .map(serde_json::Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::new();
        while let Some(StrictJson(x)) = seq.next_element()? {
            v.push(x);
        }
        Ok(serde_json::Value::Array(v))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut m = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if m.contains_key(&k) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate key {}",
                    crate::text::quote(&k, 64)
                )));
            }
            let StrictJson(v) = map.next_value()?;
            m.insert(k, v);
        }
        Ok(serde_json::Value::Object(m))
    }
}

/// The fields of one TEST_DB entry.
const ENTRY_FIELDS: &[&str] = &["uuid", "recipe_name", "params"];

/// A uuid usable as a results directory name.
fn safe_id(id: &str) -> bool {
    let mut cs = id.chars();
    id.len() <= 128
        && cs.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && cs.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A safe uuid that is nevertheless a name of the results layout (`summary.json`,
/// `junit.xml`, `results.zip`): the test would run and its results be dropped.
fn reserved_id(id: &str) -> bool {
    safe_id(id) && !crate::results::export::is_safe_id(id)
}

/// Validate a TEST_DB JSON document into a plan.
pub fn plan_from_test_db(bytes: &[u8]) -> Result<Plan, PlanError> {
    let StrictJson(doc) = serde_json::from_slice(bytes)
        .map_err(|e| PlanError::TestDb(format!("not valid JSON: {e}")))?;
    let entries = doc
        .as_array()
        .ok_or_else(|| PlanError::TestDb("expected a JSON list of tests".into()))?;
    if entries.is_empty() {
        return Err(PlanError::TestDb("the list of tests is empty".into()));
    }
    if entries.len() > MAX_TEST_DB_ENTRIES {
        return Err(PlanError::TestDb(format!(
            "{} tests; the limit is {MAX_TEST_DB_ENTRIES}",
            entries.len()
        )));
    }
    let mut tests: Vec<TestSpec> = Vec::with_capacity(entries.len());
    let mut ids: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (index, entry) in entries.iter().enumerate() {
        let entry_err = |id: &str, message: String| PlanError::TestDbEntry {
            index,
            id: if id.is_empty() {
                String::new()
            } else {
                format!(" ({id})")
            },
            message,
        };
        let obj = entry
            .as_object()
            .ok_or_else(|| entry_err("", "expected an object".into()))?;
        // An unknown field is an error: a misspelt "params" would otherwise run defaults.
        if let Some(key) = obj.keys().find(|k| !ENTRY_FIELDS.contains(&k.as_str())) {
            return Err(entry_err(
                "",
                format!(
                    "unknown field {} (expected {})",
                    crate::text::quote(key, 64),
                    ENTRY_FIELDS.join(", ")
                ),
            ));
        }
        let uuid = match obj.get("uuid") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(u)) if reserved_id(u) => {
                return Err(entry_err(
                    "",
                    format!(
                        "uuid {} is the name of a file of the results directory; choose another",
                        Value::Str(u.clone())
                    ),
                ))
            }
            Some(serde_json::Value::String(u)) if safe_id(u) => Some(u.clone()),
            Some(serde_json::Value::String(u)) => {
                return Err(entry_err(
                    "",
                    format!(
                        "uuid {} is not a safe directory name (letters, digits, '.', '_', '-'; at most 128)",
                        crate::text::quote(u, 64)
                    ),
                ))
            }
            Some(_) => return Err(entry_err("", "uuid must be a string".into())),
        };
        let uuid_shown = uuid.clone().unwrap_or_default();
        let recipe_name = obj
            .get("recipe_name")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| entry_err(&uuid_shown, "recipe_name (a string) is missing".into()))?;
        let def = recipes::find(recipe_name).map_err(|e| entry_err(&uuid_shown, e.to_string()))?;
        let given: Vec<(String, Value)> = match obj.get("params") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    Value::from_json(v)
                        .map(|v| (k.clone(), v))
                        .map_err(|e| entry_err(&uuid_shown, format!("params: {k}: {e}")))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(entry_err(&uuid_shown, "params must be an object".into())),
        };
        let params = resolve(def.name, &(def.params)(), given)
            .map_err(|e| entry_err(&uuid_shown, format!("params: {e}")))?;
        let planned =
            (def.plan)(&params).map_err(|e| entry_err(&uuid_shown, format!("params: {e}")))?;
        let id = uuid.unwrap_or_else(|| format!("{index}_{}", def.name));
        if !ids.insert(id.clone()) {
            return Err(entry_err(&id, "duplicate test id".into()));
        }
        tests.push(TestSpec {
            id,
            recipe: def.name.to_string(),
            params,
            planned,
        });
    }
    Ok(Plan { tests })
}

/// The resolved plan as printed by `lnst-runner plan`.
pub fn plan_json(config: &Config, plan: &Plan) -> serde_json::Value {
    serde_json::json!({
        "agents": config.agent_mode.name(),
        "debug": config.debug,
        "multimatch": config.multimatch,
        "formatters": config.formatters.iter().map(|f| f.name()).collect::<Vec<_>>(),
        "pool_dir": config.pool_dir.to_string_lossy(),
        "results_dir": config.results_dir.to_string_lossy(),
        "tests": plan.tests.iter().map(|t| serde_json::json!({
            "id": t.id,
            "recipe": t.recipe,
            "params": t.params.to_json(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AgentMode, FormatterKind};
    use std::path::PathBuf;

    fn config() -> Config {
        Config {
            recipe: None,
            recipe_params: String::new(),
            test_db: None,
            formatters: vec![FormatterKind::Human],
            debug: false,
            multimatch: false,
            podman_uri: None,
            image_name: "lnst-agent".into(),
            oci_runtime: None,
            pool_dir: PathBuf::from("/p"),
            results_dir: PathBuf::from("/r"),
            agent_mode: AgentMode::Netns,
            baseline_file: None,
            baseline: None,
            agent_bin: None,
            path: Vec::new(),
            vm: None,
        }
    }

    fn err_of(r: Result<Plan, PlanError>) -> String {
        match r {
            Ok(p) => panic!("unexpected plan {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn recipe_plan() {
        let mut c = config();
        c.recipe = Some("SimpleNetworkRecipe".into());
        c.recipe_params = "perf_iterations=1;perf_tests=['tcp_stream']".into();
        let p = Plan::from_config(&c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.tests.len(), 1);
        assert_eq!(p.tests[0].id, "0_SimpleNetworkRecipe");
        assert_eq!(p.tests[0].params.int("perf_iterations"), Some(1));
        assert_eq!(p.tests[0].params.int("perf_duration"), Some(60));
        let j = plan_json(&c, &p);
        assert_eq!(j["agents"], "netns");
        assert_eq!(j["formatters"], serde_json::json!(["human"]));
        assert_eq!(
            j["tests"][0]["params"]["perf_tests"],
            serde_json::json!(["tcp_stream"])
        );
        let keys: Vec<&String> = j
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            [
                "agents",
                "debug",
                "multimatch",
                "formatters",
                "pool_dir",
                "results_dir",
                "tests"
            ]
        );
    }

    #[test]
    fn recipe_plan_errors() {
        let mut c = config();
        assert!(err_of(Plan::from_config(&c)).starts_with("nothing to run"));
        c.recipe = Some("Nope".into());
        assert!(err_of(Plan::from_config(&c)).starts_with("RECIPE: unknown recipe 'Nope'"));
        c.recipe = Some("SimpleNetworkRecipe".into());
        c.recipe_params = "perf_iteration=1".into();
        assert_eq!(
            err_of(Plan::from_config(&c)),
            "RECIPE_PARAMS: unknown parameter 'perf_iteration' for SimpleNetworkRecipe (did you mean 'perf_iterations'?)"
        );
        c.recipe_params = "perf_iterations='1'".into();
        assert!(err_of(Plan::from_config(&c))
            .starts_with("RECIPE_PARAMS: perf_iterations: expected an int"));
        c.recipe_params = "ip_versions=ipv4".into();
        assert!(err_of(Plan::from_config(&c))
            .starts_with("RECIPE_PARAMS: ip_versions: column 1: names"));
        c.recipe_params = "net_ipv4='198.18.0.1/24'".into();
        assert!(err_of(Plan::from_config(&c)).contains("host bits"));
    }

    #[test]
    fn recipe_params_ranges_and_shapes_fail_before_running() {
        let mut c = config();
        c.recipe = Some("SimpleNetworkRecipe".into());
        for (params, want) in [
            // Each of these planned fine and failed, wrapped or panicked only at run time.
            (
                "ping_interval=1e300",
                "ping_interval: 1e+300 is out of range",
            ),
            (
                "ping_count=2**40",
                "ping_count: 1099511627776 is out of range",
            ),
            ("ping_psize=-56", "ping_psize: -56 is out of range"),
            ("perf_iterations=-1", "perf_iterations: -1 is out of range"),
            ("perf_duration=0", "perf_duration: 0 is out of range"),
            ("perf_parallel_streams=129", "perf_parallel_streams: 129"),
            ("mtu=99999999999", "mtu: 99999999999 is out of range"),
            (
                "perf_tool_cpu=[0, -1]",
                "perf_tool_cpu: item 1: -1 is out of range",
            ),
            (
                "ip_versions='ipv4'",
                "ip_versions: expected a list or tuple",
            ),
            (
                "ip_versions=('ipv5',)",
                "ip_versions: item 0: 'ipv5' is not one of",
            ),
            ("perf_tests=5", "perf_tests: expected a list or tuple"),
            (
                "offload_combinations=[{'gro': 1}]",
                "offload_combinations: item 0: key 'gro'",
            ),
        ] {
            c.recipe_params = params.into();
            let e = err_of(Plan::from_config(&c));
            assert!(
                e.starts_with(&format!("RECIPE_PARAMS: {want}")),
                "{params}: {e}"
            );
        }
        c.recipe_params =
            "ip_versions=['ipv6'];perf_tests=('tcp_rr',);offload_combinations=[]".into();
        assert!(Plan::from_config(&c).is_ok());
    }

    #[test]
    fn test_db_plan() {
        let doc = br#"[
          {"uuid": "abc-1", "recipe_name": "SimpleNetworkRecipe",
           "params": {"perf_tool_cpu": [6], "dev_intr_cpu": [0], "perf_parallel_processes": 1,
             "offload_combinations": [{"gro":"on","gso":"on","tso":"on","tx":"on","rx":"on"}],
             "perf_duration": 60, "ip_versions": ["ipv4"], "perf_tests": ["tcp_stream"],
             "perf_msg_sizes": [131072], "rx_pause_frames": false, "tx_pause_frames": false,
             "perf_iterations": 1, "net_ipv4": "198.18.220.0/24"}},
          {"recipe_name": "SimpleNetworkRecipe", "params": {"net_ipv6": "fd00:0:b100::/64", "ping_interval": 1}}
        ]"#;
        let p = plan_from_test_db(doc).unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<&str> = p.tests.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["abc-1", "1_SimpleNetworkRecipe"]);
        assert_eq!(
            p.tests[0].params.items("perf_tool_cpu").map(<[Value]>::len),
            Some(1)
        );
        assert_eq!(p.tests[0].params.bool("rx_pause_frames"), Some(false));
        assert_eq!(p.tests[1].params.float("ping_interval"), Some(1.0));
        assert_eq!(p.tests[1].params.int("perf_iterations"), Some(5));
    }

    #[test]
    fn test_db_errors() {
        let e = |s: &str| err_of(plan_from_test_db(s.as_bytes()));
        assert!(e("{").contains("not valid JSON"));
        assert!(e("{}").contains("expected a JSON list"));
        assert!(e("[]").contains("empty"));
        assert!(e("[1]").starts_with("TEST_DB: entry 0: expected an object"));
        assert!(e(r#"[{"params": {}}]"#).contains("recipe_name"));
        assert!(e(r#"[{"recipe_name": "X"}]"#).contains("unknown recipe 'X'"));
        assert!(
            e(r#"[{"uuid": "../x", "recipe_name": "SimpleNetworkRecipe"}]"#)
                .contains("safe directory name")
        );
        assert!(e(r#"[{"uuid": 5, "recipe_name": "SimpleNetworkRecipe"}]"#)
            .contains("uuid must be a string"));
        assert_eq!(
            e(
                r#"[{"uuid": "u1", "recipe_name": "SimpleNetworkRecipe", "params": {"perf_iterations": null}}]"#
            ),
            "TEST_DB: entry 0 (u1): params: perf_iterations: expected an int, got NoneType None"
        );
        assert!(
            e(r#"[{"recipe_name": "SimpleNetworkRecipe", "params": []}]"#)
                .contains("params must be an object")
        );
        assert!(e(r#"[{"uuid":"a","recipe_name":"SimpleNetworkRecipe"},{"uuid":"a","recipe_name":"SimpleNetworkRecipe"}]"#).contains("duplicate test id"));
        assert!(e(
            r#"[{"recipe_name": "SimpleNetworkRecipe", "params": {"mtu": 18446744073709551615}}]"#
        )
        .contains("64 bits"));
    }

    /// Serve `body` with `status` once per connection on a loopback port.
    fn serve(status: &'static str, body: Vec<u8>, conns: usize) -> String {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        std::thread::spawn(move || {
            for stream in listener.incoming().take(conns).flatten() {
                let mut stream = stream;
                let mut req = [0u8; 4096];
                let _ = std::io::Read::read(&mut stream, &mut req);
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        format!("http://{addr}/test_db.json")
    }

    #[test]
    fn test_db_over_http() {
        let mut c = config();
        c.test_db = Some(serve(
            "200 OK",
            br#"[{"uuid": "web-1", "recipe_name": "SimpleNetworkRecipe"}]"#.to_vec(),
            1,
        ));
        let p = Plan::from_config(&c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.tests.first().map(|t| t.id.as_str()), Some("web-1"));
        c.test_db = Some(serve("404 Not Found", b"nope".to_vec(), 1));
        assert!(err_of(Plan::from_config(&c)).contains("HTTP status 404"));
        c.test_db = Some(serve("200 OK", vec![b' '; (TEST_DB_LIMIT + 1) as usize], 1));
        assert!(err_of(Plan::from_config(&c)).contains("larger than the limit"));
    }

    #[test]
    fn url_credentials_are_never_shown_but_still_sent() {
        assert_eq!(
            redact_url("https://alice:pw@example.org/db.json"),
            "https://***@example.org/db.json"
        );
        assert_eq!(
            redact_url("GET http://a:b@c@127.0.0.1:1/x failed; see 'https://u@h?q'"),
            "GET http://***@127.0.0.1:1/x failed; see 'https://***@h?q'"
        );
        assert_eq!(redact_url("/path/with@at"), "/path/with@at");
        assert_eq!(redact_url("https://h/p@q"), "https://h/p@q");
        assert_eq!(
            split_userinfo("http://alice:s3cr3t@127.0.0.1:8/x"),
            (
                "http://127.0.0.1:8/x".to_string(),
                Some("alice:s3cr3t".to_string())
            )
        );
        assert_eq!(
            split_userinfo("http://@h/x"),
            ("http://h/x".to_string(), None)
        );
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"ab"), "YWI=");
        // The credentials reach the server as a Basic header, and no message shows them.
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
            let mut req = vec![0u8; 4096];
            let n = s.read(&mut req).unwrap_or(0);
            let _ =
                s.write_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        let mut c = config();
        c.test_db = Some(format!("http://alice:s3cr3t@{addr}/db.json"));
        let e = err_of(Plan::from_config(&c));
        assert!(e.contains("HTTP status 500"), "{e}");
        assert!(!e.contains("s3cr3t") && !e.contains("alice"), "{e}");
        assert!(e.contains(&format!("http://***@{addr}/db.json")), "{e}");
        let req = server.join().unwrap_or_default();
        assert!(
            req.contains("Authorization: Basic YWxpY2U6czNjcjN0\r\n"),
            "{req}"
        );
        assert!(!req.contains("s3cr3t"), "{req}");
        // A refused connection: the client's own error quotes the URL, redacted too.
        c.test_db = Some("http://alice:s3cr3t@127.0.0.1:1/db.json".into());
        let e = err_of(Plan::from_config(&c));
        assert!(!e.contains("s3cr3t") && !e.contains("alice"), "{e}");
    }

    #[test]
    fn test_db_plain_http_only_from_loopback() {
        let mut c = config();
        // Refused before any connection is attempted (these addresses are never contacted).
        for url in [
            "http://198.51.100.1/test_db.json",
            "HTTP://198.51.100.1/x",
            "http://127.0.0.1@198.51.100.1/x",
            "http://[::ffff:198.51.100.1]/x",
            "http://example.invalid/x",
        ] {
            c.test_db = Some(url.into());
            let e = err_of(Plan::from_config(&c));
            assert!(
                e.starts_with("TEST_DB: cannot read ") && e.contains("plain http:// is refused"),
                "{url}: {e}"
            );
        }
        c.test_db = Some("http://".into());
        assert!(err_of(Plan::from_config(&c)).contains("not a valid URL"));
        // Loopback http is fetched, but a redirect is not followed.
        c.test_db = Some(serve("301 Moved Permanently", b"[]".to_vec(), 1));
        assert!(err_of(Plan::from_config(&c)).contains("redirects are not followed"));
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("[::1]"));
        assert!(is_loopback_host("LocalHost"));
        assert!(!is_loopback_host("198.18.0.1"));
        assert!(!is_loopback_host("localhost.example"));
    }

    #[test]
    fn test_db_special_files_do_not_hang() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fifo = dir.path().join("db.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU)
            .unwrap_or_else(|e| panic!("mkfifo: {e}"));
        let mut c = config();
        c.test_db = Some(fifo.to_string_lossy().to_string());
        let t = std::time::Instant::now();
        let e = err_of(Plan::from_config(&c));
        assert!(e.contains("db.fifo: not a regular file (a FIFO)"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2));
        c.test_db = Some(dir.path().to_string_lossy().to_string());
        assert!(err_of(Plan::from_config(&c)).contains("not a regular file (a directory)"));
        c.test_db = Some("/dev/zero".into());
        assert!(err_of(Plan::from_config(&c)).contains("not a regular file"));
        c.test_db = Some(format!("/nonexistent/{}", "x".repeat(100_000)));
        let e = err_of(Plan::from_config(&c));
        assert!(e.len() < 400, "location not clipped: {} bytes", e.len());
    }

    #[test]
    fn test_db_uuids_that_are_results_file_names_are_refused() {
        for id in ["summary.json", "junit.xml", "results.zip"] {
            let e = err_of(plan_from_test_db(
                format!(r#"[{{"uuid": "{id}", "recipe_name": "SimpleNetworkRecipe"}}]"#).as_bytes(),
            ));
            assert_eq!(
                e,
                format!("TEST_DB: entry 0: uuid '{id}' is the name of a file of the results directory; choose another")
            );
        }
        for id in [".", "..", "a/b", "a\u{0}b", "", "-x", ".hidden"] {
            let doc = serde_json::json!([{"uuid": id, "recipe_name": "SimpleNetworkRecipe"}]);
            let e = err_of(plan_from_test_db(doc.to_string().as_bytes()));
            assert!(e.contains("is not a safe directory name"), "{id:?}: {e}");
        }
        assert!(plan_from_test_db(
            br#"[{"uuid": "summary.json.1", "recipe_name": "SimpleNetworkRecipe"}]"#
        )
        .is_ok());
    }

    #[test]
    fn test_db_size_is_capped_and_linear() {
        let entry = r#"{"recipe_name": "SimpleNetworkRecipe"}"#;
        let doc = |n: usize| format!("[{}]", vec![entry; n].join(","));
        let e = err_of(plan_from_test_db(doc(MAX_TEST_DB_ENTRIES + 1).as_bytes()));
        assert_eq!(
            e,
            format!(
                "TEST_DB: {} tests; the limit is {MAX_TEST_DB_ENTRIES}",
                MAX_TEST_DB_ENTRIES + 1
            )
        );
        let p = plan_from_test_db(doc(MAX_TEST_DB_ENTRIES).as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.tests.len(), MAX_TEST_DB_ENTRIES);
        assert_eq!(
            p.tests.last().map(|t| t.id.as_str()),
            Some("9999_SimpleNetworkRecipe")
        );
    }

    #[test]
    fn test_db_duplicate_keys_and_unknown_fields() {
        let e = |s: &str| err_of(plan_from_test_db(s.as_bytes()));
        let m = e(
            r#"[{"recipe_name": "SimpleNetworkRecipe", "params": {"perf_iterations": 1, "perf_iterations": 100}}]"#,
        );
        assert!(m.contains("duplicate key 'perf_iterations'"), "{m}");
        let m = e(r#"[{"recipe_name": "X", "recipe_name": "SimpleNetworkRecipe"}]"#);
        assert!(m.contains("duplicate key 'recipe_name'"), "{m}");
        let m = e(r#"[{"recipe_name": "SimpleNetworkRecipe", "parms": {"perf_iterations": 1}}]"#);
        assert_eq!(
            m,
            "TEST_DB: entry 0: unknown field 'parms' (expected uuid, recipe_name, params)"
        );
        // Same keys at different places are fine.
        assert!(plan_from_test_db(
            br#"[{"recipe_name": "SimpleNetworkRecipe", "params": {"coalescing_settings": {"host1": {"host1": {"rx-usecs": 1}}}}}]"#
        )
        .is_ok());
        assert!(e(&"[".repeat(100_000)).contains("recursion limit"));
    }

    #[test]
    fn test_db_from_file_and_limits() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let f = dir.path().join("db.json");
        std::fs::write(&f, r#"[{"recipe_name": "SimpleNetworkRecipe"}]"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut c = config();
        c.test_db = Some(f.to_string_lossy().to_string());
        let p = Plan::from_config(&c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.tests.len(), 1);
        c.test_db = Some(format!("file://{}", f.display()));
        assert!(Plan::from_config(&c).is_ok());
        c.test_db = Some(
            dir.path()
                .join("missing.json")
                .to_string_lossy()
                .to_string(),
        );
        assert!(err_of(Plan::from_config(&c)).starts_with("TEST_DB: cannot read"));
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; (TEST_DB_LIMIT + 10) as usize])
            .unwrap_or_else(|e| panic!("{e}"));
        c.test_db = Some(big.to_string_lossy().to_string());
        assert!(err_of(Plan::from_config(&c)).contains("larger than the limit"));
    }
}
