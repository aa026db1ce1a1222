//! One consumed record: CloudEvents headers → framing → body → checks → the JSON Lines line
//! `govbus.consumers.sinks._jsonl.encode_line` writes for it.

use std::collections::HashMap;

use crate::event::{self, Writer};
use crate::json::{self, JsonError};

/// A header as consumed: name, and value (None: a header without a value).
pub type Header<'a> = (&'a str, Option<&'a [u8]>);

/// Where a record came from, as the delivered record holds it.
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub offset: Option<i64>,
    pub timestamp_ms: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'a [Header<'a>],
}

pub struct Verdict<'a> {
    pub code: &'a str,
    pub detail: &'a str,
    pub flagged: bool,
}

/// What became of one record.
pub enum Outcome {
    /// The rendered line, the event id, and whether the writer fingerprint was the legacy order.
    Line(Vec<u8>, String, bool),
    /// A `DecodeError` reason (the Python path words the message).
    Error(&'static str),
    /// Only the Python path can judge it (Confluent framing, inputs whose outcome Python alone reproduces).
    Defer,
}

/// The writer schemas by fingerprint (wire order, and the legacy byte-reversed order).
pub struct Schemas {
    pub by_fingerprint: HashMap<[u8; 8], usize>,
    pub by_legacy: HashMap<[u8; 8], usize>,
    pub writers: Vec<Writer>,
}

/// An insertion-ordered object whose repeated keys keep their first place (a Python dict).
struct Obj {
    items: Vec<(String, Vec<u8>)>,
    index: HashMap<String, usize>,
}

impl Obj {
    fn new() -> Self {
        Obj { items: Vec::with_capacity(12), index: HashMap::new() }
    }
    fn pos(&self, k: &str) -> Option<usize> {
        if self.items.len() <= 16 {
            self.items.iter().position(|(key, _)| key == k)
        } else {
            self.index.get(k).copied()
        }
    }
    fn set(&mut self, k: &str, v: Vec<u8>) {
        match self.pos(k) {
            Some(at) => self.items[at].1 = v,
            None => self.push(k, v),
        }
    }
    fn setdefault(&mut self, k: &str, v: Vec<u8>) {
        if self.pos(k).is_none() {
            self.push(k, v);
        }
    }
    fn push(&mut self, k: &str, v: Vec<u8>) {
        self.items.push((k.to_owned(), v));
        if self.items.len() == 17 {
            self.index = self.items.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        } else if self.items.len() > 17 {
            self.index.insert(k.to_owned(), self.items.len() - 1);
        }
    }
}

fn jstr(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 2);
    json::string(&mut v, s);
    v
}

/// The CloudEvents attributes `parse_headers` knows; any other `ce_*` header is an extension.
pub(crate) const KNOWN: [&str; 7] = ["specversion", "id", "source", "type", "time", "subject", "dataschema"];

/// What the decode read, kept for building the Python event and its CloudEvents attributes
/// (`pyevent.rs`) without decoding the record again.
pub struct Decoded<'a> {
    pub event: event::Event<'a>,
    pub writer: usize,
    /// The `ce_*` header values by attribute name (first place, last value), as `parse_headers` reads them.
    pub ce: Vec<(&'a str, &'a str)>,
    /// The last `content-type` header's value.
    pub content_type: Option<&'a str>,
}

pub fn process(value: &[u8], headers: &[Header], verdict: &Verdict, schemas: &Schemas) -> Outcome {
    process_keep(value, headers, verdict, schemas).0
}

/// `process`, and for a rendered line what the decode read (boxed: a batch's outcomes stay small
/// when nothing is kept).
pub fn process_keep<'a>(
    value: &'a [u8],
    headers: &[Header<'a>],
    verdict: &Verdict,
    schemas: &Schemas,
) -> (Outcome, Option<Box<Decoded<'a>>>) {
    match decode_render(value, headers, verdict, schemas) {
        Ok((line, id, legacy, decoded)) => (Outcome::Line(line, id, legacy), Some(Box::new(decoded))),
        Err(outcome) => (outcome, None),
    }
}

type Rendered<'a> = (Vec<u8>, String, bool, Decoded<'a>);

fn decode_render<'a>(
    value: &'a [u8],
    headers: &[Header<'a>],
    verdict: &Verdict,
    schemas: &Schemas,
) -> Result<Rendered<'a>, Outcome> {
    // cloudevents.parse_headers: ce_* values by name (last value, first place), content-type.
    let mut values: Vec<(&str, &str)> = Vec::with_capacity(8);
    let mut vindex: HashMap<&str, usize> = HashMap::new();
    let mut content_type: Option<&str> = None;
    for (name, raw) in headers {
        let Some(raw) = raw else { continue };
        if let Some(attr) = name.strip_prefix("ce_") {
            let Ok(text) = std::str::from_utf8(raw) else { return Err(Outcome::Error("bad-headers")) };
            let at = if values.len() <= 16 {
                values.iter().position(|(k, _)| *k == attr)
            } else {
                vindex.get(attr).copied()
            };
            match at {
                Some(i) => values[i].1 = text,
                None => {
                    values.push((attr, text));
                    if values.len() == 17 {
                        vindex = values.iter().enumerate().map(|(i, (k, _))| (*k, i)).collect();
                    } else if values.len() > 17 {
                        vindex.insert(attr, values.len() - 1);
                    }
                }
            }
        } else if *name == "content-type" {
            let Ok(text) = std::str::from_utf8(raw) else { return Err(Outcome::Error("bad-headers")) };
            content_type = Some(text);
        }
    }
    let get = |k: &str| -> Option<&str> {
        if values.len() <= 16 {
            values.iter().find(|(key, _)| *key == k).map(|(_, v)| *v)
        } else {
            vindex.get(k).map(|&i| values[i].1)
        }
    };
    let (Some(specversion), Some(id), Some(source), Some(ce_type)) = (get("specversion"), get("id"), get("source"), get("type")) else {
        return Err(Outcome::Error("bad-headers"));
    };
    if specversion != "1.0" {
        return Err(Outcome::Error("bad-headers"));
    }

    // contract.Decoder.decode_datum: framing, writer schema, body.
    if value.is_empty() {
        return Err(Outcome::Error("empty"));
    }
    if value.len() >= 2 && value[0] == 0xc3 && value[1] == 0x01 {
        // single-object
    } else if value[0] == 0x00 {
        return Err(Outcome::Defer); // Confluent framing: the writer schema comes from the registry
    } else {
        return Err(Outcome::Error("unknown-framing"));
    }
    if value.len() < 10 {
        return Err(Outcome::Error("truncated"));
    }
    let fp: [u8; 8] = value[2..10].try_into().expect("8 bytes");
    let (writer, legacy) = match schemas.by_fingerprint.get(&fp) {
        Some(&w) => (w, false),
        None => match schemas.by_legacy.get(&fp) {
            Some(&w) => (w, true),
            None => return Err(Outcome::Error("unknown-fingerprint")),
        },
    };
    let w = &schemas.writers[writer];
    let Ok(e) = event::read(value, 10, w) else { return Err(Outcome::Error("corrupt-body")) };
    if !event::valid(&e) {
        return Err(Outcome::Error("invalid-event"));
    }
    let mut data = Vec::with_capacity(value.len() * 2 + 256);
    match event::render_data(&mut data, &e, w) {
        Ok(()) => {}
        Err(JsonError::Invalid) => return Err(Outcome::Error("invalid-event")),
        Err(JsonError::Defer) => return Err(Outcome::Defer),
    }
    if id != e.event_id {
        return Err(Outcome::Error("bad-headers"));
    }

    // _jsonl.cloudevent + encode_line.
    let mut ce = Obj::new();
    ce.set("id", jstr(id));
    ce.set("specversion", jstr(specversion));
    ce.set("source", jstr(source));
    ce.set("type", jstr(ce_type));
    for k in ["time", "subject", "dataschema"] {
        if let Some(v) = get(k) {
            ce.set(k, jstr(v));
        }
    }
    for (k, v) in &values {
        if !KNOWN.contains(k) {
            ce.setdefault(k, jstr(v));
        }
    }
    for (name, raw) in headers {
        if *name == "traceparent" || *name == "tracestate" {
            if let Some(raw) = raw {
                if !raw.is_empty() {
                    // bytes.decode("ascii", "replace"): every non-ASCII byte becomes U+FFFD.
                    let text: String = raw.iter().map(|&b| if b < 0x80 { b as char } else { '\u{fffd}' }).collect();
                    ce.set(name, jstr(&text));
                }
            }
        }
    }
    if verdict.code != "unverified" {
        ce.set("govbusverdict", jstr(verdict.code));
        if verdict.flagged && !verdict.detail.is_empty() {
            ce.set("govbusverdictdetail", jstr(verdict.detail));
        }
    }
    ce.set("datacontenttype", jstr("application/json"));
    ce.set("data", data);
    let mut line = Vec::with_capacity(ce.items.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>() + 4);
    line.push(b'{');
    for (i, (k, v)) in ce.items.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        json::string(&mut line, k);
        line.push(b':');
        line.extend_from_slice(v);
    }
    line.extend_from_slice(b"}\n");
    let id = e.event_id.to_owned();
    Ok((line, id, legacy, Decoded { event: e, writer, ce: values, content_type }))
}
