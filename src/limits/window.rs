//! Calendar windows in UTC: where a minute, hour, day or month starts and ends.

use crate::policy::Window;

/// How long one slot of the in-flight counter lasts. A request counts in the slot it started
/// in and a check adds the previous slot; a request still running moves its count into each
/// new slot (a [`super::Lease`] it keeps while it waits on the provider and while it streams).
/// A count left by an instance that ended mid-request (a WASI 0.2 instance is ended when its
/// client hangs up) stops counting when the slot after it ends: within two slots.
pub const CONCURRENCY_SLOT_S: u64 = 3;

/// The window containing `now_s` (Unix seconds): its start and its end (the next start).
pub fn window_bounds(w: Window, now_s: u64) -> (u64, u64) {
    let fixed = |len: u64| {
        let start = now_s - now_s % len;
        (start, start + len)
    };
    match w {
        Window::Minute => fixed(60),
        Window::Hour => fixed(3_600),
        Window::Day => fixed(86_400),
        Window::Month => {
            let (y, m, _) = civil_from_days((now_s / 86_400) as i64);
            let start = days_from_civil(y, m, 1) as u64 * 86_400;
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let end = days_from_civil(ny, nm, 1) as u64 * 86_400;
            (start, end)
        }
    }
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31), proleptic Gregorian
/// (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
