//! Calendar windows in UTC: where a minute, hour, day or month starts and ends.

use crate::calendar::{civil_from_days, days_from_civil};
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
