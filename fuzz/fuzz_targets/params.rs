//! RECIPE_PARAMS: `parse_value`, `parse_params`, and validation of the parsed parameters
//! against the SimpleNetworkRecipe schema (`schema::resolve`), all pure.
//!
//! Invariants checked besides "no panic, no hang, no stack overflow":
//! * every `parse_params` error is prefixed `RECIPE_PARAMS: `; accepted keys are unique
//!   identifiers;
//! * no accepted dict has two keys Python holds equal (`1`, `True`, `1.0`; `0`, `False`,
//!   `-0.0`; tuples of them), nor two keys with the same JSON key;
//! * Display is a Python repr: it parses back to an equal value (unless the value sits at
//!   the nesting limit, where a `-` sign costs one more level, or the repr exceeds the input
//!   limit);
//! * JSON: `to_json` → `from_json` succeeds and `to_json` of the result is identical; the
//!   JSON text parses back to the same document (floats to within a few ULPs, see common.rs);
//! * resolved parameters are a fixed point of `resolve`, and the plan JSON of resolved
//!   parameters, fed back as TEST_DB params, resolves to the same plan JSON.
//!
//! Checks run on a 512 KiB stack (common.rs) so that deep recursion shows up as a crash.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use lnst_runner::params::{parse_params, parse_value, Value, MAX_DEPTH, MAX_INPUT};
use lnst_runner::{plan, recipes, schema};

fuzz_target!(|data: &[u8]| common::on_small_stack(data, check));

fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(v) = parse_value(&text) {
        check_value(&v);
    }
    match parse_params(&text) {
        Ok(pairs) => {
            for (i, (k, v)) in pairs.iter().enumerate() {
                assert!(is_identifier(k), "key {k:?}");
                assert!(pairs.iter().skip(i + 1).all(|(o, _)| o != k), "dup {k}");
                check_value(v);
            }
            check_resolve(pairs);
        }
        Err(e) => {
            let m = e.to_string();
            assert!(m.starts_with("RECIPE_PARAMS: "), "{m}");
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Container nesting of a value (a scalar is 0).
fn nesting(v: &Value) -> usize {
    match v {
        Value::List(xs) | Value::Tuple(xs) => 1 + xs.iter().map(nesting).max().unwrap_or(0),
        Value::Dict(d) => {
            1 + d
                .iter()
                .map(|(k, x)| nesting(k).max(nesting(x)))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// Python's `==` on two hashable values (bool, int and float compare by value; tuples item by
/// item), written independently of the parser's own check.
fn py_eq(a: &Value, b: &Value) -> bool {
    fn num(v: &Value) -> Option<f64> {
        match v {
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Int(x), Value::Bool(y)) | (Value::Bool(y), Value::Int(x)) => *x == i64::from(*y),
        (Value::Int(i), Value::Float(f)) | (Value::Float(f), Value::Int(i)) => {
            // Exact: the float must be integral and the int must convert back unchanged.
            f.fract() == 0.0 && (*i as f64) == *f && (*f as i128) == i128::from(*i)
        }
        (Value::Tuple(x), Value::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

/// No dict, at any depth, has two keys that are one key in Python or in JSON.
fn check_dict_keys(v: &Value) {
    match v {
        Value::Dict(d) => {
            let mut json_keys = std::collections::HashSet::new();
            for (i, (k, x)) in d.iter().enumerate() {
                for (k2, _) in d.iter().skip(i + 1) {
                    assert!(!py_eq(k, k2), "keys {k} and {k2} are one key in Python");
                }
                assert!(json_keys.insert(k.json_key()), "key {k} twice in JSON");
                check_dict_keys(k);
                check_dict_keys(x);
            }
        }
        Value::List(xs) | Value::Tuple(xs) => xs.iter().for_each(check_dict_keys),
        _ => {}
    }
}

fn check_value(v: &Value) {
    check_dict_keys(v);

    // Python repr round trip.
    let repr = v.to_string();
    match parse_value(&repr) {
        Ok(back) => assert_eq!(&back, v, "repr {repr}"),
        Err(e) => {
            let m = e.to_string();
            let limit = repr.len() > MAX_INPUT && m.contains("the limit is");
            let depth = nesting(v) >= MAX_DEPTH && m.contains("nesting deeper");
            assert!(limit || depth, "repr {repr} of {v:?} does not parse: {m}");
        }
    }

    // JSON rendering.
    let j = v.to_json();
    let back = match Value::from_json(&j) {
        Ok(b) => b,
        Err(e) => panic!("from_json({j}) of {v:?}: {e}"),
    };
    assert_eq!(back.to_json(), j);
    let text = match serde_json::to_string(&j) {
        Ok(t) => t,
        Err(e) => panic!("serialize {v:?}: {e}"),
    };
    let reread: serde_json::Value = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => panic!("reparse {text}: {e}"),
    };
    assert!(common::json_close(&reread, &j), "{text} reread as {reread}");
}

fn check_resolve(pairs: Vec<(String, Value)>) {
    let def = match recipes::find("SimpleNetworkRecipe") {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let specs = (def.params)();
    let resolved = match schema::resolve(def.name, &specs, pairs) {
        Ok(r) => r,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    // Schema order, only known names, every defaulted parameter present.
    let names: Vec<&str> = resolved.iter().map(|(k, _)| k).collect();
    let expected: Vec<&str> = specs
        .iter()
        .map(|s| s.name)
        .filter(|n| names.contains(n))
        .collect();
    assert_eq!(names, expected);
    for s in &specs {
        if s.default.is_some() || s.mandatory {
            assert!(resolved.contains(s.name), "{} missing", s.name);
        }
    }

    // A fixed point of resolve.
    let again: Vec<(String, Value)> = resolved
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    match schema::resolve(def.name, &specs, again) {
        Ok(r) => assert_eq!(r, resolved),
        Err(e) => panic!("resolved params do not resolve again: {e}"),
    }

    // Plan JSON → TEST_DB params → the same plan JSON.
    let j = resolved.to_json();
    let given: Vec<(String, Value)> = j
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, x)| match Value::from_json(x) {
                    Ok(v) => (k.clone(), v),
                    Err(e) => panic!("{k}: {e}"),
                })
                .collect()
        })
        .unwrap_or_default();
    match schema::resolve(def.name, &specs, given) {
        Ok(r) => assert_eq!(r.to_json(), j),
        Err(e) => panic!("plan JSON {j} does not resolve again: {e}"),
    }

    // Resolved parameters convert into the recipe's typed struct (or are refused there, as
    // unknown offload names or too small networks are: one line), whose requirements build.
    let planned = match (def.plan)(&resolved) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "multi-line plan error: {e}");
            return;
        }
    };
    let _ = planned.requirements();

    // The same through the real TEST_DB reader (JSON text).
    let doc = serde_json::json!([{"recipe_name": def.name, "params": j}]);
    let bytes = match serde_json::to_vec(&doc) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    };
    match plan::plan_from_test_db(&bytes) {
        Ok(p) => {
            assert_eq!(p.tests.len(), 1);
            let back = p.tests[0].params.to_json();
            assert!(common::json_close(&back, &j), "TEST_DB {back} != {j}");
        }
        Err(e) => panic!("plan JSON {j} is not a valid TEST_DB entry: {e}"),
    }
}
