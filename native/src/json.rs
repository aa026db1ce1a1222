//! JSON text exactly as CPython's `json` module writes and reads it (`ensure_ascii=False`,
//! compact separators, `float.__repr__` numbers; the C scanner's grammar on input).

use std::collections::HashMap;

/// Appends `s` as a JSON string: CPython's `encode_basestring` (only `"`, `\` and C0 controls escaped).
pub fn string(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none needs escaping (most text needs none): SWAR tests for a
        // byte below 0x20, a '"' or a '\\' in the word.
        if let Some(chunk) = bytes.get(i..i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            if !needs_escape(w) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
                i += 1;
                start = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether any byte of `w` is below 0x20, a '"' or a '\\' (exact: no false negatives; a false
/// positive only sends the word through the byte loop).
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    below(w, 0x20) | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\'))) != 0
}

/// `repr(x)` of a finite float: the shortest round-trip digits, in exponent form when the
/// decimal exponent is below -4 or at least 16 (CPython's `float_repr_style = 'short'`).
pub fn float(out: &mut Vec<u8>, x: f64) {
    debug_assert!(x.is_finite());
    if x == 0.0 {
        out.extend_from_slice(if x.is_sign_negative() { b"-0.0" } else { b"0.0" });
        return;
    }
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(x);
    // ryu prints either "123.45", "0.00012" or "1.2345e-7": recover digits and the decimal point.
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exp10) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: Vec<u8> = Vec::with_capacity(24);
    digits.extend_from_slice(int_part.as_bytes());
    digits.extend_from_slice(frac_part.as_bytes());
    // decpt: value = 0.DIGITS * 10^decpt
    let mut decpt = int_part.len() as i32 + exp10;
    let lead = digits.iter().take_while(|&&d| d == b'0').count();
    digits.drain(..lead);
    decpt -= lead as i32;
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    if negative {
        out.push(b'-');
    }
    let n = digits.len() as i32;
    if decpt <= -4 || decpt > 16 {
        out.push(digits[0]);
        if n > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let e = decpt - 1;
        out.extend_from_slice(format!("e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs()).as_bytes());
    } else if decpt <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-decpt) as usize));
        out.extend_from_slice(&digits);
    } else if decpt < n {
        out.extend_from_slice(&digits[..decpt as usize]);
        out.push(b'.');
        out.extend_from_slice(&digits[decpt as usize..]);
    } else {
        out.extend_from_slice(&digits);
        out.extend(std::iter::repeat_n(b'0', (decpt - n) as usize));
        out.extend_from_slice(b".0");
    }
}

/// Why nested JSON cannot be rendered here: `Invalid` is what CPython's decoder refuses (the
/// record is an invalid event); `Defer` is something only the Python path reproduces exactly
/// (lone surrogates, floats that overflow, 4300+-digit integers, deep nesting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonError {
    Invalid,
    Defer,
}

enum Value {
    Raw(Vec<u8>), // a rendered scalar
    Array(Vec<Value>),
    Object(Vec<(Vec<u8>, Value)>), // (rendered key, value); duplicate keys: last value, first place
}

const MAX_DEPTH: usize = 100;
const MAX_INT_DIGITS: usize = 4300; // CPython's int_max_str_digits default

/// Parses `text` as `json.JSONDecoder(parse_constant=...)` does and appends it re-encoded as
/// `json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)` would.
pub fn reencode(out: &mut Vec<u8>, text: &str) -> Result<(), JsonError> {
    write(out, &parse(text)?, false);
    Ok(())
}

/// `reencode` with every object's members sorted by key (`json.dumps(sort_keys=True)`): the
/// canonical form the audit ledger stores nested values in.
pub fn reencode_sorted(out: &mut Vec<u8>, text: &str) -> Result<(), JsonError> {
    write(out, &parse(text)?, true);
    Ok(())
}

fn parse(text: &str) -> Result<Value, JsonError> {
    let mut p = Parser::new(text.as_bytes());
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(JsonError::Invalid); // "Extra data"
    }
    Ok(v)
}

/// What a rendered key sorts by: the key's text (Python sorts str keys by code point, which is
/// the UTF-8 byte order), not its escaped form.
fn key_text(rendered: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let inner = &rendered[1..rendered.len() - 1];
    if !inner.contains(&b'\\') {
        return std::borrow::Cow::Borrowed(inner);
    }
    match Parser::new(rendered).string() {
        Ok(text) => std::borrow::Cow::Owned(text.into_bytes()),
        Err(_) => std::borrow::Cow::Borrowed(inner), // not reached: the key was rendered by `string`
    }
}

/// Appends `v`; with `sorted`, every object's members sorted by key.
fn write(out: &mut Vec<u8>, v: &Value, sorted: bool) {
    match v {
        Value::Raw(r) => out.extend_from_slice(r),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(out, item, sorted);
            }
            out.push(b']');
        }
        Value::Object(items) => {
            let mut order: Vec<&(Vec<u8>, Value)> = items.iter().collect();
            if sorted {
                order.sort_by_cached_key(|(k, _)| key_text(k).into_owned());
            }
            out.push(b'{');
            for (i, (k, item)) in order.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(k);
                out.push(b':');
                write(out, item, sorted);
            }
            out.push(b'}');
        }
    }
}

/// CPython's JSON scanner over a text; its lexing steps (`ws`, `string`, `number_span`) also
/// serve `pyevent.rs`, which builds Python objects from texts this parser accepted.
pub(crate) struct Parser<'a> {
    pub(crate) s: &'a [u8],
    pub(crate) i: usize,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(s: &'a [u8]) -> Self {
        Parser { s, i: 0 }
    }
}

impl Parser<'_> {
    pub(crate) fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::Defer); // CPython's RecursionError depends on the stack in use
        }
        match self.s.get(self.i) {
            None => Err(JsonError::Invalid),
            Some(b'"') => {
                let s = self.string()?;
                let mut r = Vec::with_capacity(s.len() + 2);
                string(&mut r, &s);
                Ok(Value::Raw(r))
            }
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'n') => self.literal(b"null"),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            // NaN, Infinity: parse_constant refuses them; anything else is not JSON.
            Some(_) => Err(JsonError::Invalid),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<Value, JsonError> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(Value::Raw(word.to_vec()))
        } else {
            Err(JsonError::Invalid)
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.s.get(self.i) {
            self.i += 1;
        }
        self.i - start
    }

    /// Consumes CPython's NUMBER_RE, `(-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?`: (where the
    /// number starts, where its integer part ends, whether it is a float).
    pub(crate) fn number_span(&mut self) -> Result<(usize, usize, bool), JsonError> {
        let start = self.i;
        if self.s[self.i] == b'-' {
            self.i += 1;
        }
        // -?(0|[1-9]\d*): "-Infinity" and "-" alone are not numbers.
        match self.s.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(JsonError::Invalid),
        }
        let int_end = self.i;
        let mut is_float = false;
        // (\.\d+)? and ([eE][-+]?\d+)?: an incomplete part is not consumed (it is then extra data).
        if self.s.get(self.i) == Some(&b'.') {
            let save = self.i;
            self.i += 1;
            if self.digits() == 0 {
                self.i = save;
            } else {
                is_float = true;
            }
        }
        if let Some(b'e' | b'E') = self.s.get(self.i) {
            let save = self.i;
            self.i += 1;
            if let Some(b'+' | b'-') = self.s.get(self.i) {
                self.i += 1;
            }
            if self.digits() == 0 {
                self.i = save;
            } else {
                is_float = true;
            }
        }
        Ok((start, int_end, is_float))
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let (start, int_end, is_float) = self.number_span()?;
        let lit = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| JsonError::Invalid)?;
        if is_float {
            let x: f64 = lit.parse().map_err(|_| JsonError::Defer)?;
            if !x.is_finite() {
                return Err(JsonError::Defer); // the encoder's allow_nan=False raises later
            }
            let mut r = Vec::with_capacity(24);
            float(&mut r, x);
            Ok(Value::Raw(r))
        } else {
            let digits = &self.s[start..int_end];
            let body = digits.strip_prefix(b"-").unwrap_or(digits);
            if body.len() > MAX_INT_DIGITS {
                return Err(JsonError::Defer);
            }
            if body == b"0" {
                return Ok(Value::Raw(b"0".to_vec())); // int("-0") == 0
            }
            Ok(Value::Raw(digits.to_vec()))
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let h = self.s.get(self.i..self.i + 4).ok_or(JsonError::Invalid)?;
        let mut v = 0u32;
        for &c in h {
            v = v * 16 + (c as char).to_digit(16).ok_or(JsonError::Invalid)?;
        }
        self.i += 4;
        Ok(v)
    }

    pub(crate) fn string(&mut self) -> Result<String, JsonError> {
        self.i += 1; // the opening quote
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(&c) = self.s.get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            // The input is a str, so a run between ASCII delimiters is valid UTF-8.
            out.push_str(std::str::from_utf8(&self.s[start..self.i]).map_err(|_| JsonError::Invalid)?);
            match self.s.get(self.i) {
                None => return Err(JsonError::Invalid),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = *self.s.get(self.i).ok_or(JsonError::Invalid)?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let u = self.hex4()?;
                            let ch = if (0xd800..0xdc00).contains(&u) {
                                // A high surrogate pairs with a following \uDC00-\uDFFF only.
                                if self.s.get(self.i..self.i + 2) == Some(b"\\u") {
                                    let save = self.i;
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    if (0xdc00..0xe000).contains(&lo) {
                                        0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00)
                                    } else {
                                        self.i = save;
                                        return Err(JsonError::Defer); // a lone surrogate
                                    }
                                } else {
                                    return Err(JsonError::Defer);
                                }
                            } else if (0xdc00..0xe000).contains(&u) {
                                return Err(JsonError::Defer);
                            } else {
                                u
                            };
                            out.push(char::from_u32(ch).ok_or(JsonError::Defer)?);
                        }
                        _ => return Err(JsonError::Invalid),
                    }
                }
                Some(_) => return Err(JsonError::Invalid), // a control character (strict mode)
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.s.get(self.i) == Some(&b']') {
            self.i += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(JsonError::Invalid),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.i += 1;
        let mut items: Vec<(Vec<u8>, Value)> = Vec::new();
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        self.ws();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(Value::Object(items));
        }
        loop {
            self.ws();
            if self.s.get(self.i) != Some(&b'"') {
                return Err(JsonError::Invalid);
            }
            let key = self.string()?;
            let mut k = Vec::with_capacity(key.len() + 2);
            string(&mut k, &key);
            self.ws();
            if self.s.get(self.i) != Some(&b':') {
                return Err(JsonError::Invalid);
            }
            self.i += 1;
            self.ws();
            let v = self.value(depth + 1)?;
            match index.get(&k) {
                Some(&at) => items[at].1 = v,
                None => {
                    index.insert(k.clone(), items.len());
                    items.push((k, v));
                }
            }
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Object(items));
                }
                _ => return Err(JsonError::Invalid),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: f64) -> String {
        let mut v = Vec::new();
        float(&mut v, x);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn float_repr() {
        assert_eq!(f(1.0), "1.0");
        assert_eq!(f(0.1), "0.1");
        assert_eq!(f(1e16), "1e+16");
        assert_eq!(f(1.5e16), "1.5e+16");
        assert_eq!(f(1234567890123456.0), "1234567890123456.0");
        assert_eq!(f(0.0001), "0.0001");
        assert_eq!(f(0.00001), "1e-05");
        assert_eq!(f(-2.5e-300), "-2.5e-300");
        assert_eq!(f(123.456), "123.456");
        assert_eq!(f(1e22), "1e+22");
        assert_eq!(f(5e-324), "5e-324");
    }

    #[test]
    fn string_escapes_like_python_json() {
        let mut all = String::new();
        for c in (0u32..0x80).chain([0xe9, 0x2028, 0x1f600]) {
            all.push(char::from_u32(c).unwrap());
        }
        // Every split of the text against the 8-byte stride.
        for lead in 0..9 {
            let text = format!("{}{}{}", "a".repeat(lead), all, "b".repeat(lead));
            let mut fast = Vec::new();
            string(&mut fast, &text);
            let mut slow = vec![b'"'];
            for ch in text.chars() {
                match ch {
                    '"' => slow.extend_from_slice(b"\\\""),
                    '\\' => slow.extend_from_slice(b"\\\\"),
                    '\n' => slow.extend_from_slice(b"\\n"),
                    '\r' => slow.extend_from_slice(b"\\r"),
                    '\t' => slow.extend_from_slice(b"\\t"),
                    '\u{8}' => slow.extend_from_slice(b"\\b"),
                    '\u{c}' => slow.extend_from_slice(b"\\f"),
                    c if (c as u32) < 0x20 => slow.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
                    c => slow.extend_from_slice(c.to_string().as_bytes()),
                }
            }
            slow.push(b'"');
            assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(slow).unwrap());
        }
        for w in 0u64..=0xff {
            let b = w as u8;
            assert_eq!(needs_escape(w * 0x0101_0101_0101_0101), b < 0x20 || b == b'"' || b == b'\\', "{b}");
        }
    }

    #[test]
    fn reencode_basics() {
        let mut v = Vec::new();
        reencode(&mut v, " {\"a\": [1, 2.50, -0, \"x\\u00e9\\n\"], \"a\": 1e2, \"b\": {}} ").unwrap();
        assert_eq!(String::from_utf8(v).unwrap(), "{\"a\":100.0,\"b\":{}}");
        assert_eq!(reencode(&mut Vec::new(), "NaN"), Err(JsonError::Invalid));
        assert_eq!(reencode(&mut Vec::new(), "1 2"), Err(JsonError::Invalid));
        assert_eq!(reencode(&mut Vec::new(), "\"\\ud800\""), Err(JsonError::Defer));
    }

    #[test]
    fn reencode_sorted_sorts_by_the_keys_text() {
        let mut v = Vec::new();
        // "\n" (0x0a) sorts before "a" though its escaped form ("\\n") sorts after it.
        reencode_sorted(&mut v, "{\"b\": [{\"z\": 1, \"y\": 2}], \"a\": 0, \"\\n\": 1, \"\\u00e9\": 2, \"a\": 3}").unwrap();
        assert_eq!(String::from_utf8(v).unwrap(), "{\"\\n\":1,\"a\":3,\"b\":[{\"y\":2,\"z\":1}],\"\u{e9}\":2}");
    }
}
