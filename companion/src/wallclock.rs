//! Wall-clock times: UTC as RFC 3339 with microseconds, and the mapping
//! from the kext's clock (`mach_absolute_time` in nanoseconds, the time
//! base of every record) to the Unix epoch through one anchor, a pair of
//! readings of both clocks taken together.
//!
//! The date is computed with Howard Hinnant's `civil_from_days` (proleptic
//! Gregorian calendar, public domain), so no calendar crate is needed.

/// One reading of both clocks, taken together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Anchor {
    /// Nanoseconds since the Unix epoch.
    pub unix_ns: u64,
    /// The kext's clock at the same moment (nanoseconds since boot).
    pub clock_ns: u64,
}

impl Anchor {
    /// The Unix time of a record stamped `clock_ns` (saturating at the
    /// epoch for a stamp from before it, which no real record has).
    pub fn unix_ns_of(&self, clock_ns: u64) -> u64 {
        if clock_ns >= self.clock_ns {
            self.unix_ns.saturating_add(clock_ns - self.clock_ns)
        } else {
            self.unix_ns.saturating_sub(self.clock_ns - clock_ns)
        }
    }
}

/// Nanoseconds since the Unix epoch now (0 for a system clock set before
/// it).
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Anchor {
    /// Reads the Unix clock, then `clock`, then the Unix clock again, and
    /// pairs `clock`'s reading with the midpoint of the two Unix readings:
    /// the reading happened somewhere between them, so the midpoint is off
    /// by at most half the time the three reads took, whichever way the
    /// reader was delayed (always pairing the first reading would be late
    /// by all of a delay before `clock`). `None` when `clock` has no
    /// reading.
    pub fn take(
        mut unix_ns: impl FnMut() -> u64,
        clock_ns: impl FnOnce() -> Option<u64>,
    ) -> Option<Anchor> {
        let before = unix_ns();
        let clock_ns = clock_ns()?;
        let after = unix_ns().max(before);
        Some(Anchor {
            unix_ns: before + (after - before) / 2,
            clock_ns,
        })
    }

    /// The kext's clock at Unix time `unix_ns`: the inverse of
    /// [`Anchor::unix_ns_of`] (saturating at boot and at `u64::MAX`).
    pub fn clock_ns_of(&self, unix_ns: u64) -> u64 {
        if unix_ns >= self.unix_ns {
            self.clock_ns.saturating_add(unix_ns - self.unix_ns)
        } else {
            self.clock_ns.saturating_sub(self.unix_ns - unix_ns)
        }
    }

    /// [`Anchor::take`] with the system's Unix clock.
    pub fn now(clock_ns: impl FnOnce() -> Option<u64>) -> Option<Anchor> {
        Anchor::take(unix_now_ns, clock_ns)
    }
}

/// A time for people: seconds since boot as `s.micros`, or through
/// `wall` the UTC time (RFC 3339) of that clock reading.
pub fn shown_time(ns: u64, wall: Option<&Anchor>) -> String {
    match wall {
        Some(a) => rfc3339_micros(a.unix_ns_of(ns)),
        None => crate::text::secs(ns),
    }
}

/// (year, month 1..=12, day 1..=31) of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date (Hinnant's `days_from_civil`,
/// the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let mp = (i64::from(month) + 9) % 12; // [0, 11], March first
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Nanoseconds since the Unix epoch of an RFC 3339 time:
/// `YYYY-MM-DDThh:mm:ss`, an optional fraction (digits past the
/// nanosecond are dropped), then `Z` or an offset `+hh:mm` / `-hh:mm`
/// (`t`, `z` and a space for `T` as RFC 3339 allows). `None` for anything
/// else, an impossible date, or a time before the epoch.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, min, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let (month, day) = (u32::try_from(month).ok()?, u32::try_from(day).ok()?);
    // A date that does not round-trip (February 30th, month 13) is none.
    let days = days_from_civil(year, month, day);
    if !(1..=12).contains(&month) || civil_from_days(days) != (year, month, day) {
        return None;
    }
    // 60 is a leap second (RFC 3339 allows it); it counts as the next.
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ns = 0i64;
    if at(i, b".") {
        i += 1;
        let start = i;
        while at(i, b"0123456789") {
            if i - start < 9 {
                frac_ns = frac_ns * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            frac_ns *= 10;
        }
    }
    let offset_secs = match b.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == i + 6 && at(i + 3, b":") => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_secs;
    let ns = i128::from(secs) * 1_000_000_000 + i128::from(frac_ns);
    u64::try_from(ns).ok()
}

/// `YYYY-MM-DDThh:mm:ss.uuuuuuZ` for nanoseconds since the Unix epoch
/// (truncated to the microsecond).
pub fn rfc3339_micros(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let micros = unix_ns % 1_000_000_000 / 1000;
    let days = (secs / 86_400) as i64;
    let in_day = secs % 86_400;
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_with_microseconds() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456Z"
        );
        // Leap days, a century that is not a leap year and one that is.
        assert_eq!(
            rfc3339_micros(1_709_164_800_000_000_000),
            "2024-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339_micros(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339_micros(4_107_542_399_999_999_999),
            "2100-02-28T23:59:59.999999Z"
        );
        assert_eq!(
            rfc3339_micros(4_107_542_400_000_000_000),
            "2100-03-01T00:00:00.000000Z"
        );
        assert_eq!(rfc3339_micros(u64::MAX), "2554-07-21T23:34:33.709551Z");
    }

    /// Every day of 400 years (one whole Gregorian cycle) follows the day
    /// before it.
    #[test]
    fn consecutive_days_follow_each_other() {
        let mut prev = civil_from_days(-1);
        assert_eq!(prev, (1969, 12, 31));
        for days in 0..146_097 {
            let (y, m, d) = civil_from_days(days);
            let next_day = (prev.0, prev.1, prev.2 + 1);
            let next_month = (prev.0, prev.1 + 1, 1);
            let next_year = (prev.0 + 1, 1, 1);
            assert!(
                [next_day, next_month, next_year].contains(&(y, m, d)),
                "{prev:?} -> {:?}",
                (y, m, d)
            );
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            prev = (y, m, d);
        }
        assert_eq!(prev, (2369, 12, 31));
    }

    #[test]
    fn an_anchor_pairs_the_clock_with_the_midpoint_of_two_unix_readings() {
        let mut unix = [1_000, 1_600].into_iter();
        let a = Anchor::take(|| unix.next().unwrap_or(0), || Some(77));
        assert_eq!(
            a,
            Some(Anchor {
                unix_ns: 1_300,
                clock_ns: 77
            })
        );
        // A Unix clock stepped back between the readings: the first one.
        let mut unix = [5_000, 4_000].into_iter();
        let a = Anchor::take(|| unix.next().unwrap_or(0), || Some(1));
        assert_eq!(a.map(|a| a.unix_ns), Some(5_000));
        assert_eq!(Anchor::now(|| None), None);
        let before = unix_now_ns();
        let a = Anchor::now(|| Some(9)).unwrap();
        assert!((before..=unix_now_ns()).contains(&a.unix_ns) && a.clock_ns == 9);
    }

    #[test]
    fn rfc3339_times_parse_to_what_the_formatter_writes() {
        for ns in [
            0,
            1_700_000_000_123_456_000,
            951_782_400_000_000_000,
            4_107_542_399_999_999_000,
        ] {
            assert_eq!(parse_rfc3339(&rfc3339_micros(ns)), Some(ns));
        }
        let p = parse_rfc3339;
        assert_eq!(p("2023-11-14T22:13:20Z"), Some(1_700_000_000_000_000_000));
        assert_eq!(p("2023-11-14t22:13:20z"), Some(1_700_000_000_000_000_000));
        assert_eq!(p("2023-11-14 22:13:20.5Z"), Some(1_700_000_000_500_000_000));
        assert_eq!(
            p("2023-11-14T22:13:20.1234567891Z"),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(
            p("2023-11-14T23:43:20+01:30"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            p("2023-11-14T20:13:20-02:00"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(p("2016-12-31T23:59:60Z"), p("2017-01-01T00:00:00Z"));
        for bad in [
            "",
            "soon",
            "2.5",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+0100",
            "2023-11-14T22:13:20+01:00x",
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:60:00Z",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00+00:01",
            "2023-11-14T22:13:2OZ",
            "+023-11-14T22:13:20Z",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_anchor_maps_unix_time_back_to_the_kexts_clock() {
        let a = Anchor {
            unix_ns: 1_700_000_000_000_000_000,
            clock_ns: 5_000_000_000,
        };
        for clock in [0, 4_000_000_000, 5_000_000_000, 6_500_000_000] {
            assert_eq!(a.clock_ns_of(a.unix_ns_of(clock)), clock);
        }
        assert_eq!(a.clock_ns_of(0), 0, "before boot: boot");
        assert_eq!(
            a.clock_ns_of(u64::MAX),
            u64::MAX - 1_699_999_995_000_000_000
        );
    }

    #[test]
    fn an_anchor_maps_the_kexts_clock_to_unix_time() {
        let a = Anchor {
            unix_ns: 1_700_000_000_000_000_000,
            clock_ns: 5_000_000_000,
        };
        assert_eq!(a.unix_ns_of(5_000_000_000), 1_700_000_000_000_000_000);
        assert_eq!(a.unix_ns_of(6_500_000_000), 1_700_000_001_500_000_000);
        assert_eq!(a.unix_ns_of(4_000_000_000), 1_699_999_999_000_000_000);
        assert_eq!(
            Anchor {
                unix_ns: 1,
                clock_ns: 10
            }
            .unix_ns_of(0),
            0
        );
    }
}
