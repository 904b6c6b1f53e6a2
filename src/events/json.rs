//! A strict JSON reader made for events: one top-level object, read in a
//! single pass over a reused copy of the input, strings unescaped where
//! they lie, numbers kept as their digits (never `f64`). Every member is
//! reported in order; nested objects and arrays are checked and skipped,
//! except that the strings of a top-level array are listed.
//!
//! It accepts exactly RFC 8259 JSON (as `serde_json` does: the tests
//! compare the two on generated and mutated input) and replaces a general
//! parser because events are small and flat: building simd-json's tape
//! and walking it was a third of decoding and applying an event.

use super::DecodeError;
use std::ops::Range;

/// Deepest nesting accepted inside an event.
const MAX_DEPTH: usize = 64;

/// A member's value, as positions in the scanner's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The unescaped text.
    Str(Range<usize>),
    /// The number's text, exactly as written (valid JSON number grammar).
    Number(Range<usize>),
    Bool(bool),
    Null,
    Object,
    /// Its elements in [`Scanner::elements`], from..to.
    Array(Range<usize>),
}

/// An element of a top-level array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    Str(Range<usize>),
    /// A number, boolean or null.
    Scalar,
    /// An object or array.
    Nested,
}

#[derive(Default)]
pub struct Scanner {
    buf: Vec<u8>,
    /// Elements of the top-level arrays of the last scan.
    pub elements: Vec<Element>,
}

fn malformed(what: &str, at: usize) -> DecodeError {
    DecodeError::Malformed(format!("{what} at byte {at}"))
}

/// One pass over the buffer: the read position, and a write position for
/// strings unescaped in place (never ahead of the read position).
struct Cursor<'b> {
    b: &'b mut [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<(), DecodeError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(malformed(what, self.pos))
        }
    }

    /// A string at the opening quote; returns where its unescaped text is.
    fn string(&mut self) -> Result<Range<usize>, DecodeError> {
        self.expect(b'"', "expected a string")?;
        let start = self.pos;
        // Most strings have no escapes: find the closing quote.
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(start..self.pos - 1);
                }
                Some(b'\\') => break,
                Some(c) if c < 0x20 => return Err(malformed("control character in a string", self.pos)),
                Some(_) => self.pos += 1,
                None => return Err(malformed("unterminated string", start)),
            }
        }
        let mut write = self.pos;
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(start..write);
                }
                Some(b'\\') => {
                    let escape = self.b.get(self.pos + 1).copied();
                    let simple = match escape {
                        Some(b'"') => Some(b'"'),
                        Some(b'\\') => Some(b'\\'),
                        Some(b'/') => Some(b'/'),
                        Some(b'b') => Some(0x08),
                        Some(b'f') => Some(0x0c),
                        Some(b'n') => Some(b'\n'),
                        Some(b'r') => Some(b'\r'),
                        Some(b't') => Some(b'\t'),
                        Some(b'u') => None,
                        _ => return Err(malformed("invalid escape", self.pos)),
                    };
                    if let Some(c) = simple {
                        self.b[write] = c;
                        write += 1;
                        self.pos += 2;
                        continue;
                    }
                    let c = self.unicode_escape()?;
                    let mut utf8 = [0u8; 4];
                    let encoded = c.encode_utf8(&mut utf8).as_bytes();
                    self.b[write..write + encoded.len()].copy_from_slice(encoded);
                    write += encoded.len();
                }
                Some(c) if c < 0x20 => return Err(malformed("control character in a string", self.pos)),
                Some(c) => {
                    self.b[write] = c;
                    write += 1;
                    self.pos += 1;
                }
                None => return Err(malformed("unterminated string", start)),
            }
        }
    }

    /// `\uXXXX` (a surrogate pair as two of them) at the backslash.
    fn unicode_escape(&mut self) -> Result<char, DecodeError> {
        let at = self.pos;
        let first = self.hex4(at + 2)?;
        self.pos += 6;
        let code = match first {
            0xd800..=0xdbff => {
                if self.b.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err(malformed("unpaired surrogate", at));
                }
                let second = self.hex4(self.pos + 2)?;
                if !(0xdc00..=0xdfff).contains(&second) {
                    return Err(malformed("unpaired surrogate", at));
                }
                self.pos += 6;
                0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
            }
            0xdc00..=0xdfff => return Err(malformed("unpaired surrogate", at)),
            c => c,
        };
        char::from_u32(code).ok_or_else(|| malformed("invalid escape", at))
    }

    fn hex4(&self, at: usize) -> Result<u32, DecodeError> {
        let digits = self.b.get(at..at + 4).ok_or_else(|| malformed("invalid escape", at))?;
        digits.iter().try_fold(0u32, |v, &d| {
            let n = (d as char).to_digit(16).ok_or_else(|| malformed("invalid escape", at))?;
            Ok(v * 16 + n)
        })
    }

    /// A number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<Range<usize>, DecodeError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(malformed("invalid number", start)),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(malformed("invalid number", start));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(malformed("invalid number", start));
            }
            self.digits();
        }
        Ok(start..self.pos)
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), DecodeError> {
        if self.b.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(malformed("invalid literal", self.pos))
        }
    }

    /// Any value, checked and passed over.
    fn skip_value(&mut self, depth: usize) -> Result<(), DecodeError> {
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => self.skip_container(b'}', true, depth),
            Some(b'[') => self.skip_container(b']', false, depth),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(drop),
            Some(_) => Err(malformed("expected a value", self.pos)),
            None => Err(malformed("unexpected end", self.pos)),
        }
    }

    /// An object (`keyed`) or array at its opening bracket.
    fn skip_container(&mut self, close: u8, keyed: bool, depth: usize) -> Result<(), DecodeError> {
        if depth >= MAX_DEPTH {
            return Err(malformed("nested too deeply", self.pos));
        }
        self.pos += 1;
        self.skip_space();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if keyed {
                self.string()?;
                self.skip_space();
                self.expect(b':', "expected ':'")?;
                self.skip_space();
            }
            self.skip_value(depth + 1)?;
            self.skip_space();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_space();
                }
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(malformed("expected ',' or a closing bracket", self.pos)),
            }
        }
    }

    /// A member's value, at its first byte.
    fn value(&mut self, elements: &mut Vec<Element>) -> Result<Value, DecodeError> {
        Ok(match self.peek() {
            Some(b'"') => Value::Str(self.string()?),
            Some(b'-' | b'0'..=b'9') => Value::Number(self.number()?),
            Some(b't') => self.literal(b"true").map(|()| Value::Bool(true))?,
            Some(b'f') => self.literal(b"false").map(|()| Value::Bool(false))?,
            Some(b'n') => self.literal(b"null").map(|()| Value::Null)?,
            Some(b'{') => self.skip_container(b'}', true, 1).map(|()| Value::Object)?,
            Some(b'[') => self.array(elements)?,
            Some(_) => return Err(malformed("expected a value", self.pos)),
            None => return Err(malformed("unexpected end", self.pos)),
        })
    }

    /// A top-level member's array, its elements listed.
    fn array(&mut self, elements: &mut Vec<Element>) -> Result<Value, DecodeError> {
        let first = elements.len();
        self.pos += 1;
        self.skip_space();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(first..first));
        }
        loop {
            let element = match self.peek() {
                Some(b'"') => Element::Str(self.string()?),
                Some(b'{' | b'[') => {
                    self.skip_value(1)?;
                    Element::Nested
                }
                _ => {
                    self.skip_value(1)?;
                    Element::Scalar
                }
            };
            elements.push(element);
            self.skip_space();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_space();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(first..elements.len()));
                }
                _ => return Err(malformed("expected ',' or ']'", self.pos)),
            }
        }
    }
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner { buf: Vec::with_capacity(1024), elements: Vec::new() }
    }

    /// Reads `input`, which must be one JSON object, calling `member` with
    /// each key and value in order. Positions refer to this scanner's
    /// buffer (see [`Scanner::text`]) until the next scan.
    pub fn scan(
        &mut self,
        input: &[u8],
        mut member: impl FnMut(&[u8], Value) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        if std::str::from_utf8(input).is_err() {
            return Err(DecodeError::NotUtf8);
        }
        self.buf.clear();
        self.buf.extend_from_slice(input);
        self.elements.clear();
        let mut c = Cursor { b: &mut self.buf, pos: 0 };
        c.skip_space();
        if c.peek() != Some(b'{') {
            // Valid JSON of another kind, or not JSON at all.
            c.skip_value(0)?;
            c.skip_space();
            return Err(match c.peek() {
                None => DecodeError::NotAnObject,
                Some(_) => malformed("trailing characters", c.pos),
            });
        }
        c.pos += 1;
        c.skip_space();
        if c.peek() == Some(b'}') {
            c.pos += 1;
        } else {
            loop {
                let key = c.string()?;
                c.skip_space();
                c.expect(b':', "expected ':'")?;
                c.skip_space();
                let value = c.value(&mut self.elements)?;
                member(&c.b[key], value)?;
                c.skip_space();
                match c.peek() {
                    Some(b',') => {
                        c.pos += 1;
                        c.skip_space();
                    }
                    Some(b'}') => {
                        c.pos += 1;
                        break;
                    }
                    _ => return Err(malformed("expected ',' or '}'", c.pos)),
                }
            }
        }
        c.skip_space();
        match c.peek() {
            None => Ok(()),
            Some(_) => Err(malformed("trailing characters", c.pos)),
        }
    }

    /// The text at `range` of the last scan (what [`Value`] and
    /// [`Element`] point at). Unescaped text of valid UTF-8 input is valid
    /// UTF-8; the check costs little on such short strings.
    pub fn text(&self, range: Range<usize>) -> Result<&str, DecodeError> {
        let bytes = self.buf.get(range).ok_or(DecodeError::NotUtf8)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a scan saw, in serde_json's terms: the members (the last of a
    /// repeated key wins, as in serde_json's map), or the kind of failure.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Object(Vec<(String, Shape)>),
        NotAnObject,
        Invalid,
    }

    #[derive(Debug, PartialEq)]
    enum Shape {
        Str(String),
        /// Compared as f64: serde_json keeps no digits.
        Number(f64),
        Bool(bool),
        Null,
        Object,
        Array(Vec<Option<String>>),
    }

    fn ours(input: &[u8]) -> Seen {
        let mut scanner = Scanner::new();
        let mut members: Vec<(Vec<u8>, Value)> = Vec::new();
        match scanner.scan(input, |k, v| {
            members.push((k.to_vec(), v));
            Ok(())
        }) {
            Ok(()) => {}
            Err(DecodeError::NotAnObject) => return Seen::NotAnObject,
            Err(DecodeError::Malformed(_) | DecodeError::NotUtf8) => return Seen::Invalid,
            Err(other) => panic!("unexpected error {other:?}"),
        }
        let mut out: Vec<(String, Shape)> = Vec::new();
        for (key, value) in members {
            let key = String::from_utf8(key).expect("keys are UTF-8");
            let text = |r: Range<usize>| scanner.text(r).expect("text is UTF-8").to_string();
            let shape = match value {
                Value::Str(r) => Shape::Str(text(r)),
                Value::Number(r) => Shape::Number(text(r).parse().expect("a number")),
                Value::Bool(b) => Shape::Bool(b),
                Value::Null => Shape::Null,
                Value::Object => Shape::Object,
                Value::Array(r) => Shape::Array(
                    scanner.elements[r]
                        .iter()
                        .map(|e| match e {
                            Element::Str(r) => Some(text(r.clone())),
                            _ => None,
                        })
                        .collect(),
                ),
            };
            out.retain(|(k, _)| *k != key);
            out.push((key, shape));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Seen::Object(out)
    }

    fn reference(input: &[u8]) -> Seen {
        match serde_json::from_slice::<serde_json::Value>(input) {
            Err(_) => Seen::Invalid,
            Ok(serde_json::Value::Object(map)) => {
                let mut out: Vec<(String, Shape)> = map
                    .into_iter()
                    .map(|(k, v)| {
                        let shape = match v {
                            serde_json::Value::String(s) => Shape::Str(s),
                            serde_json::Value::Number(n) => Shape::Number(n.as_f64().expect("finite")),
                            serde_json::Value::Bool(b) => Shape::Bool(b),
                            serde_json::Value::Null => Shape::Null,
                            serde_json::Value::Object(_) => Shape::Object,
                            serde_json::Value::Array(items) => Shape::Array(
                                items.into_iter().map(|i| i.as_str().map(str::to_string)).collect(),
                            ),
                        };
                        (k, shape)
                    })
                    .collect();
                out.sort_by(|a, b| a.0.cmp(&b.0));
                Seen::Object(out)
            }
            Ok(_) => Seen::NotAnObject,
        }
    }

    /// serde_json refuses numbers beyond f64's range; JSON does not, and
    /// the decoder reads such an amount from its digits (and refuses it).
    fn agrees(ours: &Seen, reference: &Seen) -> bool {
        let huge = matches!(ours, Seen::Object(m) if m.iter().any(|(_, s)| matches!(s, Shape::Number(n) if n.is_infinite())));
        ours == reference || (huge && *reference == Seen::Invalid)
    }

    fn same_as_serde_json(input: &[u8]) {
        let (a, b) = (ours(input), reference(input));
        assert!(
            agrees(&a, &b),
            "input: {:?}\nours: {a:?}\nserde_json: {b:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn agrees_with_serde_json_on_hand_picked_input() {
        let cases: &[&[u8]] = &[
            br#"{"a":"x","b":1,"c":-0.5e+3,"d":true,"e":false,"f":null,"g":{"h":[1,{"i":[]}]},"j":["k",2,"l",[]]}"#,
            br#"  {"a" : "b" , "a":"c"}  "#,
            br#"{"esc":"\"\\\/\b\f\n\r\t\u00e9\u20ac\ud83d\ude00","k\u0065y":1}"#,
            br#"{"s":"\ud83d"}"#,
            br#"{"s":"\ude00"}"#,
            br#"{"s":"\ud83d\u0041"}"#,
            br#"{"s":"\x"}"#,
            br#"{"s":"\u12"}"#,
            b"{\"s\":\"a\x01b\"}",
            b"{\"s\":\"a\tb\"}",
            "{\"s\":\"é€😀\"}".as_bytes(),
            b"{\"s\":\"\xff\"}",
            br#"{"n":01}"#,
            br#"{"n":1.}"#,
            br#"{"n":.5}"#,
            br#"{"n":-}"#,
            br#"{"n":1e}"#,
            br#"{"n":1e+}"#,
            br#"{"n":+1}"#,
            br#"{"n":1E5,"m":0,"o":-0,"p":123456789012345678901234567890}"#,
            br#"{"a":tru}"#,
            br#"{"a":nul}"#,
            br#"{"a":1,}"#,
            br#"{,"a":1}"#,
            br#"{"a" 1}"#,
            br#"{"a":1"b":2}"#,
            br#"{"a":[1,]}"#,
            br#"{"a":{"b"}}"#,
            br#"{"a":{"b":1,}}"#,
            br#"{a:1}"#,
            br#"{"a":1}}"#,
            br#"{"a":1} x"#,
            br#"{}"#,
            br#"{ }"#,
            b"",
            b"   ",
            b"null",
            b"[1,2,3]",
            b"12345",
            br#""text""#,
            b"[1,2",
            b"{",
            br#"{"a""#,
            br#"{"a":"#,
            br#"{"a":"b"#,
            b"{\"a\":1}\n",
            b"\xef\xbb\xbf{}",
        ];
        for case in cases {
            same_as_serde_json(case);
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(ours(deep.as_bytes()), Seen::Invalid);
        let fine = format!("{{\"a\":{}1{}}}", "[".repeat(40), "]".repeat(40));
        same_as_serde_json(fine.as_bytes());
    }

    #[test]
    fn generated_events_read_as_serde_json_reads_them() {
        let opts = crate::datagen::GenOptions { events: 2_000, malformed_percent: 5.0, ..Default::default() };
        let mut out = Vec::new();
        crate::datagen::generate(&opts, &mut out).expect("generated in memory");
        for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            same_as_serde_json(line);
        }
    }

    /// Bytes that matter to the grammar, for mutations.
    const SPECIAL: &[u8] = b"{}[],:\"\\/ \t\n0123456789-+.eEtrufalsn\x00\x1f\x7f\xc3\xa9\xff\xed\xa0\x80ubdf";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3_000))]
        #[test]
        fn mutated_events_read_as_serde_json_reads_them(
            seed in 0u64..500,
            edits in proptest::collection::vec((0usize..400, 0usize..SPECIAL.len(), 0u8..3), 1..4),
        ) {
            let opts = crate::datagen::GenOptions { events: 1, seed, ..Default::default() };
            let mut line = Vec::new();
            crate::datagen::generate(&opts, &mut line).expect("generated in memory");
            while line.last() == Some(&b'\n') {
                line.pop();
            }
            for (at, byte, op) in edits {
                let at = at % (line.len() + 1);
                match op {
                    0 if at < line.len() => { line.remove(at); }
                    1 => line.insert(at, SPECIAL[byte]),
                    _ if at < line.len() => line[at] = SPECIAL[byte],
                    _ => line.push(SPECIAL[byte]),
                }
            }
            let (a, b) = (ours(&line), reference(&line));
            prop_assert!(agrees(&a, &b), "input: {:?}\nours: {:?}\nserde_json: {:?}", String::from_utf8_lossy(&line), a, b);
        }

        #[test]
        fn any_bytes_read_as_serde_json_reads_them(bytes in proptest::collection::vec(proptest::sample::select(SPECIAL.to_vec()), 0..40)) {
            let (a, b) = (ours(&bytes), reference(&bytes));
            prop_assert!(agrees(&a, &b), "input: {:?}\nours: {:?}\nserde_json: {:?}", String::from_utf8_lossy(&bytes), a, b);
        }
    }
}
