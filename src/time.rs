//! Wall-clock date-times as the protocols write them: parsing ISO 8601 / RFC 3339 date-times
//! into seconds since the Unix epoch, and formatting seconds as `YYYY-MM-DDTHH:MM:SSZ` (and
//! milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`, for log lines).
//!
//! Pure functions over the proleptic Gregorian calendar (Howard Hinnant's `days_from_civil`
//! and `civil_from_days`, the latter public for the HTTP `Date` header), no time zone
//! database: an offset is all a date-time carries.

/// Seconds in a day.
const DAY: i64 = 86_400;

/// Smallest instant `format_utc` writes: `0000-01-01T00:00:00Z`.
const MIN_FORMATTED: i64 = -62_167_219_200;
/// Largest instant `format_utc` writes: `9999-12-31T23:59:59Z`.
const MAX_FORMATTED: i64 = 253_402_300_799;

/// Parses a date-time and returns it as seconds since the Unix epoch, UTC.
///
/// Grammar (ISO 8601 extended format, which covers RFC 3339):
///
/// ```text
/// date-time = date sep time [offset]
/// date      = YYYY "-" MM "-" DD                    ; year 0000-9999, 4 digits
/// sep       = "T" / "t" / " "
/// time      = hh ":" mm [":" ss [frac]]             ; seconds may be left out (ISO 8601)
/// frac      = ("." / ",") 1*DIGIT                   ; dropped (truncated)
/// offset    = "Z" / "z" / ("+" / "-") hh [[":"] mm]  ; +hh:mm, +hhmm or +hh
/// ```
///
/// Every field has its exact number of digits and is range-checked: month 1-12, day valid for
/// the month (leap years included), hour 0-23, minute 0-59, second 0-60 (a leap second `60`
/// counts as `59`), offset hours 0-23 and minutes 0-59. A date-time with no offset is taken
/// as UTC. The instant must be one `format_utc` writes, `0000-01-01T00:00:00Z` to
/// `9999-12-31T23:59:59Z`, so that every parsed instant is written back unchanged:
/// `0000-01-01T00:00:00+01:00` is `None`. Anything else — a date alone, surrounding
/// whitespace, a missing field — is `None`.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 16 {
        return None;
    }
    let year = digits(b, 0, 4)?;
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    if b[13] != b':' {
        return None;
    }
    let minute = digits(b, 14, 2)?;
    let mut i = 16;
    let mut second = 0;
    if b.get(i) == Some(&b':') {
        second = digits(b, i + 1, 2)?;
        i += 3;
        if matches!(b.get(i), Some(b'.' | b',')) {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return None;
            }
        }
    }
    let offset = match &b[i..] {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (oh, om) = match rest.len() {
                2 => (digits(rest, 0, 2)?, 0),
                4 => (digits(rest, 0, 2)?, digits(rest, 2, 2)?),
                5 if rest[2] == b':' => (digits(rest, 0, 2)?, digits(rest, 3, 2)?),
                _ => return None,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = oh * 3600 + om * 60;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let second = second.min(59);
    let days = days_from_civil(year, month, day);
    let secs = days * DAY + hour * 3600 + minute * 60 + second - offset;
    (MIN_FORMATTED..=MAX_FORMATTED)
        .contains(&secs)
        .then_some(secs)
}

/// Appends `secs` (seconds since the Unix epoch) to `out` as `YYYY-MM-DDTHH:MM:SSZ`, exactly
/// 20 ASCII bytes. Instants outside years 0000-9999 are clamped to that range so the form
/// never changes.
pub fn format_utc(secs: i64, out: &mut String) {
    let mut buf = *b"0000-00-00T00:00:00Z";
    put_datetime(&mut buf, secs);
    // Only ASCII digits and separators were written into an ASCII template.
    out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
}

/// `ms` (milliseconds since the Unix epoch) as `YYYY-MM-DDTHH:MM:SS.mmmZ`, exactly 24 ASCII
/// bytes (RFC 3339, UTC): the time stamp of a log line. Clamped like `format_utc`, so the
/// form never changes. Allocates nothing.
pub fn utc_millis(ms: i64) -> [u8; 24] {
    let mut buf = *b"0000-00-00T00:00:00.000Z";
    put_datetime(&mut buf, ms.div_euclid(1000));
    put(&mut buf[20..23], ms.rem_euclid(1000));
    buf
}

/// Writes the date and time of `secs` (clamped to years 0000-9999) into the first 19 bytes
/// of `buf`, a `YYYY-MM-DDTHH:MM:SS` template.
fn put_datetime(buf: &mut [u8], secs: i64) {
    let secs = secs.clamp(MIN_FORMATTED, MAX_FORMATTED);
    let days = secs.div_euclid(DAY);
    let tod = secs.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (tod / 3600, tod / 60 % 60, tod % 60);
    put(&mut buf[0..4], y);
    put(&mut buf[5..7], i64::from(m));
    put(&mut buf[8..10], i64::from(d));
    put(&mut buf[11..13], hh);
    put(&mut buf[14..16], mm);
    put(&mut buf[17..19], ss);
}

/// Writes `n` as zero-padded decimal filling `dst` exactly (`n` fits by construction).
fn put(dst: &mut [u8], mut n: i64) {
    for c in dst.iter_mut().rev() {
        *c = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The `n` ASCII digits of `b` at `at` as a number, or `None` if any is not a digit or
/// missing.
fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let field = b.get(at..at + n)?;
    let mut v = 0;
    for &c in field {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of the proleptic Gregorian date `y-m-d` (Hinnant's
/// `days_from_civil`): eras of 400 years, each of 146 097 days, with years starting in March
/// so the leap day falls at the end.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `(year, month 1-12, day 1-31)` of `z` days since 1970-01-01
/// (Hinnant's `civil_from_days`). Exact for any `z` up to ±2^60 days.
/// Reads an IMF-fixdate (RFC 9110 5.6.7, `Sun, 06 Nov 1994 08:49:37 GMT`), the form of
/// `If-Modified-Since`: seconds since the Unix epoch. The day name is not checked against
/// the date. Anything else is `None`.
pub fn parse_imf_fixdate(b: &[u8]) -> Option<i64> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    if b[7] != b' ' || b[11] != b' ' || b[16] != b' ' || b[19] != b':' || b[22] != b':' {
        return None;
    }
    let day = digits(b, 5, 2)?;
    let month = MONTHS.iter().position(|m| &b[8..11] == *m)? as i64 + 1;
    let year = digits(b, 12, 4)?;
    let (hh, mm, ss) = (digits(b, 17, 2)?, digits(b, 20, 2)?, digits(b, 23, 2)?);
    if day < 1 || day > days_in_month(year, month) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86400 + hh * 3600 + mm * 60 + ss.min(59))
}

pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(secs: i64) -> String {
        let mut s = String::new();
        format_utc(secs, &mut s);
        s
    }

    #[test]
    fn parses_valid_forms() {
        let base = 1_262_387_933; // 2010-01-01T23:18:53Z
        let cases: &[(&str, i64)] = &[
            ("2010-01-01T23:18:53Z", base),
            ("2010-01-01t23:18:53z", base),
            ("2010-01-01 23:18:53Z", base),
            ("2010-01-01T23:18:53", base),
            ("2010-01-01T23:18:53.123Z", base),
            ("2010-01-01T23:18:53.999999999Z", base),
            ("2010-01-01T23:18:53,5Z", base),
            ("2010-01-02T01:18:53+02:00", base),
            ("2010-01-02T01:18:53+0200", base),
            ("2010-01-02T01:18:53+02", base),
            ("2010-01-01T18:48:53-04:30", base),
            ("2010-01-01T18:48:53.25-0430", base),
            ("2010-01-01T23:18:53-00:00", base),
            ("2010-01-01T23:18Z", base - 53),
            ("2010-01-02T01:18+02:00", base - 53),
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:59:59Z", -1),
            ("2000-02-29T00:00:00Z", 951_782_400),
            ("2016-12-31T23:59:60Z", 1_483_228_799),
            ("2038-01-19T03:14:08Z", 2_147_483_648),
            ("0000-01-01T00:00:00Z", MIN_FORMATTED),
            ("9999-12-31T23:59:59Z", MAX_FORMATTED),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_datetime(input), Some(want), "{input}");
        }
    }

    #[test]
    fn rejects_invalid_forms() {
        let cases = [
            "",
            "2010-01-01",
            "2010-01-01T",
            "2010-01-01T23",
            "2010-01-01T23:18:83Z", // the seed's minute 83, as a second
            "2010-01-01T23:83:53Z",
            "2010-01-01T24:00:00Z",
            "2010-13-01T00:00:00Z",
            "2010-00-01T00:00:00Z",
            "2010-01-00T00:00:00Z",
            "2010-01-32T00:00:00Z",
            "2010-04-31T00:00:00Z",
            "2010-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2010-1-01T00:00:00Z",
            "10-01-01T00:00:00Z",
            "2010/01/01T00:00:00Z",
            "2010-01-01X00:00:00Z",
            "2010-01-01T00-00-00Z",
            "2010-01-01T00:00:00.Z",
            "2010-01-01T00:00:00ZZ",
            "2010-01-01T00:00:00+2",
            "2010-01-01T00:00:00+123",
            "2010-01-01T00:00:00+12:3",
            "2010-01-01T00:00:00+24:00",
            "2010-01-01T00:00:00+02:60",
            "2010-01-01T00:00:00+02:00x",
            "2010-01-01T00:00:00 Z",
            " 2010-01-01T00:00:00Z",
            "2010-01-01T00:00:00Z ",
            "2010-01-01T00:00:0Z",
            "2010-01-01T00:00:+1Z",
            "+010-01-01T00:00:00Z",
            "2010-01-01T00:00:00UTC",
            "２010-01-01T00:00:00Z",
        ];
        for input in cases {
            assert_eq!(parse_datetime(input), None, "{input:?}");
        }
    }

    #[test]
    fn formats_utc() {
        let cases: &[(i64, &str)] = &[
            (0, "1970-01-01T00:00:00Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (1_262_387_933, "2010-01-01T23:18:53Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (951_868_800, "2000-03-01T00:00:00Z"),
            (2_147_483_648, "2038-01-19T03:14:08Z"),
            (MIN_FORMATTED, "0000-01-01T00:00:00Z"),
            (MAX_FORMATTED, "9999-12-31T23:59:59Z"),
            (i64::MIN, "0000-01-01T00:00:00Z"),
            (i64::MAX, "9999-12-31T23:59:59Z"),
        ];
        for &(secs, want) in cases {
            assert_eq!(fmt(secs), want, "{secs}");
        }
        let mut out = String::from("when=");
        format_utc(0, &mut out);
        assert_eq!(
            out, "when=1970-01-01T00:00:00Z",
            "appends, does not overwrite"
        );
    }

    #[test]
    fn formats_utc_millis() {
        let cases: &[(i64, &str)] = &[
            (0, "1970-01-01T00:00:00.000Z"),
            (1, "1970-01-01T00:00:00.001Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (1_262_387_933_789, "2010-01-01T23:18:53.789Z"),
            (951_782_400_050, "2000-02-29T00:00:00.050Z"),
            (MAX_FORMATTED * 1000 + 999, "9999-12-31T23:59:59.999Z"),
            (i64::MAX, "9999-12-31T23:59:59.807Z"),
        ];
        for &(ms, want) in cases {
            let got = utc_millis(ms);
            assert_eq!(std::str::from_utf8(&got), Ok(want), "{ms}");
            assert_eq!(
                parse_datetime(want),
                Some((ms.div_euclid(1000)).clamp(MIN_FORMATTED, MAX_FORMATTED)),
                "{want} parses back to its second"
            );
        }
    }

    #[test]
    fn offset_input_formats_as_utc() {
        let secs = parse_datetime("2010-01-02T01:18:53+02:00").unwrap();
        assert_eq!(fmt(secs), "2010-01-01T23:18:53Z");
    }

    #[test]
    fn civil_round_trips_every_day_of_four_centuries() {
        // 1600-03-01 .. 2400-03-01 spans eras, century and leap-year rules.
        let start = days_from_civil(1600, 3, 1);
        let end = days_from_civil(2400, 3, 1);
        let mut prev = civil_from_days(start - 1);
        for z in start..end {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m.into(), d.into()), z);
            assert!(d >= 1 && i64::from(d) <= days_in_month(y, m.into()));
            let next_day = (prev.0, prev.1, prev.2 + 1) == (y, m, d);
            let next_month = (prev.0, prev.1 + 1, 1) == (y, m, d);
            let next_year = (prev.0 + 1, 1, 1) == (y, m, d);
            assert!(
                next_day || next_month || next_year,
                "{prev:?} -> {y}-{m}-{d}"
            );
            prev = (y, m, d);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn an_offset_past_the_formatted_range_is_refused() {
        // Found by the `datetime` fuzz target (fuzz/regressions/datetime/): these parsed to
        // instants `format_utc` clamps, so a stored `when` came back as another instant.
        for input in [
            "0000-01-01T00:00+2100",
            "0000-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59-00:01",
            "9999-12-31T23:00:00-01:00",
        ] {
            assert_eq!(parse_datetime(input), None, "{input}");
        }
        // The edges themselves, reached through an offset, still parse.
        assert_eq!(
            parse_datetime("0000-01-01T01:00:00+01:00"),
            Some(MIN_FORMATTED)
        );
        assert_eq!(
            parse_datetime("9999-12-31T22:59:59-01:00"),
            Some(MAX_FORMATTED)
        );
    }

    #[test]
    fn format_then_parse_is_identity() {
        for secs in [
            0,
            -1,
            1,
            59,
            86_399,
            86_400,
            1_262_387_933,
            -2_208_988_800,
            MAX_FORMATTED,
        ] {
            assert_eq!(parse_datetime(&fmt(secs)), Some(secs), "{secs}");
        }
    }
}
