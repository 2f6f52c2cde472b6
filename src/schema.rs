//! Typed recipe parameter schemas and type checks, following upstream `Param.type_check`
//! (upstream `lnst/Common/Parameters.py`), with these deliberate differences:
//!
//! * `Int` accepts ints and floats with an integral value (`3.0` → 3); a non-integral float
//!   (`3.7`, which upstream silently truncates), a bool, or a string (`"5"`) is an error.
//! * `Float` accepts ints and floats (stored as float); nothing else.
//! * `Str` accepts only strings (upstream converts anything with `str(v)`).
//! * `Ipv4Net`/`Ipv6Net` are strict: host bits set or the wrong family is a clear error
//!   (upstream raises an uncaught `ValueError` for host bits). A bare address means /32 or /128.
//!   The stored value is normalised (`198.18.20.0/24`).
//!
//! As upstream: `Bool` takes only `True`/`False`; `List` only lists (tuples are rejected), with
//! the element type checked when given; `Dict` only dicts; `Any` anything; `Choice` checks
//! membership. Defaults are filled in, params without default that were not given stay
//! absent, a missing mandatory param and an unknown name are errors.

use crate::params::Value;
use std::fmt;

/// The type of one recipe parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamType {
    Int,
    Float,
    Str,
    Bool,
    /// A list (not a tuple); the element type is checked when given.
    List(Option<Box<ParamType>>),
    /// A list or a tuple (upstream untyped `Param`s that are iterated), each item of this type.
    Seq(Box<ParamType>),
    Dict,
    /// A dict with string keys and values of this type.
    Map(Box<ParamType>),
    /// Untyped (upstream `Param`): anything.
    Any,
    /// A string from a fixed set.
    Choice(Vec<&'static str>),
    Ipv4Net,
    Ipv6Net,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Int => write!(f, "int"),
            ParamType::Float => write!(f, "float"),
            ParamType::Str => write!(f, "str"),
            ParamType::Bool => write!(f, "bool"),
            ParamType::List(None) => write!(f, "list"),
            ParamType::List(Some(t)) => write!(f, "list[{t}]"),
            ParamType::Seq(t) => write!(f, "seq[{t}]"),
            ParamType::Dict => write!(f, "dict"),
            ParamType::Map(t) => write!(f, "dict[str, {t}]"),
            ParamType::Any => write!(f, "any"),
            ParamType::Choice(c) => write!(f, "choice{{{}}}", c.join("|")),
            ParamType::Ipv4Net => write!(f, "ipv4-network"),
            ParamType::Ipv6Net => write!(f, "ipv6-network"),
        }
    }
}

/// Inclusive bounds of a numeric parameter, or of every number in a list parameter. Values
/// outside are bad input (exit 2) instead of a failure, a wrap-around or a panic at run time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub min: f64,
    pub max: f64,
}

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {}", self.min, self.max)
    }
}

/// A check of a value beyond its type and range (a network large enough for the recipe):
/// `Err` is the message after `name: `.
#[derive(Clone, Copy)]
pub struct Check {
    /// What is checked, for the schema listing and comparisons.
    pub what: &'static str,
    pub check: fn(&Value) -> Result<(), String>,
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Check({})", self.what)
    }
}

impl PartialEq for Check {
    fn eq(&self, other: &Self) -> bool {
        self.what == other.what
    }
}

/// The network holds at least 2 host addresses (`.1` and `.2`, `::1` and `::2`): /30 or
/// larger for IPv4, /126 or larger for IPv6.
pub const TWO_HOSTS: Check = Check {
    what: "two host addresses",
    check: |v| {
        let Some(net) = v.as_str().and_then(|s| s.parse::<ipnet::IpNet>().ok()) else {
            return Ok(());
        };
        let (bits, max) = match net {
            ipnet::IpNet::V4(_) => (32 - u32::from(net.prefix_len()), "/30"),
            ipnet::IpNet::V6(_) => (128 - u32::from(net.prefix_len()), "/126"),
        };
        if bits >= 2 {
            Ok(())
        } else {
            Err(format!(
                "{} is too small: the recipe gives the first two host addresses to its devices (use {max} or larger)",
                short(v)
            ))
        }
    },
};

/// One declared recipe parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub default: Option<Value>,
    pub mandatory: bool,
    pub doc: &'static str,
    /// Accepted range of the value (or of each item of a list of numbers).
    pub bounds: Option<Bounds>,
    /// Further check of a given value (after type and range).
    pub check: Option<Check>,
    /// Key material: its value never shows in a result or a listing (`<redacted>`).
    pub secret: bool,
}

impl ParamSpec {
    /// An optional parameter without default.
    pub fn opt(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        ParamSpec {
            name,
            ty,
            default: None,
            mandatory: false,
            doc,
            bounds: None,
            check: None,
            secret: false,
        }
    }

    /// An optional parameter with a default.
    pub fn with_default(
        name: &'static str,
        ty: ParamType,
        default: Value,
        doc: &'static str,
    ) -> Self {
        ParamSpec {
            name,
            ty,
            default: Some(default),
            mandatory: false,
            doc,
            bounds: None,
            check: None,
            secret: false,
        }
    }

    /// A mandatory parameter.
    pub fn mandatory(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        ParamSpec {
            name,
            ty,
            default: None,
            mandatory: true,
            doc,
            bounds: None,
            check: None,
            secret: false,
        }
    }

    /// The same parameter, accepting only numbers in `min..=max`.
    pub fn range(mut self, min: f64, max: f64) -> Self {
        self.bounds = Some(Bounds { min, max });
        self
    }

    /// The same parameter, with a further check of given values.
    /// Mark the parameter as key material (see [`ParamSpec::secret`]).
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    pub fn check(mut self, check: Check) -> Self {
        self.check = Some(check);
        self
    }

    /// The same declaration under `name`.
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }
}

/// Validated parameters of one test, in schema order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvedParams {
    entries: Vec<(String, Value)>,
    /// The names of key-material parameters (shown as `<redacted>`).
    secret: Vec<String>,
}

impl ResolvedParams {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name)?.as_i64()
    }

    pub fn float(&self, name: &str) -> Option<f64> {
        self.get(name)?.as_f64()
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        self.get(name)?.as_bool()
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name)?.as_str()
    }

    pub fn items(&self, name: &str) -> Option<&[Value]> {
        self.get(name)?.items()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Every parameter as results and listings show it: key material as `<redacted>`.
    pub fn shown(&self) -> impl Iterator<Item = (&str, String)> {
        self.entries.iter().map(|(k, v)| {
            let text = if self.secret.contains(k) {
                "'<redacted>'".to_string()
            } else {
                v.to_string()
            };
            (k.as_str(), text)
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The same parameters plus the default of every one of `specs` that is absent (a group
    /// of parameters that a recipe declares without some of them reads those defaults).
    pub fn with_defaults(&self, specs: &[ParamSpec]) -> ResolvedParams {
        let mut entries = self.entries.clone();
        for s in specs {
            if let (false, Some(d)) = (self.contains(s.name), &s.default) {
                entries.push((s.name.to_string(), d.clone()));
            }
        }
        ResolvedParams {
            entries,
            secret: self.secret.clone(),
        }
    }

    /// A JSON object `{name: value}` in schema order.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.entries
                .iter()
                .map(|(k, v)| {
                    let v = if self.secret.contains(k) {
                        serde_json::Value::String("<redacted>".into())
                    } else {
                        v.to_json()
                    };
                    (k.clone(), v)
                })
                .collect(),
        )
    }
}

/// A parameter that does not fit the recipe's schema. Messages carry no "RECIPE_PARAMS:"
/// prefix; the caller adds where the value came from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    #[error("unknown parameter '{name}' for {recipe} (did you mean '{suggestion}'?)")]
    UnknownWithSuggestion {
        recipe: String,
        name: String,
        suggestion: &'static str,
    },
    #[error("'{name}' is not a parameter of {recipe} (see `lnst-runner recipes {recipe}`)")]
    Unknown { recipe: String, name: String },
    #[error("parameter '{name}' of {recipe} is mandatory")]
    Missing { recipe: String, name: &'static str },
    #[error("parameter '{name}' given more than once")]
    Duplicate { name: String },
    #[error("{name}: {message}")]
    Type { name: String, message: String },
}

/// Closest known name, if reasonably close.
fn suggest(name: &str, specs: &[ParamSpec]) -> Option<&'static str> {
    // Edit distances cost O(len²): a 60 000-character name took seconds per spec. No
    // parameter name is close to one that long.
    if name.chars().nth(64).is_some() {
        return None;
    }
    let mut best: Option<(f64, &'static str)> = None;
    for s in specs {
        let score = strsim::normalized_damerau_levenshtein(name, s.name);
        let dist = strsim::damerau_levenshtein(name, s.name);
        if (score >= 0.75 || dist <= 2) && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, s.name));
        }
    }
    best.map(|(_, n)| n)
}

/// Check `given` against `specs`, fill defaults, and return the parameters in schema order.
pub fn resolve(
    recipe: &str,
    specs: &[ParamSpec],
    given: Vec<(String, Value)>,
) -> Result<ResolvedParams, SchemaError> {
    let mut checked: Vec<(String, Value)> = Vec::new();
    for (name, value) in given {
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            let suggestion = suggest(&name, specs);
            // The name is user input of any length: shown cut to 64 characters.
            let name = crate::text::clip(&name, 64);
            return Err(match suggestion {
                Some(suggestion) => SchemaError::UnknownWithSuggestion {
                    recipe: recipe.to_string(),
                    name,
                    suggestion,
                },
                None => SchemaError::Unknown {
                    recipe: recipe.to_string(),
                    name,
                },
            });
        };
        if checked.iter().any(|(k, _)| *k == name) {
            return Err(SchemaError::Duplicate { name });
        }
        let v = check(&spec.ty, value)
            .and_then(|v| match spec.bounds {
                Some(b) => check_bounds(&v, b).map(|()| v),
                None => Ok(v),
            })
            .and_then(|v| match spec.check {
                Some(c) => (c.check)(&v).map(|()| v),
                None => Ok(v),
            })
            .map_err(|message| SchemaError::Type {
                name: name.clone(),
                message,
            })?;
        checked.push((name, v));
    }
    let mut entries = Vec::new();
    for spec in specs {
        if let Some(pos) = checked.iter().position(|(k, _)| k == spec.name) {
            let (k, v) = checked.swap_remove(pos);
            entries.push((k, v));
        } else if let Some(d) = &spec.default {
            entries.push((spec.name.to_string(), d.clone()));
        } else if spec.mandatory {
            return Err(SchemaError::Missing {
                recipe: recipe.to_string(),
                name: spec.name,
            });
        }
    }
    let secret = specs
        .iter()
        .filter(|s| s.secret)
        .map(|s| s.name.to_string())
        .collect();
    Ok(ResolvedParams { entries, secret })
}

/// The Python repr of `v`, cut to 80 characters (values may be 64 KiB long).
fn short(v: &Value) -> String {
    crate::text::clip(&v.to_string(), 80)
}

/// Check a number (or every number of a list or tuple) against `b`.
pub fn check_bounds(v: &Value, b: Bounds) -> Result<(), String> {
    match v {
        Value::List(items) | Value::Tuple(items) => {
            for (i, x) in items.iter().enumerate() {
                check_bounds(x, b).map_err(|m| format!("item {i}: {m}"))?;
            }
            Ok(())
        }
        Value::Int(_) | Value::Float(_) => {
            let x = v.as_f64().unwrap_or(f64::NAN);
            if x >= b.min && x <= b.max {
                Ok(())
            } else {
                Err(format!("{} is out of range ({b})", short(v)))
            }
        }
        _ => Ok(()),
    }
}

/// Check one value against a type; returns the (possibly normalised) value or a message.
pub fn check(ty: &ParamType, v: Value) -> Result<Value, String> {
    let bad =
        |v: &Value, what: &str| format!("expected {what}, got {} {}", v.type_name(), short(v));
    match ty {
        ParamType::Any => Ok(v),
        ParamType::Int => match v {
            Value::Int(_) => Ok(v),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(Value::Int(f as i64)),
            Value::Float(f) if f.fract() == 0.0 => Err(format!(
                "expected an int, got {v}, which does not fit in 64 bits"
            )),
            Value::Float(_) => Err(format!(
                "expected an int, got the non-integral float {v} (not truncated)"
            )),
            other => Err(bad(&other, "an int")),
        },
        ParamType::Float => match v {
            Value::Float(_) => Ok(v),
            Value::Int(i) => Ok(Value::Float(i as f64)),
            other => Err(bad(&other, "a float")),
        },
        ParamType::Str => match v {
            Value::Str(_) => Ok(v),
            other => Err(bad(&other, "a quoted string")),
        },
        ParamType::Bool => match v {
            Value::Bool(_) => Ok(v),
            other => Err(bad(&other, "True or False")),
        },
        ParamType::List(elem) => match v {
            Value::List(items) => match elem {
                None => Ok(Value::List(items)),
                Some(t) => items
                    .into_iter()
                    .enumerate()
                    .map(|(i, x)| check(t, x).map_err(|m| format!("item {i}: {m}")))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::List),
            },
            Value::Tuple(_) => Err(format!(
                "expected a list [...], got the tuple {} (use square brackets)",
                short(&v)
            )),
            other => Err(bad(&other, "a list")),
        },
        ParamType::Seq(t) => {
            let (items, tuple) = match v {
                Value::List(items) => (items, false),
                Value::Tuple(items) => (items, true),
                other => {
                    return Err(bad(
                        &other,
                        "a list or tuple (a 1-tuple needs a trailing comma: ('x',))",
                    ))
                }
            };
            let items = items
                .into_iter()
                .enumerate()
                .map(|(i, x)| check(t, x).map_err(|m| format!("item {i}: {m}")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if tuple {
                Value::Tuple(items)
            } else {
                Value::List(items)
            })
        }
        ParamType::Dict => match v {
            Value::Dict(_) => Ok(v),
            other => Err(bad(&other, "a dict")),
        },
        ParamType::Map(t) => match v {
            Value::Dict(entries) => entries
                .into_iter()
                .map(|(k, x)| match k {
                    Value::Str(ks) => check(t, x)
                        .map(|x| (Value::Str(ks.clone()), x))
                        .map_err(|m| format!("key {}: {m}", short(&Value::Str(ks)))),
                    other => Err(format!(
                        "dict keys must be strings, got {} {}",
                        other.type_name(),
                        short(&other)
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Dict),
            other => Err(bad(&other, "a dict")),
        },
        ParamType::Choice(choices) => match &v {
            Value::Str(s) if choices.iter().any(|c| c == s) => Ok(v),
            _ => Err(format!(
                "{} is not one of {}",
                short(&v),
                choices
                    .iter()
                    .map(|c| format!("'{c}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        },
        ParamType::Ipv4Net => net(v, true),
        ParamType::Ipv6Net => net(v, false),
    }
}

fn net(v: Value, want_v4: bool) -> Result<Value, String> {
    use ipnet::{IpNet, Ipv4Net, Ipv6Net};
    use std::net::IpAddr;
    let family = if want_v4 { "IPv4" } else { "IPv6" };
    let s = match &v {
        Value::Str(s) => s.trim(),
        other => {
            return Err(format!(
                "expected an {family} network string like '{}', got {} {}",
                if want_v4 {
                    "198.18.0.0/24"
                } else {
                    "fd00::/64"
                },
                other.type_name(),
                short(other)
            ))
        }
    };
    let parsed: IpNet = if let Ok(n) = s.parse::<IpNet>() {
        n
    } else if let Ok(a) = s.parse::<IpAddr>() {
        match a {
            IpAddr::V4(a) => IpNet::V4(Ipv4Net::from(a)),
            IpAddr::V6(a) => IpNet::V6(Ipv6Net::from(a)),
        }
    } else {
        return Err(format!("{} is not an {family} network", short(&v)));
    };
    match (&parsed, want_v4) {
        (IpNet::V4(_), true) | (IpNet::V6(_), false) => {}
        (IpNet::V6(_), true) => {
            return Err(format!("{} is an IPv6 network, expected IPv4", short(&v)))
        }
        (IpNet::V4(_), false) => {
            return Err(format!("{} is an IPv4 network, expected IPv6", short(&v)))
        }
    }
    if parsed.trunc() != parsed {
        return Err(format!(
            "{} has host bits set (did you mean '{}'?)",
            short(&v),
            parsed.trunc()
        ));
    }
    Ok(Value::Str(parsed.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::parse_value;

    fn val(s: &str) -> Value {
        parse_value(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ok(ty: ParamType, s: &str) -> Value {
        check(&ty, val(s)).unwrap_or_else(|e| panic!("{ty} {s}: {e}"))
    }

    fn no(ty: ParamType, s: &str) -> String {
        match check(&ty, val(s)) {
            Ok(v) => panic!("{ty} accepted {s} as {v}"),
            Err(e) => e,
        }
    }

    #[test]
    fn int_rules() {
        assert_eq!(ok(ParamType::Int, "5"), Value::Int(5));
        assert_eq!(ok(ParamType::Int, "3.0"), Value::Int(3));
        assert!(no(ParamType::Int, "3.7").contains("non-integral"));
        assert!(no(ParamType::Int, "True").contains("got bool"));
        assert!(no(ParamType::Int, "'5'").contains("got str"));
        assert!(no(ParamType::Int, "None").contains("NoneType"));
        assert!(no(ParamType::Int, "1e19").contains("does not fit"));
    }

    #[test]
    fn float_str_bool_rules() {
        assert_eq!(ok(ParamType::Float, "1"), Value::Float(1.0));
        assert_eq!(ok(ParamType::Float, "0.2"), Value::Float(0.2));
        assert!(no(ParamType::Float, "'0.2'").contains("got str"));
        assert!(no(ParamType::Float, "False").contains("got bool"));
        assert_eq!(ok(ParamType::Str, "'ice'"), Value::Str("ice".into()));
        assert!(no(ParamType::Str, "5").contains("quoted string"));
        assert_eq!(ok(ParamType::Bool, "True"), Value::Bool(true));
        assert_eq!(ok(ParamType::Bool, "False"), Value::Bool(false));
        assert!(no(ParamType::Bool, "1").contains("True or False"));
        assert!(no(ParamType::Bool, "0").contains("True or False"));
        assert!(no(ParamType::Bool, "'True'").contains("True or False"));
    }

    #[test]
    fn list_dict_any_rules() {
        assert_eq!(
            ok(ParamType::List(None), "[0, 'a']"),
            Value::List(vec![Value::Int(0), Value::Str("a".into())])
        );
        assert!(no(ParamType::List(None), "(0, 1)").contains("tuple"));
        assert!(no(ParamType::List(None), "'abc'").contains("a list"));
        let li = ParamType::List(Some(Box::new(ParamType::Int)));
        assert_eq!(ok(li.clone(), "[0, 1]"), val("[0, 1]"));
        assert!(no(li, "[0, 'x']").contains("item 1"));
        assert_eq!(ok(ParamType::Dict, "{}"), Value::Dict(vec![]));
        assert!(no(ParamType::Dict, "[]").contains("a dict"));
        assert_eq!(ok(ParamType::Any, "('ipv4',)"), val("('ipv4',)"));
        assert_eq!(ok(ParamType::Any, "'ipv4'"), val("'ipv4'"));
    }

    #[test]
    fn seq_map_and_bounds() {
        let seq = ParamType::Seq(Box::new(ParamType::Choice(vec!["ipv4", "ipv6"])));
        assert_eq!(ok(seq.clone(), "('ipv4',)"), val("('ipv4',)"));
        assert_eq!(ok(seq.clone(), "['ipv6']"), val("['ipv6']"));
        assert!(no(seq.clone(), "('ipv4')").contains("trailing comma"));
        assert!(no(seq.clone(), "['ipv5']").starts_with("item 0: 'ipv5' is not one of"));
        assert_eq!(seq.to_string(), "seq[choice{ipv4|ipv6}]");
        let map = ParamType::Seq(Box::new(ParamType::Map(Box::new(ParamType::Choice(vec![
            "on", "off",
        ])))));
        assert_eq!(
            ok(map.clone(), "[{'gro': 'on'}, {}]"),
            val("[{'gro': 'on'}, {}]")
        );
        assert!(
            no(map.clone(), "[{'gro': True}]").contains("item 0: key 'gro': True is not one of")
        );
        assert!(no(map.clone(), "[{1: 'on'}]").contains("dict keys must be strings"));
        assert!(no(map, "[1]").contains("expected a dict"));

        let b = Bounds {
            min: 1.0,
            max: 128.0,
        };
        assert_eq!(check_bounds(&Value::Int(1), b), Ok(()));
        assert_eq!(check_bounds(&Value::Int(128), b), Ok(()));
        assert_eq!(
            check_bounds(&Value::Int(0), b),
            Err("0 is out of range (1 to 128)".to_string())
        );
        assert!(check_bounds(&Value::Float(1e300), b).is_err());
        assert!(check_bounds(&val("[1, 2, 129]"), b)
            .err()
            .is_some_and(|e| e.starts_with("item 2: 129 is out of range")));
        // Long values are shown cut.
        let long = format!("[{}]", "1, ".repeat(1000));
        let m = no(ParamType::Int, &long);
        assert!(m.len() < 200, "{m}");
        assert!(m.ends_with('…'), "{m}");
    }

    #[test]
    fn long_unknown_names_are_cut_and_not_compared() {
        let specs = vec![ParamSpec::opt("perf_iterations", ParamType::Int, "n")];
        let long = format!("perf_iterations{}", "x".repeat(60_000));
        assert_eq!(suggest(&long, &specs), None);
        assert_eq!(suggest("perf_iteration", &specs), Some("perf_iterations"));
        let e = resolve("R", &specs, vec![(long, Value::Int(1))])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("'perf_iterationsxxx"), "{e}");
        assert!(e.contains("…' is not a parameter of R"), "{e}");
        assert!(e.len() < 200, "{} bytes", e.len());
    }

    #[test]
    fn resolve_checks_bounds() {
        let specs = vec![
            ParamSpec::with_default("n", ParamType::Int, Value::Int(1), "n").range(1.0, 10.0),
            ParamSpec::opt("f", ParamType::Float, "f").range(0.001, 60.0),
        ];
        let r = |s: &str| {
            resolve(
                "R",
                &specs,
                crate::params::parse_params(s).unwrap_or_else(|e| panic!("{e}")),
            )
        };
        assert!(r("n=10;f=0.5").is_ok());
        assert_eq!(
            r("n=11").err().map(|e| e.to_string()).as_deref(),
            Some("n: 11 is out of range (1 to 10)")
        );
        assert!(r("n=-1").is_err());
        assert!(r("f=0").is_err());
        assert!(r("f=1e300").is_err());
        // Defaults are not range-checked (they are ours); 3.0 becomes 3 before the check.
        assert!(r("n=3.0").is_ok());
    }

    #[test]
    fn choice_rules() {
        let c = ParamType::Choice(vec!["iperf", "neper"]);
        assert_eq!(ok(c.clone(), "'neper'"), Value::Str("neper".into()));
        assert!(no(c.clone(), "'netperf'").contains("'iperf', 'neper'"));
        assert!(no(c, "1").contains("is not one of"));
    }

    #[test]
    fn network_rules() {
        assert_eq!(
            ok(ParamType::Ipv4Net, "'198.18.20.0/24'"),
            Value::Str("198.18.20.0/24".into())
        );
        assert_eq!(
            ok(ParamType::Ipv4Net, "' 198.18.20.0/24 '"),
            Value::Str("198.18.20.0/24".into())
        );
        assert_eq!(
            ok(ParamType::Ipv4Net, "'198.18.0.1'"),
            Value::Str("198.18.0.1/32".into())
        );
        assert!(no(ParamType::Ipv4Net, "'198.18.20.1/24'").contains("host bits"));
        assert!(no(ParamType::Ipv4Net, "'fd00::/64'").contains("IPv6 network, expected IPv4"));
        assert!(no(ParamType::Ipv4Net, "'198.18.0.0/33'").contains("not an IPv4 network"));
        assert!(no(ParamType::Ipv4Net, "'banana'").contains("not an IPv4 network"));
        assert!(no(ParamType::Ipv4Net, "24").contains("network string"));
        assert_eq!(
            ok(ParamType::Ipv6Net, "'fd00:0:b100::/64'"),
            Value::Str("fd00:0:b100::/64".into())
        );
        assert_eq!(
            ok(ParamType::Ipv6Net, "'FD00:0000::/64'"),
            Value::Str("fd00::/64".into())
        );
        assert!(no(ParamType::Ipv6Net, "'fd00::1/64'").contains("host bits"));
        assert!(no(ParamType::Ipv6Net, "'198.18.0.0/24'").contains("IPv4 network, expected IPv6"));
    }

    fn specs() -> Vec<ParamSpec> {
        vec![
            ParamSpec::with_default("perf_iterations", ParamType::Int, Value::Int(5), "n"),
            ParamSpec::with_default("perf_duration", ParamType::Int, Value::Int(60), "s"),
            ParamSpec::opt("driver", ParamType::Str, "driver"),
            ParamSpec::mandatory("scale", ParamType::Int, "scale"),
        ]
    }

    #[test]
    fn resolve_fills_defaults_in_schema_order() {
        let r = resolve(
            "R",
            &specs(),
            vec![
                ("scale".into(), Value::Int(3)),
                ("perf_duration".into(), Value::Int(10)),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = r.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["perf_iterations", "perf_duration", "scale"]);
        assert_eq!(r.int("perf_iterations"), Some(5));
        assert_eq!(r.int("perf_duration"), Some(10));
        assert_eq!(r.get("driver"), None);
        assert!(!r.contains("driver"));
        assert_eq!(
            r.to_json(),
            serde_json::json!({"perf_iterations": 5, "perf_duration": 10, "scale": 3})
        );
    }

    #[test]
    fn resolve_errors() {
        let e = resolve("R", &specs(), vec![]).err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("parameter 'scale' of R is mandatory"));
        let e = resolve(
            "SimpleNetworkRecipe",
            &specs(),
            vec![("perf_iteration".into(), Value::Int(1))],
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("unknown parameter 'perf_iteration' for SimpleNetworkRecipe (did you mean 'perf_iterations'?)")
        );
        let e = resolve(
            "R",
            &specs(),
            vec![("multi_dev_interrupt_config".into(), Value::Dict(vec![]))],
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.starts_with("'multi_dev_interrupt_config' is not a parameter of R"),
            "{e}"
        );
        let e = resolve(
            "R",
            &specs(),
            vec![
                ("scale".into(), Value::Int(1)),
                ("perf_duration".into(), Value::Str("x".into())),
            ],
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.starts_with("perf_duration: expected an int, got str 'x'"),
            "{e}"
        );
        let e = resolve(
            "R",
            &specs(),
            vec![
                ("scale".into(), Value::Int(1)),
                ("scale".into(), Value::Int(2)),
            ],
        );
        assert!(matches!(e, Err(SchemaError::Duplicate { .. })));
    }
}
