//! Provider dates → one canonical form: RFC 3339 in UTC.
//!
//! Providers write time in many ways: RFC 3339 with offsets and fractions (Linear,
//! Asana, Square, HubSpot's ISO properties), Salesforce's `2024-01-02T03:04:05.000+0000`
//! (no colon in the offset), epoch seconds (Stripe `created`, Slack `created`), epoch
//! milliseconds as numbers or strings (HubSpot `occurredAt` and date properties, Gmail
//! `internalDate`, Salesforce `commitTimestamp`), Slack's decimal `ts`
//! (`"1355517523.000005"`), plain dates (`YYYY-MM-DD`: Asana `due_on`, Salesforce
//! `CloseDate`, Linear `dueDate`) and RFC 2822 (Twilio `Timestamp`). Everything becomes a
//! [`Timestamp`], which serializes as RFC 3339 UTC with the fraction trimmed
//! (`2024-01-02T03:04:05.12Z`), so records compare by source time without knowing where
//! they came from.
//!
//! Errors never quote the input: a date field may sit next to data that must not reach
//! a log line, and the field name in the caller's error is what an operator needs.
//!
//! This module must not depend on any provider module.

use std::fmt;

use serde::{Serialize, Serializer};
use time::{Date, OffsetDateTime, UtcOffset, format_description::well_known};

/// Epoch values at or above this are read as milliseconds by [`parse`] (10^11 seconds is
/// the year 5138; 10^11 milliseconds is March 1973). Adapters that know the unit use
/// [`from_unix_seconds`] / [`from_unix_millis`] / [`parse_unix_millis`] instead.
pub const MILLIS_THRESHOLD: i64 = 100_000_000_000;

/// An instant, always in UTC, with a year between 0 and 9999 (what RFC 3339 can write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

/// Why a date could not be read. Deliberately carries no part of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// The value is empty or only whitespace.
    #[error("is empty")]
    Empty,
    /// Not RFC 3339, RFC 2822, `YYYY-MM-DD`, or epoch seconds/milliseconds.
    #[error(
        "is not a recognised date format (RFC 3339, RFC 2822, YYYY-MM-DD, epoch seconds or milliseconds)"
    )]
    Unrecognized,
    /// A valid shape, but outside the years 0–9999.
    #[error("is outside the years 0-9999")]
    OutOfRange,
}

impl Timestamp {
    /// The instant as a `time` value in UTC.
    pub fn as_offset_date_time(self) -> OffsetDateTime {
        self.0
    }

    /// Builds a timestamp from any offset, converting to UTC.
    pub fn from_offset_date_time(value: OffsetDateTime) -> Result<Timestamp, DateError> {
        let utc = value
            .checked_to_offset(UtcOffset::UTC)
            .ok_or(DateError::OutOfRange)?;
        if !(0..=9999).contains(&utc.year()) {
            return Err(DateError::OutOfRange);
        }
        Ok(Timestamp(utc))
    }

    /// Milliseconds since the Unix epoch (sub-millisecond digits are dropped).
    pub fn unix_millis(self) -> i64 {
        // Years 0..=9999 keep this well inside i64.
        let nanos = self.0.unix_timestamp_nanos();
        i64::try_from(nanos.div_euclid(1_000_000)).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for Timestamp {
    /// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the fraction trimmed of trailing zeros.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )?;
        let nanos = t.nanosecond();
        if nanos != 0 {
            let digits = format!("{nanos:09}");
            write!(f, ".{}", digits.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Unix seconds → timestamp.
pub fn from_unix_seconds(seconds: i64) -> Result<Timestamp, DateError> {
    let value = OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| DateError::OutOfRange)?;
    Timestamp::from_offset_date_time(value)
}

/// Unix milliseconds → timestamp.
pub fn from_unix_millis(millis: i64) -> Result<Timestamp, DateError> {
    let nanos = i128::from(millis) * 1_000_000;
    let value =
        OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| DateError::OutOfRange)?;
    Timestamp::from_offset_date_time(value)
}

/// A string of digits that is known to be Unix milliseconds (HubSpot's date properties,
/// Gmail's `internalDate`); unlike [`parse`] no magnitude guess is made.
pub fn parse_unix_millis(input: &str) -> Result<Timestamp, DateError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(DateError::Empty);
    }
    if !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DateError::Unrecognized);
    }
    let millis: i64 = trimmed.parse().map_err(|_| DateError::OutOfRange)?;
    from_unix_millis(millis)
}

/// Reads any supported format (see the module docs).
///
/// A string of digits is epoch seconds below [`MILLIS_THRESHOLD`] and milliseconds from
/// it on; digits with a fractional part (Slack's `ts`) are always seconds.
/// A plain date is midnight UTC.
pub fn parse(input: &str) -> Result<Timestamp, DateError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(DateError::Empty);
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return parse_epoch(trimmed);
    }
    if trimmed.len() == 10 && trimmed.as_bytes().get(4) == Some(&b'-') {
        return parse_plain_date(trimmed);
    }
    if let Some(normalized) = rfc3339_candidate(trimmed) {
        return match OffsetDateTime::parse(&normalized, &well_known::Rfc3339) {
            Ok(value) => Timestamp::from_offset_date_time(value),
            Err(_) => Err(DateError::Unrecognized),
        };
    }
    match OffsetDateTime::parse(trimmed, &well_known::Rfc2822) {
        Ok(value) => Timestamp::from_offset_date_time(value),
        Err(_) => Err(DateError::Unrecognized),
    }
}

/// Digits, optionally with one `.` and a fraction: epoch seconds or milliseconds.
fn parse_epoch(input: &str) -> Result<Timestamp, DateError> {
    let (whole, fraction) = match input.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (input, None),
    };
    if whole.is_empty() || fraction.is_some_and(|f| f.is_empty() || f.contains('.')) {
        return Err(DateError::Unrecognized);
    }
    let whole: i64 = whole.parse().map_err(|_| DateError::OutOfRange)?;
    match fraction {
        None if whole >= MILLIS_THRESHOLD => from_unix_millis(whole),
        None => from_unix_seconds(whole),
        Some(fraction) => {
            // Seconds with a fraction; digits past nanoseconds are dropped.
            let digits: String = fraction.chars().take(9).collect();
            let scale = 10_i64.pow(u32::try_from(9 - digits.len()).unwrap_or(0));
            let nanos: i64 = digits.parse::<i64>().map_err(|_| DateError::Unrecognized)? * scale;
            let base = from_unix_seconds(whole)?;
            let value = base
                .0
                .checked_add(time::Duration::nanoseconds(nanos))
                .ok_or(DateError::OutOfRange)?;
            Timestamp::from_offset_date_time(value)
        }
    }
}

fn parse_plain_date(input: &str) -> Result<Timestamp, DateError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = Date::parse(input, &format).map_err(|_| DateError::Unrecognized)?;
    Timestamp::from_offset_date_time(date.midnight().assume_utc())
}

/// Returns the input rewritten into strict RFC 3339 when it looks like an ISO 8601
/// date-time: an upper-case `T`/`Z`, and a colon in a `±HHMM` offset (Salesforce).
/// `None` when it does not start like `YYYY-MM-DDT`.
fn rfc3339_candidate(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    let looks_iso = bytes.len() > 11
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b'T' | b't' | b' ');
    if !looks_iso {
        return None;
    }
    let mut text = String::with_capacity(input.len() + 1);
    text.push_str(&input[..10]);
    text.push('T');
    text.push_str(&input[11..]);
    if text.ends_with('z') {
        text.pop();
        text.push('Z');
    }
    let tail = text.as_bytes();
    let n = tail.len();
    if n > 5 && matches!(tail[n - 5], b'+' | b'-') && tail[n - 4..].iter().all(u8::is_ascii_digit) {
        text.insert(n - 2, ':');
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rfc(input: &str) -> String {
        match parse(input) {
            Ok(ts) => ts.to_string(),
            Err(err) => format!("error: {err}"),
        }
    }

    #[test]
    fn rfc3339_with_offsets_and_fractions_becomes_utc() {
        assert_eq!(rfc("2024-01-02T03:04:05Z"), "2024-01-02T03:04:05Z");
        assert_eq!(rfc("2024-01-02T03:04:05.120Z"), "2024-01-02T03:04:05.12Z");
        assert_eq!(rfc("2024-01-02T05:04:05+02:00"), "2024-01-02T03:04:05Z");
        assert_eq!(rfc("2024-01-01T22:04:05.5-05:00"), "2024-01-02T03:04:05.5Z");
        assert_eq!(rfc("2024-01-02t03:04:05z"), "2024-01-02T03:04:05Z");
        assert_eq!(
            rfc("2024-01-02T03:04:05.123456789Z"),
            "2024-01-02T03:04:05.123456789Z"
        );
    }

    #[test]
    fn salesforce_offset_without_colon() {
        assert_eq!(rfc("2024-01-02T03:04:05.000+0000"), "2024-01-02T03:04:05Z");
        assert_eq!(rfc("2024-01-02T04:04:05.000+0100"), "2024-01-02T03:04:05Z");
    }

    #[test]
    fn epoch_seconds_and_milliseconds() {
        assert_eq!(rfc("1704164645"), "2024-01-02T03:04:05Z");
        assert_eq!(rfc("1704164645123"), "2024-01-02T03:04:05.123Z");
        assert_eq!(
            parse_unix_millis("1704164645123").map(|t| t.to_string()),
            Ok("2024-01-02T03:04:05.123Z".to_owned())
        );
        assert_eq!(
            from_unix_seconds(1_704_164_645).map(|t| t.to_string()),
            Ok("2024-01-02T03:04:05Z".to_owned())
        );
    }

    #[test]
    fn slack_decimal_ts_is_seconds_with_microseconds() {
        assert_eq!(rfc("1355517523.000005"), "2012-12-14T20:38:43.000005Z");
        assert_eq!(rfc("1355517523.5"), "2012-12-14T20:38:43.5Z");
    }

    #[test]
    fn plain_date_is_midnight_utc() {
        assert_eq!(rfc("2024-01-31"), "2024-01-31T00:00:00Z");
        assert_eq!(
            rfc("2024-02-30"),
            format!("error: {}", DateError::Unrecognized)
        );
    }

    #[test]
    fn rfc2822_from_twilio() {
        assert_eq!(
            rfc("Mon, 16 Aug 2010 03:45:01 +0000"),
            "2010-08-16T03:45:01Z"
        );
    }

    #[test]
    fn garbage_is_rejected_without_quoting_it() {
        for input in [
            "",
            "  ",
            "yesterday",
            "1.2.3",
            ".5",
            "5.",
            "2024-13-01T00:00:00Z",
        ] {
            let err = parse(input).expect_err(input);
            assert!(!err.to_string().contains(input.trim()) || input.trim().is_empty());
        }
        assert_eq!(parse(""), Err(DateError::Empty));
        assert_eq!(parse("yesterday"), Err(DateError::Unrecognized));
    }

    #[test]
    fn out_of_range_values_are_errors() {
        assert_eq!(parse("99999999999999999999"), Err(DateError::OutOfRange));
        assert_eq!(from_unix_millis(i64::MAX), Err(DateError::OutOfRange));
        assert_eq!(from_unix_seconds(i64::MIN), Err(DateError::OutOfRange));
        assert_eq!(parse_unix_millis("12a"), Err(DateError::Unrecognized));
    }

    /// Instants in the supported range, with nanosecond precision.
    fn instant() -> impl Strategy<Value = (i64, u32)> {
        // 0000-01-01 .. 9999-12-31 in Unix seconds.
        (
            -62_167_219_200_i64..=253_402_300_799_i64,
            0_u32..1_000_000_000,
        )
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips((seconds, nanos) in instant()) {
            let value = OffsetDateTime::from_unix_timestamp(seconds)
                .map(|t| t + time::Duration::nanoseconds(i64::from(nanos)))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let ts = Timestamp::from_offset_date_time(value)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parse(&ts.to_string()), Ok(ts));
        }

        #[test]
        fn any_offset_gives_the_same_instant(
            seconds in 0_i64..253_402_000_000,
            offset_minutes in -(23 * 60 + 59)..=(23 * 60 + 59_i32),
        ) {
            let utc = OffsetDateTime::from_unix_timestamp(seconds)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let offset = UtcOffset::from_whole_seconds(offset_minutes * 60)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let shifted = utc.to_offset(offset);
            let text = shifted.format(&well_known::Rfc3339)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let expected = Timestamp::from_offset_date_time(utc)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parse(&text), Ok(expected));
            // Salesforce's colon-less offset reads the same.
            let no_colon = format!("{}{}", &text[..text.len() - 3], &text[text.len() - 2..]);
            if !text.ends_with('Z') {
                prop_assert_eq!(parse(&no_colon), Ok(expected));
            }
        }

        #[test]
        fn epoch_seconds_and_millis_round_trip(seconds in 0_i64..MILLIS_THRESHOLD, millis in 0_i64..1000) {
            let from_seconds = parse(&seconds.to_string());
            prop_assert_eq!(from_seconds, from_unix_seconds(seconds));
            let total = seconds * 1000 + millis;
            let from_millis = parse_unix_millis(&total.to_string())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(from_millis.unix_millis(), total);
        }

        #[test]
        fn never_panics_on_arbitrary_input(input in any::<String>()) {
            let _ = parse(&input);
            let _ = parse_unix_millis(&input);
        }

        #[test]
        fn never_panics_on_date_like_input(input in "[0-9tTzZ:.+ -]{0,40}") {
            if let Ok(ts) = parse(&input) {
                // Whatever parses must print as RFC 3339 UTC that parses back to itself.
                prop_assert_eq!(parse(&ts.to_string()), Ok(ts));
            }
        }
    }
}
