//! Values shown in messages: user input (environment values, RECIPE_PARAMS, pool XML, TEST_DB,
//! peer frames) may be megabytes long or span lines, so every message that echoes one clips it
//! here, quotes it like Python's `repr` when it is a string value, and keeps it on one line.

/// `s` cut to `max` characters, with `…` when something was cut.
pub fn clip(s: &str, max: usize) -> String {
    let mut t: String = s.chars().take(max).collect();
    if s.chars().nth(max).is_some() {
        t.push('…');
    }
    t
}

/// `s` clipped to `max` characters and quoted like a Python string literal (`'a\nb'`):
/// control characters escaped, so the message stays on one line.
pub fn quote(s: &str, max: usize) -> String {
    crate::params::Value::Str(clip(s, max)).to_string()
}

/// `s` as one line: control characters (newlines from user input) replaced by spaces.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_quote_and_one_line() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc…");
        assert_eq!(clip("äöüß", 2), "äö…");
        assert_eq!(quote("a\nb", 10), "'a\\nb'");
        assert_eq!(quote(&"x".repeat(100), 4), "'xxxx…'");
        assert_eq!(one_line("a\nb\tc"), "a b c");
        let long = "y".repeat(1 << 20);
        assert!(quote(&long, 64).chars().count() <= 67);
    }
}
