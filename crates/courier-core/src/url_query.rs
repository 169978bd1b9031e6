//! Query strings of destination URLs (`nats://…?timeout_ms=…`), decoded the same way by every
//! publisher's `from_url`. Pure string work, no I/O.

/// `a=1&b=x%2Cy` as decoded pairs; the error names the bad part.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(name)?, percent_decode(value)?))
        })
        .collect()
}

/// `%`-escapes decoded; the text must be UTF-8 afterwards.
pub fn percent_decode(s: &str) -> Result<String, String> {
    let bad = || format!("bad percent-encoding in {s:?}");
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex = [bytes.next().ok_or_else(bad)?, bytes.next().ok_or_else(bad)?];
        let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
        out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_split_and_decoded_and_bad_escapes_named() {
        assert_eq!(
            query_pairs("a=1&&b=x%2Cy&flag").unwrap(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x,y".into()),
                ("flag".into(), String::new())
            ]
        );
        for bad in ["%", "%4", "%zz", "%ff"] {
            let e = percent_decode(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
