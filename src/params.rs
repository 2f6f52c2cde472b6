//! RECIPE_PARAMS: a bounded Python-literal parser. Never `eval`, never a shell.
//!
//! `RECIPE_PARAMS` is `key=value;key=value`. Each value is a Python literal in the sense of
//! `ast.literal_eval` plus arithmetic on numbers:
//!
//! * ints (decimal, `0x`/`0o`/`0b`, `_` separators), floats (`1.5`, `1e3`, `.5`, `1.`),
//!   unary `-`/`+`, and `+ - * / // % **` with parentheses; ints are checked i64 arithmetic
//!   (intermediate results may use i128, the result must fit i64), `/` always gives a float,
//!   `**` takes an exponent of at most [`MAX_EXPONENT`] in absolute value;
//! * `'…'` / `"…"` strings with Python escapes, `r'…'` raw strings, `u'…'`, and adjacent
//!   literal concatenation (`'a' "b"`);
//! * `True`, `False`, `None`, lists, tuples (with the 1-tuple comma rule: `('ipv4',)` is a tuple,
//!   `('ipv4')` a string; a bare `a, b` at top level is a tuple, as with `eval`), dicts;
//!   trailing commas.
//!
//! Everything else (names, calls, attribute access, subscripts, lambdas, f-strings, bytes,
//! sets, comprehensions, comparisons) is an error. Arithmetic works on numbers only (no
//! `'a' * 3`, no `[1] + [2]`, no `-True`). Non-finite floats (`1e999`) are rejected because
//! they cannot be represented in the JSON results.
//!
//! Limits: [`MAX_INPUT`] bytes of input, [`MAX_DEPTH`] levels of nesting (checked before
//! recursing), i64 integers.
//!
//! Dict keys: a key given twice is an error (Python would silently keep the last value), and
//! so are two keys Python holds equal though they are written differently — `1`, `True` and
//! `1.0` are one key in Python (`{1: 'x', True: 'y'}` is `{1: 'y'}`), as are `0`, `False`,
//! `0.0` and `-0.0`, and tuples of such (`(1,)` and `(True,)`). Keys that are distinct in
//! Python but one key in JSON (`1` and `'1'`) are refused too. Duplicates are found with hash
//! maps, in linear time.
//!
//! Splitting differs from upstream on purpose: the split on `;` and on the first `=` respects
//! quotes and brackets (so `;` and `=` may appear inside string values), and the key is
//! stripped of surrounding whitespace (upstream keeps `" perf_iterations"` as the key and then
//! fails with "Unknown parameter").

use std::fmt;

/// Maximum accepted input size in bytes (whole RECIPE_PARAMS string, or one value).
pub const MAX_INPUT: usize = 64 * 1024;
/// Maximum nesting depth of containers, parentheses and unary/power operators.
pub const MAX_DEPTH: usize = 32;
/// Maximum absolute value of a `**` exponent.
pub const MAX_EXPONENT: i128 = 1024;

/// Strings may not hold NUL (`'\x00'`, `'\0'`, `"\u0000"` in TEST_DB): parameter strings end
/// up in argv, file names and sysctl values, where NUL cannot be passed or silently truncates.
const NUL_IN_STRING: &str = "NUL characters are not allowed in strings";

/// A parsed parameter value: the Python literal types we accept.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Insertion-ordered; duplicate keys are rejected by the parser.
    Dict(Vec<(Value, Value)>),
}

impl Value {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Floats, and ints converted to float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The elements of a list or a tuple.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Look up a string key in a dict.
    pub fn dict_get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// Python type name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
        }
    }

    /// JSON rendering: tuples become arrays, None becomes null, dict keys that are not
    /// strings are rendered as their Python repr.
    /// The JSON object key a dict key becomes: a string as is, anything else as its repr.
    pub fn json_key(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            other => other.to_string(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::None => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::List(v) | Value::Tuple(v) => J::Array(v.iter().map(Value::to_json).collect()),
            Value::Dict(d) => {
                let mut m = serde_json::Map::new();
                for (k, v) in d {
                    m.insert(k.json_key(), v.to_json());
                }
                J::Object(m)
            }
        }
    }

    /// Convert JSON (TEST_DB) to a value: arrays become lists, objects dicts with string keys,
    /// null None. Integers outside i64 and nesting deeper than [`MAX_DEPTH`] are errors.
    pub fn from_json(v: &serde_json::Value) -> Result<Value, ParamsError> {
        from_json_depth(v, 0)
    }
}

fn from_json_depth(v: &serde_json::Value, depth: usize) -> Result<Value, ParamsError> {
    use serde_json::Value as J;
    if depth > MAX_DEPTH {
        return Err(ParamsError::plain(format!(
            "nesting deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(match v {
        J::Null => Value::None,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if n.is_u64() {
                return Err(ParamsError::plain(format!(
                    "integer {n} does not fit in 64 bits"
                )));
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() => Value::Float(f),
                    _ => return Err(ParamsError::plain(format!("number {n} is not finite"))),
                }
            }
        }
        J::String(s) if s.contains('\0') => return Err(ParamsError::plain(NUL_IN_STRING.into())),
        J::String(s) => Value::Str(s.clone()),
        J::Object(o) if o.keys().any(|k| k.contains('\0')) => {
            return Err(ParamsError::plain(NUL_IN_STRING.into()))
        }
        J::Array(a) => Value::List(
            a.iter()
                .map(|x| from_json_depth(x, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(o) => Value::Dict(
            o.iter()
                .map(|(k, x)| Ok((Value::Str(k.clone()), from_json_depth(x, depth + 1)?)))
                .collect::<Result<_, ParamsError>>()?,
        ),
    })
}

/// Python repr of a string: single quotes unless the string holds `'` and no `"`.
fn fmt_py_str(s: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    write!(f, "{q}")?;
    for c in s.chars() {
        match c {
            '\\' => write!(f, "\\\\")?,
            '\n' => write!(f, "\\n")?,
            '\r' => write!(f, "\\r")?,
            '\t' => write!(f, "\\t")?,
            c if c == q => write!(f, "\\{c}")?,
            c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(f, "\\x{:02x}", c as u32)?,
            c if c.is_control() => {
                let n = c as u32;
                if n <= 0xff {
                    write!(f, "\\x{n:02x}")?
                } else {
                    write!(f, "\\u{n:04x}")?
                }
            }
            c => write!(f, "{c}")?,
        }
    }
    write!(f, "{q}")
}

/// Python repr of a float (shortest round-trip, exponent form outside [1e-4, 1e16)).
fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = x.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{x:e}");
        match s.split_once('e') {
            Some((mant, exp)) => {
                let (sign, digits) = match exp.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', exp),
                };
                format!("{mant}e{sign}{digits:0>2}")
            }
            None => s,
        }
    } else {
        let s = format!("{x}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    }
}

impl fmt::Display for Value {
    /// Python repr: `'abc'`, `True`, `(1,)`, `{'a': 1}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => write!(f, "None"),
            Value::Bool(true) => write!(f, "True"),
            Value::Bool(false) => write!(f, "False"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", py_float_repr(*x)),
            Value::Str(s) => fmt_py_str(s, f),
            Value::List(v) => {
                write!(f, "[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{x}")?;
                }
                write!(f, "]")
            }
            Value::Tuple(v) => {
                write!(f, "(")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{x}")?;
                }
                if v.len() == 1 {
                    write!(f, ",")?;
                }
                write!(f, ")")
            }
            Value::Dict(d) => {
                write!(f, "{{")?;
                for (i, (k, v)) in d.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                write!(f, "}}")
            }
        }
    }
}

/// A RECIPE_PARAMS syntax error. Its message names the key (when known) and the 1-based
/// column (in characters) inside the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ParamsError {
    /// `Some("RECIPE_PARAMS")` when the error comes from [`parse_params`].
    pub origin: Option<&'static str>,
    pub key: Option<String>,
    pub column: Option<usize>,
    pub message: String,
}

impl ParamsError {
    fn plain(message: String) -> Self {
        ParamsError {
            origin: None,
            key: None,
            column: None,
            message,
        }
    }

    fn at(column: usize, message: String) -> Self {
        ParamsError {
            origin: None,
            key: None,
            column: Some(column),
            message,
        }
    }

    fn render(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(o) = self.origin {
            parts.push(o.to_string());
        }
        if let Some(k) = &self.key {
            parts.push(k.clone());
        }
        if let Some(c) = self.column {
            parts.push(format!("column {c}"));
        }
        parts.push(self.message.clone());
        parts.join(": ")
    }
}

/// Short, single-line, quoted excerpt of user input for messages.
fn excerpt(s: &str) -> String {
    crate::text::quote(s, 40)
}

/// Split `input` on `sep` characters that are outside quotes and brackets. Returns the pieces
/// with their starting char offsets.
fn split_top(input: &str, sep: char, max: usize) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0usize;
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in input.chars().enumerate() {
        if let Some(q) = quote {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '[' | '(' | '{' => depth += 1,
            ']' | ')' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c == sep && depth == 0 && out.len() + 1 < max {
            out.push((start, std::mem::take(&mut cur)));
            start = i + 1;
            continue;
        }
        cur.push(c);
    }
    out.push((start, cur));
    out
}

fn is_identifier(s: &str) -> bool {
    let mut cs = s.chars();
    match cs.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parse a whole `RECIPE_PARAMS` string into ordered `(key, value)` pairs.
///
/// Splits on `;` and on the first `=` of each segment, both outside quotes and brackets;
/// skips empty segments; strips whitespace around key and value; rejects duplicate keys and
/// keys that are not identifiers.
pub fn parse_params(input: &str) -> Result<Vec<(String, Value)>, ParamsError> {
    let origin = Some("RECIPE_PARAMS");
    if input.len() > MAX_INPUT {
        return Err(ParamsError {
            origin,
            ..ParamsError::plain(format!(
                "input is {} bytes; the limit is {MAX_INPUT}",
                input.len()
            ))
        });
    }
    let mut out: Vec<(String, Value)> = Vec::new();
    for (_, seg) in split_top(input, ';', usize::MAX) {
        if seg.trim().is_empty() {
            continue;
        }
        let mut kv = split_top(&seg, '=', 2).into_iter();
        let (key, value) = match (kv.next(), kv.next()) {
            (Some((_, k)), Some((_, v))) => (k, v),
            _ => {
                return Err(ParamsError {
                    origin,
                    ..ParamsError::plain(format!(
                        "{}: missing '=' (expected key=value)",
                        excerpt(seg.trim())
                    ))
                })
            }
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(ParamsError {
                origin,
                ..ParamsError::plain(format!(
                    "{}: empty parameter name before '='",
                    excerpt(seg.trim())
                ))
            });
        }
        if !is_identifier(key) {
            return Err(ParamsError {
                origin,
                ..ParamsError::plain(format!(
                    "{}: parameter name is not an identifier",
                    excerpt(key)
                ))
            });
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(ParamsError {
                origin,
                key: Some(key.to_string()),
                ..ParamsError::plain("parameter given more than once".into())
            });
        }
        let v = parse_value(value.trim()).map_err(|e| ParamsError {
            origin,
            key: Some(key.to_string()),
            ..e
        })?;
        out.push((key.to_string(), v));
    }
    Ok(out)
}

/// Parse one Python literal value.
pub fn parse_value(input: &str) -> Result<Value, ParamsError> {
    if input.len() > MAX_INPUT {
        return Err(ParamsError::plain(format!(
            "value is {} bytes; the limit is {MAX_INPUT}",
            input.len()
        )));
    }
    let mut p = Parser {
        s: input.chars().collect(),
        pos: 0,
        depth: 0,
    };
    p.skip_ws();
    if p.peek().is_none() {
        return Err(ParamsError::at(1, "empty value".into()));
    }
    let v = p.top()?;
    p.skip_ws();
    if let Some(c) = p.peek() {
        if c.is_alphabetic() || c == '_' {
            // `1 if x else y`, `x for ...`: report the name.
            p.name_or_string()?;
        }
        return Err(p.unexpected(c));
    }
    Ok(v)
}

/// Intermediate value during parsing: numbers are widened to i128 so `2**63 - 1` works;
/// the final value must fit i64.
#[derive(Debug, Clone)]
enum Num {
    I(i128),
    F(f64),
}

#[derive(Debug, Clone)]
enum Tmp {
    Num(Num),
    Val(Value),
}

struct Parser {
    s: Vec<char>,
    pos: usize,
    depth: usize,
}

type PResult<T> = Result<T, ParamsError>;

impl Parser {
    fn peek(&self) -> Option<char> {
        self.s.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.s.get(self.pos + n).copied()
    }

    fn col(&self) -> usize {
        self.pos + 1
    }

    fn err<T>(&self, msg: impl Into<String>) -> PResult<T> {
        Err(ParamsError::at(self.col(), msg.into()))
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.pos += 1;
        }
    }

    fn unexpected(&self, c: char) -> ParamsError {
        let msg = match c {
            '(' => "calls are not allowed; values are Python literals".to_string(),
            '.' => "attribute access is not allowed; values are Python literals".to_string(),
            '[' => "subscripts are not allowed; values are Python literals".to_string(),
            '=' => "unexpected '='; values are Python literals".to_string(),
            c => format!("unexpected {}", Value::Str(c.to_string())),
        };
        ParamsError::at(self.col(), msg)
    }

    fn enter(&mut self) -> PResult<()> {
        if self.depth >= MAX_DEPTH {
            return self.err(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// Top level: an expression, or a bare tuple `a, b`.
    fn top(&mut self) -> PResult<Value> {
        let first = self.expr()?;
        self.skip_ws();
        if self.peek() != Some(',') {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.peek() == Some(',') {
            self.pos += 1;
            self.skip_ws();
            if self.peek().is_none() {
                break;
            }
            items.push(self.expr()?);
            self.skip_ws();
        }
        Ok(Value::Tuple(items))
    }

    /// A full expression, finalised into a [`Value`].
    fn expr(&mut self) -> PResult<Value> {
        let start = self.col();
        let t = self.arith()?;
        finish(t).map_err(|m| ParamsError::at(start, m))
    }

    fn arith(&mut self) -> PResult<Tmp> {
        let mut left = self.term()?;
        loop {
            self.skip_ws();
            let op = match self.peek() {
                Some('+') => '+',
                Some('-') => '-',
                _ => return Ok(left),
            };
            let col = self.col();
            self.pos += 1;
            let right = self.term()?;
            left = binop(op, "", left, right).map_err(|m| ParamsError::at(col, m))?;
        }
    }

    fn term(&mut self) -> PResult<Tmp> {
        let mut left = self.factor()?;
        loop {
            self.skip_ws();
            let col = self.col();
            let op = match (self.peek(), self.peek_at(1)) {
                (Some('*'), Some('*')) => return Ok(left),
                (Some('*'), _) => "*",
                (Some('/'), Some('/')) => "//",
                (Some('/'), _) => "/",
                (Some('%'), _) => "%",
                _ => return Ok(left),
            };
            self.pos += op.len();
            let right = self.factor()?;
            left = binop(' ', op, left, right).map_err(|m| ParamsError::at(col, m))?;
        }
    }

    fn factor(&mut self) -> PResult<Tmp> {
        self.skip_ws();
        match self.peek() {
            Some(c @ ('-' | '+')) => {
                let col = self.col();
                self.pos += 1;
                self.enter()?;
                let v = self.factor();
                self.leave();
                let v = v?;
                match v {
                    Tmp::Num(Num::I(i)) if c == '-' => match i.checked_neg() {
                        Some(n) => Ok(Tmp::Num(Num::I(n))),
                        None => Err(ParamsError::at(col, "integer overflow in unary '-'".into())),
                    },
                    Tmp::Num(Num::F(f)) if c == '-' => Ok(Tmp::Num(Num::F(-f))),
                    Tmp::Num(n) => Ok(Tmp::Num(n)),
                    Tmp::Val(v) => Err(ParamsError::at(
                        col,
                        format!(
                            "unary '{c}' needs a number, got {}; arithmetic is only allowed on numbers",
                            v.type_name()
                        ),
                    )),
                }
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> PResult<Tmp> {
        let base = self.atom()?;
        self.skip_ws();
        if self.peek() == Some('*') && self.peek_at(1) == Some('*') {
            let col = self.col();
            self.pos += 2;
            self.enter()?;
            let exp = self.factor();
            self.leave();
            let exp = exp?;
            return binop(' ', "**", base, exp).map_err(|m| ParamsError::at(col, m));
        }
        Ok(base)
    }

    fn atom(&mut self) -> PResult<Tmp> {
        self.skip_ws();
        let c = match self.peek() {
            Some(c) => c,
            None => return self.err("unexpected end of value"),
        };
        let v = match c {
            '0'..='9' => return self.number(),
            '.' if matches!(self.peek_at(1), Some('0'..='9')) => return self.number(),
            '\'' | '"' => self.strings()?,
            '[' => self.list()?,
            '(' => return self.paren(),
            '{' => self.dict()?,
            c if c.is_alphabetic() || c == '_' => self.name_or_string()?,
            c => return Err(self.unexpected(c)),
        };
        self.check_postfix()?;
        Ok(Tmp::Val(v))
    }

    /// After an atom, reject calls, attribute access and subscripts with a clear message.
    fn check_postfix(&mut self) -> PResult<()> {
        self.skip_ws();
        match self.peek() {
            Some(c @ ('(' | '.' | '[')) => Err(self.unexpected(c)),
            _ => Ok(()),
        }
    }

    fn name_or_string(&mut self) -> PResult<Value> {
        let start = self.pos;
        let mut end = start;
        while self
            .s
            .get(end)
            .is_some_and(|c| c.is_alphanumeric() || *c == '_')
        {
            end += 1;
        }
        let name: String = self.s.get(start..end).unwrap_or_default().iter().collect();
        // String prefixes.
        if matches!(self.s.get(end), Some('\'' | '"')) {
            let lower = name.to_ascii_lowercase();
            match lower.as_str() {
                "r" | "u" => return self.strings(),
                "f" | "rf" | "fr" => {
                    return self.err("f-strings are not allowed; values are Python literals")
                }
                "b" | "rb" | "br" => return self.err("bytes literals are not supported"),
                _ => {}
            }
        }
        self.pos = end;
        match name.as_str() {
            "True" => Ok(Value::Bool(true)),
            "False" => Ok(Value::Bool(false)),
            "None" => Ok(Value::None),
            _ => {
                self.pos = start;
                self.err(format!(
                    "names are not allowed ({}); values are Python literals",
                    excerpt(&name)
                ))
            }
        }
    }

    /// One or more adjacent string literals, concatenated.
    fn strings(&mut self) -> PResult<Value> {
        let mut out = String::new();
        loop {
            self.skip_ws();
            let raw = match (self.peek(), self.peek_at(1)) {
                (Some('\'' | '"'), _) => false,
                (Some('r' | 'R'), Some('\'' | '"')) => {
                    self.pos += 1;
                    true
                }
                (Some('u' | 'U'), Some('\'' | '"')) => {
                    self.pos += 1;
                    false
                }
                (Some('f' | 'F'), Some('\'' | '"')) => {
                    return self.err("f-strings are not allowed; values are Python literals")
                }
                (Some('b' | 'B'), Some('\'' | '"')) => {
                    return self.err("bytes literals are not supported")
                }
                _ => break,
            };
            self.string_literal(raw, &mut out)?;
        }
        Ok(Value::Str(out))
    }

    fn string_literal(&mut self, raw: bool, out: &mut String) -> PResult<()> {
        let open_col = self.col();
        let q = match self.peek() {
            Some(q @ ('\'' | '"')) => q,
            _ => return self.err("expected a string"),
        };
        if self.peek_at(1) == Some(q) && self.peek_at(2) == Some(q) {
            return self.err("triple-quoted strings are not supported");
        }
        self.pos += 1;
        loop {
            let c = match self.peek() {
                Some(c) => c,
                None => {
                    return Err(ParamsError::at(
                        open_col,
                        format!("unterminated string (missing closing {q})"),
                    ))
                }
            };
            self.pos += 1;
            if c == q {
                return Ok(());
            }
            if c == '\n' {
                return Err(ParamsError::at(
                    open_col,
                    "unterminated string (newline inside a string)".into(),
                ));
            }
            if c == '\0' {
                return Err(ParamsError::at(self.col() - 1, NUL_IN_STRING.into()));
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let esc_col = self.col() - 1;
            let e = match self.peek() {
                Some(e) => e,
                None => {
                    return Err(ParamsError::at(
                        open_col,
                        format!("unterminated string (missing closing {q})"),
                    ))
                }
            };
            self.pos += 1;
            if e == '\0' {
                // A backslash before a literal NUL keeps it (raw strings, unknown escapes).
                return Err(ParamsError::at(esc_col + 1, NUL_IN_STRING.into()));
            }
            if raw {
                // A backslash keeps the next character (and itself) in raw strings.
                out.push('\\');
                out.push(e);
                continue;
            }
            match e {
                '\n' => {}
                '\\' => out.push('\\'),
                '\'' => out.push('\''),
                '"' => out.push('"'),
                'a' => out.push('\x07'),
                'b' => out.push('\x08'),
                'f' => out.push('\x0c'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'v' => out.push('\x0b'),
                '0'..='7' => {
                    let mut n = e.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        match self.peek().and_then(|d| d.to_digit(8)) {
                            Some(d) => {
                                n = n * 8 + d;
                                self.pos += 1;
                            }
                            None => break,
                        }
                    }
                    match char::from_u32(n) {
                        Some('\0') => return Err(ParamsError::at(esc_col, NUL_IN_STRING.into())),
                        Some(ch) => out.push(ch),
                        None => {
                            return Err(ParamsError::at(esc_col, "invalid octal escape".into()))
                        }
                    }
                }
                'x' | 'u' | 'U' => {
                    let len = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let mut n: u32 = 0;
                    for _ in 0..len {
                        match self.peek().and_then(|d| d.to_digit(16)) {
                            Some(d) => {
                                n = n * 16 + d;
                                self.pos += 1;
                            }
                            None => {
                                return Err(ParamsError::at(
                                    esc_col,
                                    format!("truncated \\{e} escape (needs {len} hex digits)"),
                                ))
                            }
                        }
                    }
                    match char::from_u32(n) {
                        Some('\0') => return Err(ParamsError::at(esc_col, NUL_IN_STRING.into())),
                        Some(ch) => out.push(ch),
                        None => {
                            return Err(ParamsError::at(
                                esc_col,
                                format!("\\{e} escape is not a valid character"),
                            ))
                        }
                    }
                }
                'N' => {
                    return Err(ParamsError::at(
                        esc_col,
                        "\\N{...} escapes are not supported".into(),
                    ))
                }
                other => {
                    // Python keeps unknown escapes verbatim.
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }

    fn number(&mut self) -> PResult<Tmp> {
        let start = self.pos;
        let col = self.col();
        let next_is_ident = |p: &Parser| {
            p.peek()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
        };
        // Prefixed integers.
        if self.peek() == Some('0') {
            let radix = match self.peek_at(1) {
                Some('x' | 'X') => Some(16),
                Some('o' | 'O') => Some(8),
                Some('b' | 'B') => Some(2),
                _ => None,
            };
            if let Some(radix) = radix {
                self.pos += 2;
                let digits = self.digits(radix, true)?;
                if digits.is_empty() {
                    return self.err("invalid number literal");
                }
                if next_is_ident(self) {
                    return self.err("invalid number literal");
                }
                return match i128::from_str_radix(&digits, radix) {
                    Ok(i) => Ok(Tmp::Num(Num::I(i))),
                    Err(_) => Err(ParamsError::at(col, "integer literal too large".into())),
                };
            }
        }
        let int_part = self.digits(10, false)?;
        let mut is_float = false;
        let mut text = int_part.clone();
        if self.peek() == Some('.') {
            is_float = true;
            self.pos += 1;
            text.push('.');
            if matches!(self.peek(), Some('0'..='9')) {
                text.push_str(&self.digits(10, false)?);
            }
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let save = self.pos;
            self.pos += 1;
            let mut exp = String::from("e");
            if let Some(c @ ('+' | '-')) = self.peek() {
                exp.push(c);
                self.pos += 1;
            }
            if matches!(self.peek(), Some('0'..='9')) {
                exp.push_str(&self.digits(10, false)?);
                text.push_str(&exp);
                is_float = true;
            } else {
                self.pos = save;
                return self.err("invalid number literal (incomplete exponent)");
            }
        }
        if matches!(self.peek(), Some('j' | 'J')) {
            return self.err("complex numbers are not supported");
        }
        if self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return self.err("invalid number literal");
        }
        if is_float {
            let f: f64 = match text.parse() {
                Ok(f) => f,
                Err(_) => return Err(ParamsError::at(col, "invalid float literal".into())),
            };
            if !f.is_finite() {
                return Err(ParamsError::at(col, "float literal is not finite".into()));
            }
            return Ok(Tmp::Num(Num::F(f)));
        }
        if int_part.len() > 1 && int_part.starts_with('0') && int_part.chars().any(|c| c != '0') {
            self.pos = start;
            return self
                .err("leading zeros in decimal integers are not allowed (use 0o for octal)");
        }
        match int_part.parse::<i128>() {
            Ok(i) => Ok(Tmp::Num(Num::I(i))),
            Err(_) => Err(ParamsError::at(col, "integer literal too large".into())),
        }
    }

    /// Digits of `radix` with single `_` separators between digits.
    fn digits(&mut self, radix: u32, leading_underscore: bool) -> PResult<String> {
        let mut out = String::new();
        let mut last_us = false;
        loop {
            match self.peek() {
                Some('_') => {
                    if last_us || (out.is_empty() && !leading_underscore) {
                        return self.err("invalid '_' in number literal");
                    }
                    last_us = true;
                    self.pos += 1;
                }
                Some(c) if c.is_digit(radix) => {
                    out.push(c);
                    last_us = false;
                    self.pos += 1;
                }
                Some(c) if c.is_ascii_digit() => {
                    return self.err(format!("invalid digit '{c}' in base-{radix} literal"));
                }
                _ => break,
            }
        }
        if last_us {
            return self.err("invalid '_' in number literal");
        }
        Ok(out)
    }

    /// Comma-separated expressions until `close`; returns the items and whether a comma
    /// was seen.
    fn seq(&mut self, close: char) -> PResult<(Vec<Value>, bool)> {
        let open_col = self.col();
        self.pos += 1;
        self.enter()?;
        let mut items = Vec::new();
        let mut comma = false;
        loop {
            self.skip_ws();
            match self.peek() {
                Some(c) if c == close => {
                    self.pos += 1;
                    break;
                }
                None => {
                    return Err(ParamsError::at(
                        open_col,
                        format!("unclosed bracket (missing '{close}')"),
                    ))
                }
                _ => {}
            }
            items.push(self.expr()?);
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    comma = true;
                    self.pos += 1;
                }
                Some(c) if c == close => {}
                None => {
                    return Err(ParamsError::at(
                        open_col,
                        format!("unclosed bracket (missing '{close}')"),
                    ))
                }
                Some(c) => {
                    return Err(ParamsError::at(
                        self.col(),
                        format!(
                            "expected ',' or '{close}', found {}",
                            Value::Str(c.to_string())
                        ),
                    ))
                }
            }
        }
        self.leave();
        Ok((items, comma))
    }

    fn list(&mut self) -> PResult<Value> {
        let (items, _) = self.seq(']')?;
        Ok(Value::List(items))
    }

    /// `()` → empty tuple, `(x,)`/`(x, y)` → tuple, `(x)` → x (arithmetic grouping).
    fn paren(&mut self) -> PResult<Tmp> {
        let open_col = self.col();
        // Try to parse `( arith )` first for grouping of numbers.
        self.pos += 1;
        self.enter()?;
        self.skip_ws();
        if self.peek() == Some(')') {
            self.pos += 1;
            self.leave();
            self.check_postfix()?;
            return Ok(Tmp::Val(Value::Tuple(Vec::new())));
        }
        let first_col = self.col();
        let first = self.arith()?;
        self.skip_ws();
        match self.peek() {
            Some(')') => {
                self.pos += 1;
                self.leave();
                self.check_postfix()?;
                Ok(first)
            }
            Some(',') => {
                let mut items = vec![finish(first).map_err(|m| ParamsError::at(first_col, m))?];
                self.pos += 1;
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(')') => {
                            self.pos += 1;
                            break;
                        }
                        None => {
                            return Err(ParamsError::at(
                                open_col,
                                "unclosed bracket (missing ')')".into(),
                            ))
                        }
                        _ => {}
                    }
                    items.push(self.expr()?);
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some(')') => {}
                        None => {
                            return Err(ParamsError::at(
                                open_col,
                                "unclosed bracket (missing ')')".into(),
                            ))
                        }
                        Some(c) => {
                            return Err(ParamsError::at(
                                self.col(),
                                format!("expected ',' or ')', found {}", Value::Str(c.to_string())),
                            ))
                        }
                    }
                }
                self.leave();
                self.check_postfix()?;
                Ok(Tmp::Val(Value::Tuple(items)))
            }
            None => Err(ParamsError::at(
                open_col,
                "unclosed bracket (missing ')')".into(),
            )),
            Some(c) => Err(ParamsError::at(
                self.col(),
                format!("expected ',' or ')', found {}", Value::Str(c.to_string())),
            )),
        }
    }

    fn dict(&mut self) -> PResult<Value> {
        let open_col = self.col();
        self.pos += 1;
        self.enter()?;
        let mut items: Vec<(Value, Value)> = Vec::new();
        // Index in `items` of each key, by Python identity and by JSON key.
        let mut by_py: std::collections::HashMap<PyKey, usize> = std::collections::HashMap::new();
        let mut by_json: std::collections::HashMap<String, usize> =
            std::collections::HashMap::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some('}') => {
                    self.pos += 1;
                    break;
                }
                None => {
                    return Err(ParamsError::at(
                        open_col,
                        "unclosed bracket (missing '}')".into(),
                    ))
                }
                _ => {}
            }
            let key_col = self.col();
            let key = self.expr()?;
            self.skip_ws();
            match self.peek() {
                Some(':') => self.pos += 1,
                Some(',' | '}') => {
                    return Err(ParamsError::at(
                        open_col,
                        "sets are not supported; use a list".into(),
                    ))
                }
                None => {
                    return Err(ParamsError::at(
                        open_col,
                        "unclosed bracket (missing '}')".into(),
                    ))
                }
                Some(c) => {
                    return Err(ParamsError::at(
                        self.col(),
                        format!("expected ':' in dict, found {}", Value::Str(c.to_string())),
                    ))
                }
            }
            let Some(pk) = py_key(&key).filter(|_| hashable(&key)) else {
                return Err(ParamsError::at(
                    key_col,
                    format!("unhashable dict key of type {}", key.type_name()),
                ));
            };
            if let Some(other) = by_py.get(&pk).and_then(|&i| items.get(i)).map(|(k, _)| k) {
                let message = if *other == key {
                    format!("duplicate dict key {key}")
                } else {
                    // `{1: 'x', True: 'y'}`: one key in Python, which would keep `1: 'y'`.
                    format!(
                        "dict keys {other} and {key} are the same key in Python ({other} == {key})"
                    )
                };
                return Err(ParamsError::at(key_col, message));
            }
            // Distinct in Python, one key in JSON (`{1: 'a', '1': 'b'}`): the plan and the
            // results would silently lose an entry.
            let jk = key.json_key();
            if let Some(other) = by_json.get(&jk).and_then(|&i| items.get(i)).map(|(k, _)| k) {
                return Err(ParamsError::at(
                    key_col,
                    format!("dict keys {other} and {key} are the same key in JSON"),
                ));
            }
            by_py.insert(pk, items.len());
            by_json.insert(jk, items.len());
            let value = self.expr()?;
            items.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {}
                None => {
                    return Err(ParamsError::at(
                        open_col,
                        "unclosed bracket (missing '}')".into(),
                    ))
                }
                Some(c) => {
                    return Err(ParamsError::at(
                        self.col(),
                        format!("expected ',' or '}}', found {}", Value::Str(c.to_string())),
                    ))
                }
            }
        }
        self.leave();
        Ok(Value::Dict(items))
    }
}

/// A hashable value as Python compares dict keys: numbers by value across bool, int and float
/// (`True == 1 == 1.0`, `False == 0 == 0.0 == -0.0`), tuples item by item, strings and None by
/// themselves. Equal keys give equal `PyKey`s.
#[derive(Debug, PartialEq, Eq, Hash)]
enum PyKey {
    None,
    /// An int, a bool, or a float with an integral value that an i64 holds exactly.
    Int(i64),
    /// Any other (finite) float, by its bits.
    Float(u64),
    Str(String),
    Tuple(Vec<PyKey>),
}

/// The Python dict-key identity of a hashable value (None for a list or a dict, or a tuple
/// holding one).
fn py_key(v: &Value) -> Option<PyKey> {
    Some(match v {
        Value::None => PyKey::None,
        Value::Bool(b) => PyKey::Int(i64::from(*b)),
        Value::Int(i) => PyKey::Int(*i),
        Value::Float(f) => {
            // -2^63 <= f < 2^63: an integral f is exactly an i64.
            if f.fract() == 0.0
                && *f >= -9_223_372_036_854_775_808.0
                && *f < 9_223_372_036_854_775_808.0
            {
                PyKey::Int(*f as i64)
            } else {
                PyKey::Float(f.to_bits())
            }
        }
        Value::Str(s) => PyKey::Str(s.clone()),
        Value::Tuple(items) => PyKey::Tuple(items.iter().map(py_key).collect::<Option<_>>()?),
        Value::List(_) | Value::Dict(_) => return None,
    })
}

fn hashable(v: &Value) -> bool {
    match v {
        Value::List(_) | Value::Dict(_) => false,
        Value::Tuple(items) => items.iter().all(hashable),
        _ => true,
    }
}

fn finish(t: Tmp) -> Result<Value, String> {
    match t {
        Tmp::Val(v) => Ok(v),
        Tmp::Num(Num::F(f)) if f.is_finite() => Ok(Value::Float(f)),
        Tmp::Num(Num::F(_)) => Err("result is not a finite number".into()),
        Tmp::Num(Num::I(i)) => i64::try_from(i)
            .map(Value::Int)
            .map_err(|_| format!("integer {i} does not fit in 64 bits")),
    }
}

fn binop(op1: char, op: &str, l: Tmp, r: Tmp) -> Result<Tmp, String> {
    let op = if op.is_empty() {
        op1.to_string()
    } else {
        op.to_string()
    };
    let (a, b) = match (l, r) {
        (Tmp::Num(a), Tmp::Num(b)) => (a, b),
        (Tmp::Num(_), Tmp::Val(v)) | (Tmp::Val(v), _) => {
            return Err(format!(
                "'{op}' needs numbers, got {}; arithmetic is only allowed on numbers",
                v.type_name()
            ))
        }
    };
    let overflow = || format!("integer overflow in '{op}'");
    let res = match (a, b) {
        (Num::I(a), Num::I(b)) => match op.as_str() {
            "+" => Num::I(a.checked_add(b).ok_or_else(overflow)?),
            "-" => Num::I(a.checked_sub(b).ok_or_else(overflow)?),
            "*" => Num::I(a.checked_mul(b).ok_or_else(overflow)?),
            "/" => {
                if b == 0 {
                    return Err("division by zero".into());
                }
                Num::F(a as f64 / b as f64)
            }
            "//" => {
                if b == 0 {
                    return Err("division by zero".into());
                }
                let q = a.checked_div(b).ok_or_else(overflow)?;
                let r = a.checked_rem(b).ok_or_else(overflow)?;
                Num::I(if r != 0 && ((r < 0) != (b < 0)) {
                    q - 1
                } else {
                    q
                })
            }
            "%" => {
                if b == 0 {
                    return Err("division by zero".into());
                }
                let r = a.checked_rem(b).ok_or_else(overflow)?;
                Num::I(if r != 0 && ((r < 0) != (b < 0)) {
                    r + b
                } else {
                    r
                })
            }
            "**" => {
                if b.unsigned_abs() > MAX_EXPONENT.unsigned_abs() {
                    return Err(format!("exponent {b} is larger than {MAX_EXPONENT}"));
                }
                if b < 0 {
                    if a == 0 {
                        return Err("zero cannot be raised to a negative power".into());
                    }
                    // b is within ±MAX_EXPONENT, so the cast is exact.
                    Num::F((a as f64).powi(b as i32))
                } else {
                    let e = u32::try_from(b).map_err(|_| overflow())?;
                    Num::I(a.checked_pow(e).ok_or_else(overflow)?)
                }
            }
            _ => return Err(format!("unknown operator '{op}'")),
        },
        (a, b) => {
            let a = num_f(&a);
            let b = num_f(&b);
            let v = match op.as_str() {
                "+" => a + b,
                "-" => a - b,
                "*" => a * b,
                "/" | "//" | "%" if b == 0.0 => return Err("division by zero".into()),
                "/" => a / b,
                "//" => (a / b).floor(),
                "%" => a - b * (a / b).floor(),
                "**" => {
                    if b.abs() > MAX_EXPONENT as f64 {
                        return Err(format!("exponent {b} is larger than {MAX_EXPONENT}"));
                    }
                    if a < 0.0 && b.fract() != 0.0 {
                        return Err("negative number raised to a fractional power".into());
                    }
                    if a == 0.0 && b < 0.0 {
                        return Err("zero cannot be raised to a negative power".into());
                    }
                    a.powf(b)
                }
                _ => return Err(format!("unknown operator '{op}'")),
            };
            if !v.is_finite() {
                return Err(format!("result of '{op}' is not a finite number"));
            }
            Num::F(v)
        }
    };
    Ok(Tmp::Num(res))
}

fn num_f(n: &Num) -> f64 {
    match n {
        Num::I(i) => *i as f64,
        Num::F(f) => *f,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Value {
        match parse_value(s) {
            Ok(v) => v,
            Err(e) => panic!("parse_value({s:?}) failed: {e}"),
        }
    }

    fn err(s: &str) -> String {
        match parse_value(s) {
            Ok(v) => panic!("parse_value({s:?}) unexpectedly gave {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    fn sd(pairs: &[(&str, Value)]) -> Value {
        Value::Dict(pairs.iter().map(|(k, v)| (s(k), v.clone())).collect())
    }

    #[test]
    fn scalars() {
        assert_eq!(v("1"), Value::Int(1));
        assert_eq!(v("  10 "), Value::Int(10));
        assert_eq!(v("9000"), Value::Int(9000));
        assert_eq!(v("-1"), Value::Int(-1));
        assert_eq!(v("+7"), Value::Int(7));
        assert_eq!(v("0x1F"), Value::Int(31));
        assert_eq!(v("0o17"), Value::Int(15));
        assert_eq!(v("0b101"), Value::Int(5));
        assert_eq!(v("1_000_000"), Value::Int(1_000_000));
        assert_eq!(v("0x_ff"), Value::Int(255));
        assert_eq!(v("00"), Value::Int(0));
        assert_eq!(v("0.5"), Value::Float(0.5));
        assert_eq!(v("1e3"), Value::Float(1000.0));
        assert_eq!(v("1E-2"), Value::Float(0.01));
        assert_eq!(v(".5"), Value::Float(0.5));
        assert_eq!(v("1."), Value::Float(1.0));
        assert_eq!(v("-0.25"), Value::Float(-0.25));
        assert_eq!(v("True"), Value::Bool(true));
        assert_eq!(v("False"), Value::Bool(false));
        assert_eq!(v("None"), Value::None);
        assert_eq!(v("9223372036854775807"), Value::Int(i64::MAX));
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(v("'ice'"), s("ice"));
        assert_eq!(v("\"ice\""), s("ice"));
        assert_eq!(v("'active-backup'"), s("active-backup"));
        assert_eq!(v(r#"'a\nb\tc\\d\'e\"f'"#), s("a\nb\tc\\d'e\"f"));
        assert_eq!(v(r"'\x41\u00e9\U0001F600'"), s("Aé😀"));
        assert_eq!(v(r"'\101'"), s("A"));
        assert_eq!(v(r"'\d'"), s("\\d"));
        assert_eq!(v(r"r'\d+\n'"), s("\\d+\\n"));
        assert_eq!(v(r"R'a\'b'"), s("a\\'b"));
        assert_eq!(v("u'x'"), s("x"));
        assert_eq!(v("'a' \"b\" 'c'"), s("abc"));
        assert_eq!(v("'a' r'\\n'"), s("a\\n"));
        assert_eq!(v("''"), s(""));
        assert_eq!(v("'x=y;z'"), s("x=y;z"));
        assert_eq!(v("'192.168.220.0/24'"), s("192.168.220.0/24"));
        assert_eq!(v("\"fd00:0:b100::/64\""), s("fd00:0:b100::/64"));
    }

    #[test]
    fn nul_is_rejected_in_strings() {
        for lit in [
            r"'\x00'",
            r"'\0'",
            r"'\000'",
            r"'a\u0000'",
            r"'\U00000000'",
            "'a\u{0}b'",
            // A backslash before a literal NUL (found by the params fuzz target in CI).
            "'a\\\u{0}b'",
            "r'a\\\u{0}b'",
            "u\"\\x82\\\\\\\u{0}\"",
        ] {
            let e = err(lit);
            assert!(e.contains("NUL characters are not allowed"), "{lit}: {e}");
        }
        assert!(err(r"'ab\x00'").starts_with("column 4: "));
        let e = parse_params(r"driver='ice\x00evil'")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            e,
            "RECIPE_PARAMS: driver: column 5: NUL characters are not allowed in strings"
        );
        // A raw string keeps the backslash: no NUL.
        assert_eq!(v(r"r'\0'"), s("\\0"));
        assert_eq!(v(r"'\x01'"), s("\u{1}"));
        let j = serde_json::json!({"a\u{0}": 1});
        assert!(Value::from_json(&j).is_err());
        let j = serde_json::json!(["ice\u{0}"]);
        assert!(Value::from_json(&j)
            .err()
            .is_some_and(|e| e.to_string().contains("NUL")));
    }

    #[test]
    fn containers() {
        assert_eq!(v("[0,1]"), Value::List(vec![Value::Int(0), Value::Int(1)]));
        assert_eq!(
            v("[ 0 , 1 , ]"),
            Value::List(vec![Value::Int(0), Value::Int(1)])
        );
        assert_eq!(v("[]"), Value::List(vec![]));
        assert_eq!(
            v("['tcp_stream','udp_stream']"),
            Value::List(vec![s("tcp_stream"), s("udp_stream")])
        );
        assert_eq!(v("('ipv4',)"), Value::Tuple(vec![s("ipv4")]));
        assert_eq!(v("('ipv4')"), s("ipv4"));
        assert_eq!(v("()"), Value::Tuple(vec![]));
        assert_eq!(
            v("(1, 2)"),
            Value::Tuple(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(
            v("(1, 2,)"),
            Value::Tuple(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(v("'ipv4',"), Value::Tuple(vec![s("ipv4")]));
        assert_eq!(v("1, 2"), Value::Tuple(vec![Value::Int(1), Value::Int(2)]));
        assert_eq!(
            v("[('aes',128),('aes',256)]"),
            Value::List(vec![
                Value::Tuple(vec![s("aes"), Value::Int(128)]),
                Value::Tuple(vec![s("aes"), Value::Int(256)]),
            ])
        );
        assert_eq!(
            v("[('hmac(md5)',128),('sha256',256)]")
                .items()
                .map(|x| x.len()),
            Some(2)
        );
        assert_eq!(
            v("[{'gro':'on','gso':'on','tso':'on','tx':'on','rx':'on'}]"),
            Value::List(vec![sd(&[
                ("gro", s("on")),
                ("gso", s("on")),
                ("tso", s("on")),
                ("tx", s("on")),
                ("rx", s("on")),
            ])])
        );
        assert_eq!(v("{}"), Value::Dict(vec![]));
        assert_eq!(
            v("{'Po1':['eth1','eth2']}"),
            sd(&[("Po1", Value::List(vec![s("eth1"), s("eth2")]))])
        );
        assert_eq!(
            v("{1: 'a', (1, 2): 'b',}"),
            Value::Dict(vec![
                (Value::Int(1), s("a")),
                (Value::Tuple(vec![Value::Int(1), Value::Int(2)]), s("b")),
            ])
        );
    }

    #[test]
    fn nested_dicts() {
        let x = v("{'host1':{'eth0':{'cpus':[0],'cpu_policy':'round-robin'}}}");
        let dev = x.dict_get("host1").and_then(|h| h.dict_get("eth0"));
        assert_eq!(
            dev.and_then(|d| d.dict_get("cpus")),
            Some(&Value::List(vec![Value::Int(0)]))
        );
        assert_eq!(
            dev.and_then(|d| d.dict_get("cpu_policy"))
                .and_then(Value::as_str),
            Some("round-robin")
        );
        let x = v("{'host1.ns1':{'veth0':{'cpus':[1],'cpu_policy':'all'}}}");
        assert!(x.dict_get("host1.ns1").is_some());
        let x = v("{'host1':{'eth0':{'adaptive-rx':'off','rx-usecs':16,'rx-frames':32}}}");
        assert_eq!(
            x.dict_get("host1")
                .and_then(|h| h.dict_get("eth0"))
                .and_then(|d| d.dict_get("rx-usecs"))
                .and_then(Value::as_i64),
            Some(16)
        );
        let x = v("{'host1':{'eth0':'toeplitz'}}");
        assert_eq!(
            x.dict_get("host1").and_then(|h| h.dict_get("eth0")),
            Some(&s("toeplitz"))
        );
    }

    #[test]
    fn arithmetic() {
        assert_eq!(v("2**10"), Value::Int(1024));
        assert_eq!(v("[2**10]"), Value::List(vec![Value::Int(1024)]));
        assert_eq!(v("60*5"), Value::Int(300));
        assert_eq!(v("1 + 2 * 3"), Value::Int(7));
        assert_eq!(v("(1 + 2) * 3"), Value::Int(9));
        assert_eq!(v("7 / 2"), Value::Float(3.5));
        assert_eq!(v("4 / 2"), Value::Float(2.0));
        assert_eq!(v("7 // 2"), Value::Int(3));
        assert_eq!(v("-7 // 2"), Value::Int(-4));
        assert_eq!(v("-7 % 3"), Value::Int(2));
        assert_eq!(v("7 % -3"), Value::Int(-2));
        assert_eq!(v("2 ** 3 ** 2"), Value::Int(512));
        assert_eq!(v("-2 ** 2"), Value::Int(-4));
        assert_eq!(v("2 ** -1"), Value::Float(0.5));
        assert_eq!(v("1.5 * 2"), Value::Float(3.0));
        assert_eq!(v("2**63 - 1"), Value::Int(i64::MAX));
        assert_eq!(v("-2**63"), Value::Int(i64::MIN));
        assert_eq!(v("--1"), Value::Int(1));
        assert_eq!(v("104857600"), Value::Int(104_857_600));
    }

    #[test]
    fn params_examples() {
        let p = parse_params("perf_iterations=1;perf_duration=10").unwrap_or_default();
        assert_eq!(
            p,
            vec![
                ("perf_iterations".to_string(), Value::Int(1)),
                ("perf_duration".to_string(), Value::Int(10)),
            ]
        );
        // The XDPDrop example from the upstream docs.
        let p = parse_params(
            "perf_iterations=1;perf_tool_cpu=[0,1];multi_dev_interrupt_config={'host1':{'eth0':{'cpus':[0],'policy':'round-robin'}}}",
        );
        let p = match p {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(p.len(), 3);
        assert_eq!(p[1].1, Value::List(vec![Value::Int(0), Value::Int(1)]));
        assert_eq!(
            p[2].1
                .dict_get("host1")
                .and_then(|h| h.dict_get("eth0"))
                .and_then(|d| d.dict_get("policy")),
            Some(&s("round-robin"))
        );
        // `;` and `=` inside strings, empty segments, whitespace around key and value.
        let p = parse_params(" rule=['a;b', 'x=y'] ;; name = \"k=v\" ;").unwrap_or_default();
        assert_eq!(
            p,
            vec![
                ("rule".to_string(), Value::List(vec![s("a;b"), s("x=y")])),
                ("name".to_string(), s("k=v")),
            ]
        );
        assert_eq!(parse_params(""), Ok(vec![]));
        assert_eq!(parse_params(" ; ;"), Ok(vec![]));
        let p = parse_params(
            "perf_tests=['tcp_stream'];ip_versions=('ipv4',);offload_combinations=();net_ipv4='192.168.220.0/24';perf_test_simulation=True;ping_interval=0.5",
        )
        .unwrap_or_default();
        assert_eq!(p.len(), 6);
        assert_eq!(p[1].1, Value::Tuple(vec![s("ipv4")]));
        assert_eq!(p[2].1, Value::Tuple(vec![]));
        assert_eq!(p[4].1, Value::Bool(true));
        assert_eq!(p[5].1, Value::Float(0.5));
    }

    #[test]
    fn rejects_names_and_calls() {
        let e = parse_params("perf_iterations=__import__('os').system('touch /tmp/x')")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("RECIPE_PARAMS: perf_iterations: column 1: names are not allowed ('__import__'); values are Python literals")
        );
        assert!(err("ipsec_mode").contains("names are not allowed ('ipsec_mode')"));
        assert!(err("transport").contains("column 1"));
        assert!(err("[1, os]").contains("column 5"));
        assert!(err("StatCPUMeasurement").contains("names are not allowed"));
        assert!(err("lambda: 1").contains("names are not allowed ('lambda')"));
        assert!(err("'abc'.upper()").contains("attribute access"));
        assert!(err("(1)(2)").contains("calls are not allowed"));
        assert!(err("[1][0]").contains("subscripts are not allowed"));
        assert!(err("f'{x}'").contains("f-strings"));
        assert!(err("b'x'").contains("bytes"));
        assert!(err("{1, 2}").contains("sets are not supported"));
        assert!(err("'a' * 3").contains("only allowed on numbers"));
        assert!(err("[1] + [2]").contains("only allowed on numbers"));
        assert!(err("-True").contains("only allowed on numbers"));
        assert!(err("1 if 1 else 2").contains("names are not allowed ('if')"));
        assert!(err("1 == 1").contains("unexpected '='"));
        assert!(err("1 # comment").contains("unexpected '#'"));
        assert!(err("1j").contains("complex"));
        assert!(err("010").contains("leading zeros"));
        assert!(err("1__0").contains("'_'"));
        assert!(err("1_").contains("'_'"));
        assert!(err("0b102").contains("invalid digit"));
        assert!(err("1e").contains("exponent"));
        assert!(err("1e999").contains("not finite"));
        assert!(err("1 / 0").contains("division by zero"));
        assert!(err("2 ** 100000").contains("exponent"));
        assert!(err("{[1]: 2}").contains("unhashable"));
        assert!(err("").contains("empty value"));
        assert!(err(r"'\N{DASH}'").contains("\\N"));
        assert!(err("'''x'''").contains("triple"));
    }

    #[test]
    fn rejects_unbalanced() {
        assert!(err("'abc").contains("unterminated string"));
        assert!(err("\"abc'").contains("unterminated string"));
        assert!(err("[1, 2").contains("unclosed bracket"));
        assert!(err("{'a': 1").contains("unclosed bracket"));
        assert!(err("(1, 2").contains("unclosed bracket"));
        assert!(err("(1").contains("unclosed bracket"));
        assert!(err("[1, 2]]").contains("unexpected ']'"));
        assert!(err("[1 2]").contains("expected ','"));
        assert!(err("{'a' 1}").contains("expected ':'"));
        let e = parse_params("perf_tool_cpu=[0,1;perf_iterations=1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("RECIPE_PARAMS: perf_tool_cpu: column 5: expected ',' or ']'"),
            "{e}"
        );
        let e = parse_params("driver='ice;perf_iterations=1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unterminated string"), "{e}");
    }

    #[test]
    fn limits() {
        let deep = "[".repeat(100_000);
        assert!(err(&deep).contains("limit is 65536"));
        let deep = "[".repeat(60_000);
        assert!(err(&deep).contains("nesting deeper than 32"));
        let e = parse_params(&format!("a={}", "[".repeat(100_000)))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("limit"), "{e}");
        let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(err(&deep).contains("limit") || err(&deep).contains("nesting"));
        let deep = format!("{}1", "-".repeat(50_000));
        assert!(err(&deep).contains("nesting deeper"));
        let deep = format!("2{}", "**2".repeat(10_000));
        assert!(err(&deep).contains("nesting deeper"));
        let ok32 = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(parse_value(&ok32).is_ok());
        let bad33 = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert!(err(&bad33).contains("nesting deeper"));
        let deep_dict = format!("{}1{}", "{'a':".repeat(40), "}".repeat(40));
        assert!(err(&deep_dict).contains("nesting deeper"));

        assert!(err("9223372036854775808").contains("does not fit in 64 bits"));
        assert!(err("99999999999999999999999999999999999999999999").contains("too large"));
        assert!(err("0xffffffffffffffffffffffffffffffffffff").contains("too large"));
        assert!(err("2**64").contains("does not fit"));
        assert!(err("2**127 * 2").contains("overflow"));

        let big = format!("x='{}'", "a".repeat(MAX_INPUT));
        let e = parse_params(&big)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("limit is 65536"), "{e}");
        let just = format!("x='{}'", "a".repeat(MAX_INPUT - 4));
        assert_eq!(just.len(), MAX_INPUT);
        assert!(parse_params(&just).is_ok());
    }

    #[test]
    fn params_errors() {
        let e = |s: &str| {
            parse_params(s)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(e("a=1;a=2").contains("a: parameter given more than once"));
        assert!(e("=1").contains("empty parameter name"));
        assert!(e(" =1").contains("empty parameter name"));
        assert!(e("perf_iterations").contains("missing '='"));
        assert!(e("'a=b'").contains("missing '='"));
        assert!(e("a b=1").contains("not an identifier"));
        assert!(e("1a=1").contains("not an identifier"));
        assert!(e("a=").contains("a: column 1: empty value"));
        assert!(e("a=1=2").contains("a: column 2: unexpected '='"));
        assert!(e("a={'k':1,'k':2}").contains("duplicate dict key 'k'"));
        assert!(e("a={1:'a','1':'b'}").contains("dict keys 1 and '1' are the same key in JSON"));
        // Python's key equality across bool, int and float (and inside tuples).
        for (dict, msg) in [
            (
                "{1:'x', True:'y'}",
                "dict keys 1 and True are the same key in Python (1 == True)",
            ),
            (
                "{True:'x', 1.0:'y'}",
                "dict keys True and 1.0 are the same key in Python",
            ),
            (
                "{0:'x', False:'y'}",
                "dict keys 0 and False are the same key in Python",
            ),
            (
                "{-0.0:'x', 0:'y'}",
                "dict keys -0.0 and 0 are the same key in Python",
            ),
            (
                "{(1, 'a'):'x', (True, 'a'):'y'}",
                "dict keys (1, 'a') and (True, 'a') are the same key in Python",
            ),
            (
                "{2**53:'x', 9007199254740992.0:'y'}",
                "are the same key in Python",
            ),
            ("{None:1, None:2}", "duplicate dict key None"),
            ("{(1,):1, (1,):2}", "duplicate dict key (1,)"),
        ] {
            let m = e(&format!("a={dict}"));
            assert!(m.contains(msg), "{dict}: {m}");
        }
        for ok in [
            "{1: 'x', 2: 'y', 1.5: 'z'}",
            "{2**53 + 1: 'x', 9007199254740992.0: 'y'}",
            "{(1,): 'x', (1, 1): 'y', 'True': 'z'}",
            "{9.3e18: 'x', 9223372036854775807: 'y'}",
        ] {
            assert!(parse_params(&format!("a={ok}")).is_ok(), "{ok}");
        }
        assert!(e("a=[1, x]").starts_with("RECIPE_PARAMS: a: column 5: names"));
    }

    #[test]
    fn repr() {
        let cases = [
            "'abc'",
            "True",
            "None",
            "(1,)",
            "()",
            "(1, 2)",
            "{'a': 1}",
            "[1, 2.5, 'x']",
            "\"it's\"",
            "'a\\nb'",
            "1.0",
            "1e+16",
            "1e-05",
            "0.0001",
            "{'host1': {'eth0': {'cpus': [0], 'cpu_policy': 'round-robin'}}}",
        ];
        for c in cases {
            assert_eq!(v(c).to_string(), c, "repr of {c}");
        }
        assert_eq!(v("1e3").to_string(), "1000.0");
        assert_eq!(v("'it\\'s \"x\"'").to_string(), "'it\\'s \"x\"'");
        assert_eq!(v("'\\x01'").to_string(), "'\\x01'");
    }

    #[test]
    fn json_round_trip() {
        let x = v("{'a': (1, 'x'), 'b': None, 'c': [True, 0.5], 1: {}}");
        let j = x.to_json();
        assert_eq!(
            j,
            serde_json::json!({"a": [1, "x"], "b": null, "c": [true, 0.5], "1": {}})
        );
        let back = Value::from_json(&j).unwrap_or(Value::None);
        assert_eq!(
            back.dict_get("a"),
            Some(&Value::List(vec![Value::Int(1), s("x")]))
        );
        assert_eq!(back.dict_get("b"), Some(&Value::None));
        assert!(Value::from_json(&serde_json::json!(u64::MAX)).is_err());
        let mut deep = serde_json::json!(1);
        for _ in 0..40 {
            deep = serde_json::json!([deep]);
        }
        assert!(Value::from_json(&deep).is_err());
    }

    fn fixture_lines(text: &str) -> impl Iterator<Item = &str> {
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    }

    #[test]
    fn fixture_valid_examples_parse() {
        let text = include_str!("../tests/fixtures/params/valid.txt");
        let mut n = 0;
        for line in fixture_lines(text) {
            match parse_params(line) {
                Ok(p) => assert!(!p.is_empty(), "{line}"),
                Err(e) => panic!("{line}: {e}"),
            }
            n += 1;
        }
        assert!(n >= 20);
    }

    #[test]
    fn fixture_invalid_examples_fail() {
        let text = include_str!("../tests/fixtures/params/invalid.txt");
        let mut n = 0;
        for line in fixture_lines(text) {
            match parse_params(line) {
                Ok(p) => panic!("{line} parsed as {p:?}"),
                Err(e) => assert!(e.to_string().starts_with("RECIPE_PARAMS: "), "{e}"),
            }
            n += 1;
        }
        assert!(n >= 15);
    }

    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> =
            "ab_=;'\"\\()[]{},:.+-*/%#0123456789eExXoObBrRfuN \t\n\u{e9}\u{0}"
                .chars()
                .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x15e7);
        let mut parsed = 0usize;
        for _ in 0..20_000 {
            let len = rng.gen_range(0..40);
            let body: String = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            if parse_value(&body).is_ok() {
                parsed += 1;
            }
            let _ = parse_params(&format!("k={body}"));
            let _ = parse_params(&body);
        }
        // Some random inputs are valid literals; the generator is not degenerate.
        assert!(parsed > 0);
    }

    #[test]
    fn accessors() {
        assert_eq!(Value::Int(3).as_f64(), Some(3.0));
        assert_eq!(Value::Float(3.0).as_i64(), None);
        assert_eq!(Value::Bool(true).as_i64(), None);
        assert_eq!(
            Value::Tuple(vec![Value::Int(1)])
                .items()
                .map(<[Value]>::len),
            Some(1)
        );
        assert_eq!(s("x").items(), None);
        assert_eq!(s("x").as_bool(), None);
    }
}
