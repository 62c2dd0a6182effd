//! The `date` field of the session's answers (RFC 9110 6.6.1: an origin
//! server must send one; hyper's server did), formatted once a second per
//! worker thread rather than for every answer.

use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// `Sun, 06 Nov 1994 08:49:37 GMT`
const LEN: usize = 29;

struct Cached {
    second: u64,
    text: [u8; LEN],
}

thread_local! {
    static CACHED: RefCell<Cached> = const { RefCell::new(Cached { second: u64::MAX, text: [0; LEN] }) };
}

/// Appends the current date, as an HTTP-date.
pub fn extend(dst: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|cached| {
        if cached.second != second {
            let mut text = &mut cached.text[..];
            let _ = write!(text, "{}", httpdate::HttpDate::from(now));
            cached.second = second;
        }
        dst.extend_from_slice(&cached.text);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_an_http_date_of_now() {
        let mut dst = Vec::new();
        extend(&mut dst);
        assert_eq!(dst.len(), LEN);
        let parsed = httpdate::parse_http_date(std::str::from_utf8(&dst).unwrap()).unwrap();
        let skew = SystemTime::now().duration_since(parsed).unwrap();
        assert!(skew.as_secs() <= 1, "{skew:?}");
    }
}
