//! Wall-clock times: UTC as RFC 3339 with microseconds, and the mapping
//! from the kext's clock (`mach_absolute_time` in nanoseconds, the time
//! base of every record) to the Unix epoch through one anchor, a pair of
//! readings of both clocks taken together.
//!
//! The date is computed with Howard Hinnant's `civil_from_days` (proleptic
//! Gregorian calendar, public domain), so no calendar crate is needed.

/// One reading of both clocks, taken together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
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
