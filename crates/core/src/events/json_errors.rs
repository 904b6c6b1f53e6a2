//! What is wrong with a line that is not JSON, in words a person reading a
//! dead letter understands: what was expected, at which byte, and the text
//! there. The parser's own names ("ExpectedObjectContent", "Syntax at
//! character 0") mean nothing to support staff or to a producer's team.

use simd_json::ErrorType;

/// Bytes of the input shown around the problem.
const CONTEXT: usize = 24;

/// A readable description of `error`, raised parsing `input`.
pub fn describe(error: &simd_json::Error, input: &[u8]) -> String {
    let at = error.index().min(input.len());
    if let Some(after) = text_after_the_object(input) {
        return format!(
            "text after the end of the JSON object at byte {after} (of {}): {}",
            input.len(),
            excerpt(input, after)
        );
    }
    let what = match error.error() {
        ErrorType::Eof | ErrorType::UnterminatedString => return cut_off(input),
        // The structural pass refuses unbalanced braces and quotes before
        // any position is known: the usual cause is a line cut short.
        ErrorType::Syntax if at == 0 && looks_cut_off(input) => return cut_off(input),
        // A field name where one was not expected: a comma is missing.
        ErrorType::ExpectedObjectContent if input.get(at) == Some(&b'"') => "expected ',' between two fields",
        ErrorType::ExpectedObjectContent | ErrorType::ExpectedObjectKey | ErrorType::KeyMustBeAString => {
            "expected a field name in double quotes"
        }
        ErrorType::ExpectedObjectColon => "expected ':' after a field name",
        ErrorType::ExpectedMapComma | ErrorType::ExpectedMapEnd => {
            "expected ',' or '}' after a field's value"
        }
        ErrorType::ExpectedArrayComma => "expected ',' or ']' after an array element",
        ErrorType::ExpectedArrayContent => "expected a value or ']'",
        ErrorType::InvalidEscape | ErrorType::InvalidUnicodeEscape | ErrorType::InvalidUnicodeCodepoint => {
            "a string has an invalid escape (\\ must be followed by \", \\, /, b, f, n, r, t or uXXXX)"
        }
        ErrorType::InvalidNumber | ErrorType::InvalidExponent | ErrorType::Overflow => "an invalid number",
        ErrorType::TrailingData => "text after the end of the JSON object",
        ErrorType::DepthLimitExceeded => "values nested too deeply",
        ErrorType::ExpectedTrue | ErrorType::ExpectedFalse | ErrorType::ExpectedNull => {
            "an unknown word (values are strings in double quotes, numbers, true, false or null)"
        }
        ErrorType::UnexpectedCharacter | ErrorType::Syntax => "unexpected text",
        _ => "not valid JSON",
    };
    format!("{what} at byte {at} (of {}): {}", input.len(), excerpt(input, at))
}

fn cut_off(input: &[u8]) -> String {
    format!(
        "the line ends before its JSON does (cut off after {} bytes?): ...{}",
        input.len(),
        excerpt(input, input.len().saturating_sub(CONTEXT / 2))
    )
}

/// Brace depth and whether a string is open after each byte (quotes and
/// escapes followed, nothing else checked).
fn scan(input: &[u8]) -> impl Iterator<Item = (usize, i64, bool)> + '_ {
    let (mut depth, mut in_string, mut escaped) = (0i64, false, false);
    input.iter().enumerate().map(move |(i, &b)| {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => depth += 1,
            (false, _, b'}' | b']') => depth -= 1,
            _ => {}
        }
        (i, depth, in_string)
    })
}

/// More `{` than `}`, or a string left open.
fn looks_cut_off(input: &[u8]) -> bool {
    scan(input).last().is_some_and(|(_, depth, in_string)| in_string || depth > 0)
}

/// Where text follows the first complete top-level object, if it does.
fn text_after_the_object(input: &[u8]) -> Option<usize> {
    let (end, _, _) =
        scan(input).find(|&(i, depth, in_string)| depth == 0 && !in_string && input[i] == b'}')?;
    input[end + 1..].iter().position(|b| !b.is_ascii_whitespace()).map(|p| end + 1 + p)
}

/// The input from `at` on, a few bytes of it, quoted and escaped.
fn excerpt(input: &[u8], at: usize) -> String {
    let end = (at + CONTEXT).min(input.len());
    let text = String::from_utf8_lossy(&input[at.min(end)..end]);
    if text.is_empty() { "(nothing)".to_string() } else { format!("{:?}", text.as_ref()) }
}

#[cfg(test)]
mod tests {
    use crate::events::{DecodeError, Decoder};

    fn reason(line: &str) -> String {
        match Decoder::new().decode(line.as_bytes()) {
            Err(DecodeError::Malformed(text)) => text,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn malformed_lines_are_described_in_words_with_where() {
        let truncated = reason(r#"{"event_id":"e1","type":"purchase","amount":"12"#);
        assert!(truncated.starts_with("the line ends before its JSON does"), "{truncated}");
        let cases = [
            (r#"{"event_id":"e1", type:"purchase"}"#, "expected a field name in double quotes at byte"),
            (r#"{"event_id" "e1"}"#, "expected ':' after a field name at byte"),
            (r#"{"event_id":"e1" "type":"purchase"}"#, "expected ',' between two fields at byte 17"),
            (r#"{"event_id":"e1","amount":12.3.4}"#, "an invalid number at byte"),
            (r#"{"event_id":"e\q"}"#, "a string has an invalid escape"),
            (r#"{"event_id":"e1"} x"#, "text after the end of the JSON object at byte"),
        ];
        for (line, start) in cases {
            let text = reason(line);

            assert!(text.starts_with(start), "{line}: {text}");
            assert!(!text.contains("Expected") && !text.contains("Syntax"), "parser internals: {text}");
        }
    }
}
