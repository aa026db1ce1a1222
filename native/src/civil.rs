//! Calendar arithmetic and the CloudEvents time text, shared by the producer's encoder
//! (`encode.rs`), the sink's renderer (`event.rs`) and the Python event builder (`pyevent.rs`).

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (`civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// (year, month, day, hour, minute, second, microsecond) of microseconds since the epoch (UTC).
pub fn civil(micros: i64) -> (i64, i64, i64, i64, i64, i64, i64) {
    let (y, m, d) = civil_from_days(micros.div_euclid(86_400_000_000));
    let rest = micros.rem_euclid(86_400_000_000);
    let secs = rest / 1_000_000;
    (y, m, d, secs / 3600, secs / 60 % 60, secs % 60, rest % 1_000_000)
}

/// `govbus._cloudevents.format_time`: RFC 3339, microseconds, `Z`; years below 1000 unpadded
/// (what glibc's strftime prints for them). Digits written by hand: `format!` cost more than the
/// rest of a record's rendering.
pub fn format_time(out: &mut Vec<u8>, micros: i64) {
    let (y, m, d, h, mi, s, us) = civil(micros);
    if (1000..=9999).contains(&y) {
        digits(out, y, 4);
    } else {
        out.extend_from_slice(y.to_string().as_bytes());
    }
    for (sep, n, width) in [(b'-', m, 2), (b'-', d, 2), (b'T', h, 2), (b':', mi, 2), (b':', s, 2), (b'.', us, 6)] {
        out.push(sep);
        digits(out, n, width);
    }
    out.push(b'Z');
}

/// `n` (0 <= n < 10^width, width <= 6) zero-padded to `width` digits.
fn digits(out: &mut Vec<u8>, n: i64, width: usize) {
    let mut buf = [b'0'; 6];
    let mut n = n;
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}
