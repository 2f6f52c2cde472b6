//! Typed recipe parameters: one declaration gives the parameter struct, the schema that
//! `lnst-runner recipes NAME` shows and plan validation uses, and the conversion from the
//! validated values. See [`param_set!`](crate::param_set) and docs/ARCHITECTURE.md.
//!
//! Parameters are resolved once, when the plan is made: RECIPE_PARAMS / TEST_DB → the generic
//! [`Value`]s → [`crate::schema::resolve`] (names, types, ranges, checks, defaults) →
//! [`ParamSet::from_resolved`] (typed fields). A recipe reads its fields; nothing looks a
//! parameter up by name or validates it again at run time.

use crate::params::Value;
use crate::schema::{ParamSpec, ParamType, ResolvedParams, SchemaError};
use std::net::IpAddr;

/// A struct of typed parameters (a recipe, or a group of parameters several recipes share).
pub trait ParamSet: Sized {
    /// The declarations, in schema order (groups spliced in where they are declared).
    fn specs() -> Vec<ParamSpec>;
    /// The typed values of schema-checked parameters.
    fn from_resolved(p: &ResolvedParams) -> Result<Self, SchemaError>;
}

/// Conversion of one schema-checked value to a field type. `None`: the parameter is unset
/// (optional without default).
pub trait FromParam: Sized {
    fn from_param(v: Option<&Value>) -> Result<Self, String>;
}

fn required(v: Option<&Value>) -> Result<&Value, String> {
    v.ok_or_else(|| "has no value (declared without a default)".to_string())
}

fn wrong(v: &Value, what: &str) -> String {
    format!(
        "expected {what}, got {} {}",
        v.type_name(),
        crate::text::clip(&v.to_string(), 80)
    )
}

impl<T: FromParam> FromParam for Option<T> {
    fn from_param(v: Option<&Value>) -> Result<Self, String> {
        match v {
            None | Some(Value::None) => Ok(None),
            Some(v) => T::from_param(Some(v)).map(Some),
        }
    }
}

impl FromParam for bool {
    fn from_param(v: Option<&Value>) -> Result<Self, String> {
        let v = required(v)?;
        v.as_bool().ok_or_else(|| wrong(v, "True or False"))
    }
}

impl FromParam for f64 {
    fn from_param(v: Option<&Value>) -> Result<Self, String> {
        let v = required(v)?;
        v.as_f64().ok_or_else(|| wrong(v, "a number"))
    }
}

macro_rules! int_from_param {
    ($($t:ty),*) => {$(
        impl FromParam for $t {
            fn from_param(v: Option<&Value>) -> Result<Self, String> {
                let v = required(v)?;
                let i = v.as_i64().ok_or_else(|| wrong(v, "an int"))?;
                <$t>::try_from(i).map_err(|_| format!("{i} is out of range ({} to {})", <$t>::MIN, <$t>::MAX))
            }
        }
    )*};
}
int_from_param!(i64, u16, u32, u64);

impl FromParam for String {
    fn from_param(v: Option<&Value>) -> Result<Self, String> {
        let v = required(v)?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| wrong(v, "a string"))
    }
}

impl<T: FromParam> FromParam for Vec<T> {
    fn from_param(v: Option<&Value>) -> Result<Self, String> {
        let v = required(v)?;
        let items = v.items().ok_or_else(|| wrong(v, "a list or tuple"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, x)| T::from_param(Some(x)).map_err(|m| format!("item {i}: {m}")))
            .collect()
    }
}

/// The raw value (dicts whose shape the recipe checks itself).
impl FromParam for Value {
    fn from_param(v: Option<&Value>) -> Result<Self, String> {
        required(v).cloned()
    }
}

impl FromParam for ipnet::Ipv4Net {
    fn from_param(v: Option<&Value>) -> Result<Self, String> {
        let v = required(v)?;
        v.as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| wrong(v, "an IPv4 network"))
    }
}

impl FromParam for ipnet::Ipv6Net {
    fn from_param(v: Option<&Value>) -> Result<Self, String> {
        let v = required(v)?;
        v.as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| wrong(v, "an IPv6 network"))
    }
}

/// An address with its prefix length, as configured on a device (`198.18.0.1/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IfAddr {
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
    /// `ipv4` or `ipv6`.
    pub fn version(&self) -> IpVersion {
        if self.addr.is_ipv4() {
            IpVersion::Ipv4
        } else {
            IpVersion::Ipv6
        }
    }
}

impl std::fmt::Display for IfAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for IfAddr {
    type Err = String;
    /// `addr/prefix`, or a bare address (/32, /128).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<ipnet::IpNet>() {
            return Ok(IfAddr {
                addr: n.addr(),
                prefix: n.prefix_len(),
            });
        }
        match s.parse::<IpAddr>() {
            Ok(addr) => Ok(IfAddr {
                addr,
                prefix: if addr.is_ipv4() { 32 } else { 128 },
            }),
            Err(_) => Err(format!(
                "{} is not an address like '198.18.0.1/24' or 'fd00::1/64'",
                crate::text::quote(s, 80)
            )),
        }
    }
}

impl FromParam for IfAddr {
    fn from_param(v: Option<&Value>) -> Result<Self, String> {
        let v = required(v)?;
        v.as_str()
            .ok_or_else(|| wrong(v, "an address string"))?
            .parse()
    }
}

impl FromParam for crate::protocol::BondMode {
    /// A mode name (`active-backup`) or its number (`1`; upstream's StrParam makes it "1",
    /// which upstream's agent then refuses).
    fn from_param(v: Option<&Value>) -> Result<Self, String> {
        let v = required(v)?;
        let s = match v {
            Value::Int(i) => i.to_string(),
            _ => v
                .as_str()
                .ok_or_else(|| wrong(v, "a bonding mode"))?
                .to_string(),
        };
        crate::protocol::BondMode::parse(&s).ok_or_else(|| {
            format!(
                "{} is not a bonding mode; expected one of {}",
                crate::text::quote(&s, 40),
                crate::protocol::BondMode::ALL.map(|m| m.name()).join(", ")
            )
        })
    }
}

impl FromParam for crate::protocol::TeamRunner {
    /// A teamd runner name (`activebackup`, `roundrobin`, ...).
    fn from_param(v: Option<&Value>) -> Result<Self, String> {
        let v = required(v)?;
        let s = v.as_str().ok_or_else(|| wrong(v, "a teamd runner name"))?;
        crate::protocol::TeamRunner::ALL
            .into_iter()
            .find(|r| r.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "{} is not a teamd runner; expected one of {}",
                    crate::text::quote(s, 40),
                    crate::protocol::TeamRunner::ALL
                        .map(|r| r.name())
                        .join(", ")
                )
            })
    }
}

/// A string parameter with a fixed set of values, as a Rust enum.
#[macro_export]
macro_rules! choice_enum {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($var:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name { $($var),* }
        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [&'static str] = &[$($s),*];
            /// The parameter's spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),* }
            }
            /// The schema type of this choice.
            pub fn param_type() -> $crate::schema::ParamType {
                $crate::schema::ParamType::Choice(Self::ALL.to_vec())
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl $crate::recipes::typed::FromParam for $name {
            fn from_param(v: Option<&$crate::params::Value>) -> Result<Self, String> {
                match v.and_then(|v| v.as_str()) {
                    $(Some($s) => Ok($name::$var),)*
                    _ => Err(format!("expected one of {}", Self::ALL.join(", "))),
                }
            }
        }
    };
}

choice_enum! {
    /// An IP version of `ip_versions`.
    pub enum IpVersion { Ipv4 = "ipv4", Ipv6 = "ipv6" }
}

/// One offload combination: ethtool features and their state, in the given order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffloadCombination(pub Vec<(String, bool)>);

impl OffloadCombination {
    /// `gro=on gso=off ...`.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={}", if *v { "on" } else { "off" }))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The state of a feature, if the combination sets it.
    pub fn get(&self, name: &str) -> Option<bool> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

impl FromParam for OffloadCombination {
    /// A dict of feature name → 'on'/'off'; every name must be one `ethtool -K` knows.
    fn from_param(v: Option<&Value>) -> Result<Self, String> {
        let v = required(v)?;
        let dict = v.as_dict().ok_or_else(|| wrong(v, "a dict"))?;
        let mut out = Vec::new();
        for (k, x) in dict {
            let name = k.as_str().ok_or_else(|| wrong(k, "a feature name"))?;
            if !crate::protocol::is_offload_name(name) {
                return Err(format!(
                    "{} is not an ethtool feature name (like 'gro', 'tso' or 'rx-checksum')",
                    crate::text::quote(name, 64)
                ));
            }
            let on = match x.as_str() {
                Some("on") => true,
                Some("off") => false,
                _ => return Err(format!("{name}: {} must be 'on' or 'off'", x)),
            };
            out.push((name.to_string(), on));
        }
        Ok(OffloadCombination(out))
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

/// A declaration without its name (the field name of [`param_set!`](crate::param_set) gives
/// it): optional without default.
pub fn opt(ty: ParamType, doc: &'static str) -> ParamSpec {
    ParamSpec::opt("", ty, doc)
}

/// A declaration with a default.
pub fn dflt(ty: ParamType, default: impl Into<Value>, doc: &'static str) -> ParamSpec {
    ParamSpec::with_default("", ty, default.into(), doc)
}

/// A mandatory declaration.
pub fn mandatory(ty: ParamType, doc: &'static str) -> ParamSpec {
    ParamSpec::mandatory("", ty, doc)
}

/// A tuple of strings (upstream defaults like `("ipv4", "ipv6")`).
pub fn str_tuple(items: &[&str]) -> Value {
    Value::Tuple(items.iter().map(|s| Value::Str(s.to_string())).collect())
}

/// Declares a [`ParamSet`] struct. Each entry is `param NAME: TYPE = DECLARATION` (the field is
/// the parameter: its name is the field name, its declaration a [`ParamSpec`] built with
/// [`opt`], [`dflt`] or [`mandatory`]) or `group NAME: TYPE` (another `ParamSet` whose
/// parameters are spliced in at that place). The struct, its schema and its conversion come
/// from this one list.
#[macro_export]
macro_rules! param_set {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $kind:ident $field:ident : $ty:ty $(= $spec:expr)? ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        $vis struct $name {
            $( pub $field: $ty, )*
        }
        impl $crate::recipes::typed::ParamSet for $name {
            #[allow(clippy::vec_init_then_push)]
            fn specs() -> Vec<$crate::schema::ParamSpec> {
                #[allow(unused_imports)]
                use $crate::schema::ParamType::*;
                #[allow(unused_imports)]
                use $crate::recipes::typed::{dflt, mandatory, opt};
                let mut v = Vec::new();
                $( $crate::param_set!(@spec v, $kind, $field, $ty $(, $spec)?); )*
                v
            }
            fn from_resolved(
                p: &$crate::schema::ResolvedParams,
            ) -> Result<Self, $crate::schema::SchemaError> {
                Ok($name { $( $field: $crate::param_set!(@get p, $kind, $field, $ty), )* })
            }
        }
    };
    (@spec $v:ident, param, $field:ident, $ty:ty, $spec:expr) => {
        $v.push($spec.named(stringify!($field)));
    };
    (@spec $v:ident, group, $field:ident, $ty:ty) => {
        $v.extend(<$ty as $crate::recipes::typed::ParamSet>::specs());
    };
    (@get $p:ident, param, $field:ident, $ty:ty) => {
        <$ty as $crate::recipes::typed::FromParam>::from_param($p.get(stringify!($field)))
            .map_err(|message| $crate::schema::SchemaError::Type {
                name: stringify!($field).to_string(),
                message,
            })?
    };
    (@get $p:ident, group, $field:ident, $ty:ty) => {
        <$ty as $crate::recipes::typed::ParamSet>::from_resolved($p)?
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::parse_params;
    use crate::schema::resolve;

    crate::param_set! {
        struct Inner {
            param count: u32 = dflt(Int, 3i64, "n").range(1.0, 10.0),
            param names: Option<Vec<String>> = opt(List(Some(Box::new(Str))), "names"),
        }
    }
    crate::param_set! {
        struct Outer {
            param first: IpVersion = dflt(IpVersion::param_type(), "ipv4", "v"),
            group inner: Inner,
            param last: Option<IfAddr> = opt(Str, "addr"),
        }
    }

    fn outer(s: &str) -> Result<Outer, String> {
        let specs = Outer::specs();
        let given = parse_params(s).map_err(|e| e.to_string())?;
        let r = resolve("R", &specs, given).map_err(|e| e.to_string())?;
        Outer::from_resolved(&r).map_err(|e| e.to_string())
    }

    #[test]
    fn one_declaration_gives_schema_and_values() {
        let names: Vec<&str> = Outer::specs().iter().map(|s| s.name).collect();
        assert_eq!(names, ["first", "count", "names", "last"]);
        let o = outer("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.first, IpVersion::Ipv4);
        assert_eq!(o.inner.count, 3);
        assert_eq!(o.inner.names, None);
        assert_eq!(o.last, None);
        let o = outer("first='ipv6';count=7;names=['a'];last='198.18.0.1/24'")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.first, IpVersion::Ipv6);
        assert_eq!(o.inner.count, 7);
        assert_eq!(o.inner.names, Some(vec!["a".to_string()]));
        assert_eq!(
            o.last.map(|a| a.to_string()).as_deref(),
            Some("198.18.0.1/24")
        );
        assert!(outer("count=11").unwrap_err().contains("out of range"));
        assert_eq!(
            outer("last='banana'").unwrap_err(),
            "last: 'banana' is not an address like '198.18.0.1/24' or 'fd00::1/64'"
        );
    }

    #[test]
    fn offload_names_come_from_the_one_table() {
        let ok = |s: &str| {
            OffloadCombination::from_param(Some(
                &crate::params::parse_value(s).unwrap_or(Value::None),
            ))
        };
        assert_eq!(
            ok("{'gro': 'on', 'rx-checksum': 'off'}").map(|c| c.describe()),
            Ok("gro=on rx-checksum=off".to_string())
        );
        for bad in ["{'no-such-feature': 'on'}", "{'-K': 'on'}", "{'': 'off'}"] {
            let e = ok(bad).unwrap_err();
            assert!(e.contains("is not an ethtool feature name"), "{bad}: {e}");
        }
    }
}
