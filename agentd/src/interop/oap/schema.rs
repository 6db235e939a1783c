//! The JSON Schema checks a passport's rules are transcribed into: types,
//! `enum`, `pattern` and `format`, each error naming the member by JSON
//! pointer as JSON Schema validators do. Shared by the passport's top level
//! and its `limits`.
use serde_json::{Map, Value};

/// Why a passport is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassportError {
    /// Not JSON at all.
    #[error("not JSON: {0}")]
    Json(String),
    /// Breaks a rule of the passport schema.
    #[error("{at}: {message}")]
    Schema {
        /// JSON pointer of the member (`/limits/data.export/max_rows`).
        at: String,
        /// The rule broken.
        message: String,
    },
}

pub(crate) fn err(at: &str, message: impl Into<String>) -> PassportError {
    PassportError::Schema {
        at: if at.is_empty() { "/".into() } else { at.into() },
        message: message.into(),
    }
}

/// A JSON pointer one member further (`~` and `/` escaped).
pub(crate) fn child(at: &str, key: &str) -> String {
    format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// `type: object`.
pub(crate) fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, PassportError> {
    v.as_object().ok_or_else(|| err(at, "must be an object"))
}

/// `type: array`.
pub(crate) fn array<'a>(v: &'a Value, at: &str) -> Result<&'a Vec<Value>, PassportError> {
    v.as_array().ok_or_else(|| err(at, "must be an array"))
}

/// `type: string`.
pub(crate) fn string<'a>(v: &'a Value, at: &str) -> Result<&'a str, PassportError> {
    v.as_str().ok_or_else(|| err(at, "must be a string"))
}

/// `type: boolean`.
pub(crate) fn boolean(v: &Value, at: &str) -> Result<bool, PassportError> {
    v.as_bool().ok_or_else(|| err(at, "must be a boolean"))
}

/// `type: integer` with `minimum` (JSON Schema counts 5.0 as an integer).
pub(crate) fn integer(v: &Value, at: &str, minimum: i64) -> Result<i64, PassportError> {
    let i = match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        _ => None,
    };
    let i = i.ok_or_else(|| err(at, "must be an integer"))?;
    if i < minimum {
        return Err(err(at, format!("must be >= {minimum}")));
    }
    Ok(i)
}

/// `enum`.
pub(crate) fn one_of(v: &Value, at: &str, allowed: &[&str]) -> Result<(), PassportError> {
    match v.as_str() {
        Some(s) if allowed.contains(&s) => Ok(()),
        _ => Err(err(at, format!("must be one of {}", allowed.join(", ")))),
    }
}

/// `type: string` with `pattern` (the check transcribes the pattern).
pub(crate) fn pattern(
    v: &Value,
    at: &str,
    check: fn(&str) -> bool,
    shown: &str,
) -> Result<(), PassportError> {
    if check(string(v, at)?) {
        return Ok(());
    }
    Err(err(at, format!("does not match the pattern {shown}")))
}

pub(crate) fn uuid(v: &Value, at: &str) -> Result<(), PassportError> {
    if is_uuid(string(v, at)?) {
        return Ok(());
    }
    Err(err(at, "is not a UUID (format uuid)"))
}

/// `8-4-4-4-12` hex digits.
pub fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `^[a-z0-9]+(\.[a-z0-9]+)*$`
pub fn is_capability_id(s: &str) -> bool {
    s.split('.').all(|part| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// `^[A-Z]{2}(-[A-Z]{2})?$`
pub(crate) fn is_region(s: &str) -> bool {
    let upper2 = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_uppercase());
    match s.split_once('-') {
        Some((a, b)) => upper2(a) && upper2(b),
        None => upper2(s),
    }
}

/// `^[A-Z]{3}$` (an ISO 4217 currency code's shape).
pub(crate) fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// `^\d+\.\d+\.\d+$`
pub(crate) fn is_semver(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, with the
/// calendar checked (days per month, leap years).
pub fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .filter(|d| d.iter().all(u8::is_ascii_digit))
            .map(|d| d.iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0')))
    };
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) else {
        return false;
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d == 0
        || d > days[mo as usize - 1]
        || h > 23
        || mi > 59
        || sec > 60
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest {
        "Z" | "z" => true,
        off => {
            let o = off.as_bytes();
            o.len() == 6
                && matches!(o[0], b'+' | b'-')
                && o[3] == b':'
                && [1, 2, 4, 5].iter().all(|&i| o[i].is_ascii_digit())
                && off[1..3].parse::<u32>().is_ok_and(|h| h <= 23)
                && off[4..6].parse::<u32>().is_ok_and(|m| m <= 59)
        }
    }
}
