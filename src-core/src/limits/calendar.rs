//! UTC calendar arithmetic for budget periods, without a date crate.

/// (year, month, day) of a count of days since 1970-01-01 (proleptic Gregorian).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
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

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const DAY_MS: i64 = 86_400_000;

/// The UTC day and month a timestamp falls in, and when each ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Periods {
    pub day: String,
    pub month: String,
    pub day_start_ms: i64,
    pub month_start_ms: i64,
    pub day_end_ms: i64,
    pub month_end_ms: i64,
}

pub fn periods(now_ms: i64) -> Periods {
    let days = now_ms.div_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    Periods {
        day: format!("{y:04}-{m:02}-{d:02}"),
        month: format!("{y:04}-{m:02}"),
        day_start_ms: days * DAY_MS,
        month_start_ms: days_from_civil(y, m, 1) * DAY_MS,
        day_end_ms: (days + 1) * DAY_MS,
        month_end_ms: days_from_civil(ny, nm, 1) * DAY_MS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(days_from_civil(2024, 3, 1), 19_783);
        for d in [-1000, 0, 59, 365, 11_016, 19_782, 20_000, 40_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn periods_end_at_midnight_and_month_end() {
        // 2026-12-31T23:59:59Z
        let p = periods(days_from_civil(2026, 12, 31) * DAY_MS + DAY_MS - 1000);
        assert_eq!(p.day, "2026-12-31");
        assert_eq!(p.month, "2026-12");
        assert_eq!(p.day_end_ms, days_from_civil(2027, 1, 1) * DAY_MS);
        assert_eq!(p.month_end_ms, p.day_end_ms);
        assert_eq!(p.month_start_ms, days_from_civil(2026, 12, 1) * DAY_MS);
    }
}
