//! Repair of the JSON that real agents send and strict parsers refuse.
//!
//! Seen in the wild (see `corpus/real/SOURCES.md`): lone UTF-16 surrogate escapes such as `\udc90`
//! in Windows hook logs, `\u0000` inside tool output (PostgreSQL `jsonb` cannot store U+0000), raw
//! control bytes inside strings and invalid UTF-8. Each of these would make `serde_json` reject the
//! whole batch, or make the worker fail forever on the insert. We repair them at the edge, once, so
//! everything past the boundary handles valid, storable JSON:
//!
//! - invalid UTF-8 sequences become U+FFFD;
//! - a lone surrogate escape (high without a following low, or a low on its own) becomes `\ufffd`;
//! - `\u0000` becomes `\ufffd` (rather than being dropped, so the stored text shows where it was);
//! - a raw control byte inside a string becomes its `\u00XX` escape (a raw NUL becomes `\ufffd`).
//!
//! The scan is one pass over the bytes and allocates only when something needs repair.

use std::borrow::Cow;

const REPLACEMENT_ESCAPE: &[u8] = b"\\ufffd";

/// Returns the input as valid, storable JSON text where the only problems were those listed in the
/// module docs. Anything else (a missing brace, say) is left for the parser to report.
pub fn repair_json(input: &[u8]) -> Cow<'_, str> {
    let text = String::from_utf8_lossy(input);
    match repair_escapes(text.as_bytes()) {
        None => text,
        // The repair only ever replaces ASCII sequences with ASCII sequences, so UTF-8 stays valid.
        Some(fixed) => Cow::Owned(String::from_utf8(fixed).expect("repair keeps UTF-8 valid")),
    }
}

fn hex4(bytes: &[u8]) -> Option<u16> {
    if bytes.len() < 4 {
        return None;
    }
    let s = std::str::from_utf8(&bytes[..4]).ok()?;
    u16::from_str_radix(s, 16).ok()
}

/// `Some(repaired)` when anything changed, `None` when the input is already fine.
fn repair_escapes(b: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied_upto = 0; // bytes before this index are already in `out` (when it exists)
    let mut in_string = false;
    let mut i = 0;

    // Replace b[start..end] by `with`.
    let patch = |out: &mut Option<Vec<u8>>, copied: &mut usize, start: usize, end: usize, with: &[u8]| {
        let buf = out.get_or_insert_with(|| Vec::with_capacity(b.len() + 16));
        buf.extend_from_slice(&b[*copied..start]);
        buf.extend_from_slice(with);
        *copied = end;
    };

    while i < b.len() {
        let c = b[i];
        if !in_string {
            if c == b'"' {
                in_string = true;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => {
                in_string = false;
                i += 1;
            }
            b'\\' if b.get(i + 1) == Some(&b'u') => match hex4(&b[i + 2..]) {
                Some(0) => {
                    patch(&mut out, &mut copied_upto, i, i + 6, REPLACEMENT_ESCAPE);
                    i += 6;
                }
                Some(0xD800..=0xDBFF) => {
                    let low = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u'))
                        .then(|| hex4(&b[i + 8..]))
                        .flatten();
                    if matches!(low, Some(0xDC00..=0xDFFF)) {
                        i += 12;
                    } else {
                        patch(&mut out, &mut copied_upto, i, i + 6, REPLACEMENT_ESCAPE);
                        i += 6;
                    }
                }
                Some(0xDC00..=0xDFFF) => {
                    patch(&mut out, &mut copied_upto, i, i + 6, REPLACEMENT_ESCAPE);
                    i += 6;
                }
                // A valid escape, or a malformed one the parser will report.
                _ => i += 2,
            },
            b'\\' => i += 2,
            0x00 => {
                patch(&mut out, &mut copied_upto, i, i + 1, REPLACEMENT_ESCAPE);
                i += 1;
            }
            0x01..=0x1F => {
                let esc = format!("\\u{:04x}", c);
                patch(&mut out, &mut copied_upto, i, i + 1, esc.as_bytes());
                i += 1;
            }
            _ => i += 1,
        }
    }
    out.map(|mut buf| {
        buf.extend_from_slice(&b[copied_upto.min(b.len())..]);
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(input: &str) -> serde_json::Value {
        serde_json::from_str(&repair_json(input.as_bytes())).expect("repaired JSON parses")
    }

    #[test]
    fn valid_json_is_returned_without_copying() {
        let input = br#"{"a":"caf\u00e9 \ud83d\udd25 \\u0000 \"q\""}"#;
        assert!(matches!(repair_json(input), Cow::Borrowed(_)));
    }

    #[test]
    fn a_lone_low_surrogate_becomes_the_replacement_character() {
        let v = parsed(r#"{"c":"echo \u00e2\u2022\udc90 done"}"#);
        assert_eq!(v["c"], "echo \u{e2}\u{2022}\u{fffd} done");
    }

    #[test]
    fn a_lone_high_surrogate_becomes_the_replacement_character() {
        let v = parsed(r#"{"p":"a\ud800.txt","q":"\ud800\u0041"}"#);
        assert_eq!(v["p"], "a\u{fffd}.txt");
        assert_eq!(v["q"], "\u{fffd}A");
    }

    #[test]
    fn a_surrogate_pair_is_kept() {
        let v = parsed(r#"{"e":"\ud83d\udd25"}"#);
        assert_eq!(v["e"], "\u{1f525}");
    }

    #[test]
    fn an_escaped_nul_becomes_the_replacement_character() {
        let v = parsed(r#"{"stdout":"abc\u0000def"}"#);
        assert_eq!(v["stdout"], "abc\u{fffd}def");
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_not_an_escape() {
        let v = parsed(r#"{"s":"\\u0000"}"#);
        assert_eq!(v["s"], "\\u0000");
    }

    #[test]
    fn raw_control_bytes_and_invalid_utf8_inside_strings_are_repaired() {
        let input = b"{\"s\":\"a\x00b\x01c\tend \xff\"}";
        let v: serde_json::Value = serde_json::from_str(&repair_json(input)).unwrap();
        assert_eq!(v["s"], "a\u{fffd}b\u{1}c\tend \u{fffd}");
    }

    #[test]
    fn a_truncated_escape_is_left_for_the_parser_to_report() {
        let out = repair_json(br#"{"s":"\ud8"#);
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_err());
    }
}
