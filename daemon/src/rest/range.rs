//! The `Range` header of a load: one `bytes=` range, as the borgstore REST client sends.

use borgstore_ipc::{Error, Result};

/// `bytes=a-b` -> (a, Some(b-a+1)); `bytes=a-` -> (a, None); `bytes=-n` -> (-n, None).
/// Anything else (other units, several ranges, garbage, b < a) is an InvalidArgument.
pub fn parse(header: &str) -> Result<(i64, Option<u64>)> {
    let bad =
        || Error::invalid(format!("unsupported Range header {header:?}: expected bytes=A-B, bytes=A- or bytes=-N"));
    let spec = header.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let (start, end) = spec.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| -> Result<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<u64>().ok().filter(|n| *n <= i64::MAX as u64).ok_or_else(bad)
    };
    if start.is_empty() {
        let n = num(end)?;
        return Ok((-(n as i64), None));
    }
    let a = num(start)?;
    if end.is_empty() {
        return Ok((a as i64, None));
    }
    let b = num(end)?;
    if b < a {
        return Err(bad());
    }
    Ok((a as i64, Some(b - a + 1)))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn ranges() {
        assert_eq!(parse("bytes=0-99").unwrap(), (0, Some(100)));
        assert_eq!(parse("bytes=100-").unwrap(), (100, None));
        assert_eq!(parse("bytes=-500").unwrap(), (-500, None));
        for bad in [
            "bytes=5-1",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=-",
            "bytes=a-b",
            "bytes=--1",
            "bytes=99999999999999999999-",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
