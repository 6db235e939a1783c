//! RFC 3339 UTC timestamps with microseconds, without a date crate.
use std::time::{SystemTime, UNIX_EPOCH};

/// Formats the current time, e.g. `2026-11-22T07:15:57.123456Z`.
pub fn now_rfc3339_micros() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        // A clock before 1970 is a broken host; record the epoch rather than fail a decision.
        .unwrap_or(0);
    format_micros(micros)
}

/// Formats microseconds since the Unix epoch.
pub fn format_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Parses what [`format_micros`] writes (`YYYY-MM-DDTHH:MM:SS.ffffffZ`,
/// the fraction optional, up to 9 digits) back to microseconds since the
/// Unix epoch; `None` for anything else.
pub fn parse_micros(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once('T')?;
    let time = rest.strip_suffix('Z')?;
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let (hh, mm, ss) = (num(t.next()?, 2)?, num(t.next()?, 2)?, num(t.next()?, 2)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros_frac = format!("{frac:0<6}")[..6].parse::<i64>().ok()?;
    let secs = days_from_civil(y, m as u32, day as u32) * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(secs * 1_000_000 + micros_frac)
}

/// Exactly `len` ASCII digits.
fn num(s: &str, len: usize) -> Option<i64> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// (year, month, day) to days since 1970-01-01: the inverse of
/// [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29T12:34:56.000001Z (a leap day in a century leap year).
        assert_eq!(
            format_micros(951_827_696_000_001),
            "2000-02-29T12:34:56.000001Z"
        );
        // 2026-11-22T07:15:57.5Z
        assert_eq!(
            format_micros(1_795_331_757_500_000),
            "2026-11-22T07:15:57.500000Z"
        );
    }

    #[test]
    fn parse_is_the_inverse_of_format() {
        for m in [
            0,
            951_827_696_000_001,
            1_795_331_757_500_000,
            -86_400_000_001,
        ] {
            assert_eq!(parse_micros(&format_micros(m)), Some(m));
        }
        assert_eq!(
            parse_micros("2026-11-22T07:15:57Z"),
            Some(1_795_331_757_000_000)
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-11-22T07:15:57",
            "2026-11-22T07:15:57.x1Z",
            "26-11-22T07:15:57Z",
        ] {
            assert_eq!(parse_micros(bad), None, "{bad}");
        }
    }
}
