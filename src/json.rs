//! JSON output for the request path: exactly the bytes `serde_json::to_vec` writes (compact,
//! keys in the order given, the same escapes, `ryu`'s floats, `serde_json::Number`'s digits as
//! they are), with a string's clean stretches found eight bytes at a time.
//!
//! Why not `serde_json::to_vec`: it checks a string one byte at a time against its escape
//! table, and every JSON a request writes (the upstream body with the prompt in it, the log
//! line, the error body) is mostly strings. Under WebAssembly, with an engine that checks every
//! memory access, that loop cost 25 to 35 instructions a byte (docs/performance.md). Reading
//! JSON stays serde_json's; `tests` compare this writer's output with serde_json's.

use serde::ser::{self, Serialize};

/// A `T` read only from a JSON object: serde's derived structs also read their fields, in
/// order, from a JSON array (`[5, 6, 11]` as a usage, `[{...}]` as a chunk), which no provider
/// sends for one. Every probe of an upstream's answer, event or usage reads through this, and
/// so does every object inside one that the probe reads (a usage's details, a Responses event's
/// `response`, an Anthropic event's `message` or `delta`).
pub struct Object<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
            .map(Object)
    }
}

/// Why a value could not be written: a map key that is not a string, or a type's own error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

type Result<T> = std::result::Result<T, Error>;

/// `value` as compact JSON, as `serde_json::to_vec` writes it.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    to_string(value).map(String::into_bytes)
}

/// `value` as compact JSON, as `serde_json::to_string` writes it.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    let mut out = String::with_capacity(256);
    value.serialize(&mut Writer { out: &mut out })?;
    Ok(out)
}

/// serde_json's name for its arbitrary-precision number (the `arbitrary_precision` feature):
/// a struct of one field, the number's digits, written as they are.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// A byte of one in each of a word's eight bytes, and each byte's high bit: the constants of
/// the word-at-a-time byte tests (here and in `audit::visible_ascii`).
pub(crate) const ONES: u64 = 0x0101_0101_0101_0101;
pub(crate) const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether serde_json escapes a byte in a string: a control character, `"` or `\`.
#[inline]
fn must_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// [`must_escape`] for eight bytes at once: each byte of `x` that must be escaped has its high
/// bit set in the result; the lowest set bit is the first such byte (borrows only run upward).
#[inline]
fn needs_escape(x: u64) -> u64 {
    let control = x.wrapping_sub(0x20 * ONES) & !x;
    let q = x ^ (b'"' as u64 * ONES);
    let quote = q.wrapping_sub(ONES) & !q;
    let s = x ^ (b'\\' as u64 * ONES);
    let slash = s.wrapping_sub(ONES) & !s;
    (control | quote | slash) & HIGH
}

/// What serde_json writes for a byte that must be escaped (an ASCII byte).
fn escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.push_str("\\\""),
        b'\\' => out.push_str("\\\\"),
        0x08 => out.push_str("\\b"),
        0x0c => out.push_str("\\f"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        b'\t' => out.push_str("\\t"),
        _ => {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// `s` as a JSON string, quotes included.
pub fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    write_inner(out, s);
    out.push('"');
}

/// `s` as a JSON string without its quotes. Most strings need no escape at all, and
/// [`clean`] says so in a few words' tests; the others are copied in clean stretches.
#[inline]
fn write_inner(out: &mut String, s: &str) {
    if clean(s.as_bytes()) {
        out.push_str(s);
    } else {
        write_escaped(out, s);
    }
}

/// Whether no byte of `b` must be escaped, tested a word at a time: eight bytes, the last
/// word overlapping the one before it, a string of four to seven bytes as its first and
/// last four.
#[inline]
fn clean(b: &[u8]) -> bool {
    let word = |w: &[u8; 8]| needs_escape(u64::from_le_bytes(*w));
    if let Some(last) = b.last_chunk::<8>() {
        let mut found = word(last);
        let mut rest = b;
        while let Some((w, tail)) = rest.split_first_chunk::<8>() {
            found |= word(w);
            rest = tail;
        }
        return found == 0;
    }
    if let (Some(first), Some(last)) = (b.first_chunk::<4>(), b.last_chunk::<4>()) {
        let halves =
            u64::from(u32::from_le_bytes(*first)) | u64::from(u32::from_le_bytes(*last)) << 32;
        return needs_escape(halves) == 0;
    }
    !b.iter().any(|&c| must_escape(c))
}

/// `s` without its quotes, escaped as serde_json escapes it. The bytes escaped are ASCII, so
/// every run between them is whole characters.
fn write_escaped(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while let Some(w) = bytes.get(i..i + 8) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(w);
        let m = needs_escape(u64::from_le_bytes(eight));
        if m == 0 {
            i += 8;
            continue;
        }
        let at = i + (m.trailing_zeros() / 8) as usize;
        out.push_str(&s[start..at]);
        escape(out, bytes[at]);
        i = at + 1;
        start = i;
    }
    for (at, &b) in bytes.iter().enumerate().skip(i) {
        if must_escape(b) {
            out.push_str(&s[start..at]);
            escape(out, b);
            start = at + 1;
        }
    }
    out.push_str(&s[start..]);
}

fn write_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(v));
    } else {
        out.push_str("null");
    }
}

fn write_f32(out: &mut String, v: f32) {
    if v.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(v));
    } else {
        out.push_str("null");
    }
}

struct Writer<'a> {
    out: &'a mut String,
}

impl Writer<'_> {
    /// An enum variant with content is written as `{"variant":content}`; this opens it.
    fn open_variant(&mut self, variant: &str) {
        self.out.push('{');
        write_str(self.out, variant);
        self.out.push(':');
    }

    fn int(&mut self, v: impl itoa::Integer) {
        self.out.push_str(itoa::Buffer::new().format(v));
    }
}

/// A sequence or map being written: whether a comma goes before the next element, and for
/// serde_json's number, that its one field is written as it is.
pub struct Compound<'w, 'a> {
    w: &'w mut Writer<'a>,
    first: bool,
    /// Closes a `{"variant":` opened for an enum variant, after the container's own close.
    variant: bool,
    number: bool,
}

impl<'w, 'a> Compound<'w, 'a> {
    fn open(w: &'w mut Writer<'a>, bracket: u8, variant: bool) -> Self {
        w.out.push(char::from(bracket));
        Compound {
            w,
            first: true,
            variant,
            number: false,
        }
    }

    fn comma(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.w.out.push(',');
        }
    }

    fn close(self, bracket: u8) {
        self.w.out.push(char::from(bracket));
        if self.variant {
            self.w.out.push('}');
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.comma();
        value.serialize(&mut *self.w)
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<()> {
        self.w.out.reserve(key.len() + 4);
        self.comma();
        let out = &mut *self.w.out;
        out.push('"');
        write_inner(out, key);
        out.push_str("\":");
        value.serialize(&mut *self.w)
    }
}

impl<'w, 'a> ser::Serializer for &'w mut Writer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'w, 'a>;
    type SerializeTuple = Compound<'w, 'a>;
    type SerializeTupleStruct = Compound<'w, 'a>;
    type SerializeTupleVariant = Compound<'w, 'a>;
    type SerializeMap = Compound<'w, 'a>;
    type SerializeStruct = Compound<'w, 'a>;
    type SerializeStructVariant = Compound<'w, 'a>;

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.out.push_str(if v { "true" } else { "false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<()> {
        self.int(v);
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Result<()> {
        self.int(v);
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Result<()> {
        self.int(v);
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<()> {
        self.int(v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<()> {
        self.int(v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<()> {
        self.int(v);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Result<()> {
        self.int(v);
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Result<()> {
        self.int(v);
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<()> {
        self.int(v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<()> {
        self.int(v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<()> {
        write_f32(self.out, v);
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<()> {
        write_f64(self.out, v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<()> {
        write_str(self.out, v.encode_utf8(&mut [0u8; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        write_str(self.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        let mut seq = Compound::open(self, b'[', false);
        for b in v {
            seq.comma();
            seq.w.int(*b);
        }
        seq.close(b']');
        Ok(())
    }
    fn serialize_none(self) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<()> {
        self.out.push_str("null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<()> {
        write_str(self.out, variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<()> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<()> {
        self.open_variant(variant);
        value.serialize(&mut *self)?;
        self.out.push('}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'w, 'a>> {
        Ok(Compound::open(self, b'[', false))
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'w, 'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Compound<'w, 'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'w, 'a>> {
        self.open_variant(variant);
        Ok(Compound::open(self, b'[', true))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'w, 'a>> {
        Ok(Compound::open(self, b'{', false))
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Compound<'w, 'a>> {
        if name == NUMBER_TOKEN {
            return Ok(Compound {
                w: self,
                first: true,
                variant: false,
                number: true,
            });
        }
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'w, 'a>> {
        self.open_variant(variant);
        Ok(Compound::open(self, b'{', true))
    }
}

/// The sequence-like compounds: each element after a comma, `]` at the end.
macro_rules! sequence {
    ($($trait:ident::$method:ident),*) => {
        $(impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = Error;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
                self.element(value)
            }
            fn end(self) -> Result<()> {
                self.close(b']');
                Ok(())
            }
        })*
    };
}

sequence!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.comma();
        key.serialize(Key(self.w.out))?;
        self.w.out.push(':');
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut *self.w)
    }
    fn end(self) -> Result<()> {
        self.close(b'}');
        Ok(())
    }
}

/// The struct-like compounds: `"key":value` after a comma, `}` at the end; serde_json's
/// number (never a variant) is its one field's digits.
macro_rules! structure {
    ($($trait:ident),*) => {
        $(impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<()> {
                if self.number {
                    return value.serialize(Digits(self.w.out));
                }
                self.field(key, value)
            }
            fn end(self) -> Result<()> {
                if !self.number {
                    self.close(b'}');
                }
                Ok(())
            }
        })*
    };
}

structure!(SerializeStruct, SerializeStructVariant);

fn key_must_be_a_string() -> Error {
    Error("key must be a string".into())
}

/// A map key: a string, or what serde_json writes as one (a number, a bool, a char, a unit
/// variant's name, a newtype around one of these).
struct Key<'a>(&'a mut String);

impl Key<'_> {
    fn quoted(self, digits: &str) -> Result<()> {
        self.0.push('"');
        self.0.push_str(digits);
        self.0.push('"');
        Ok(())
    }
}

/// Serializer methods that refuse: a key, or a number's digits, that is not one.
macro_rules! refuse {
    ($err:expr) => {
        type SerializeSeq = ser::Impossible<(), Error>;
        type SerializeTuple = ser::Impossible<(), Error>;
        type SerializeTupleStruct = ser::Impossible<(), Error>;
        type SerializeTupleVariant = ser::Impossible<(), Error>;
        type SerializeMap = ser::Impossible<(), Error>;
        type SerializeStruct = ser::Impossible<(), Error>;
        type SerializeStructVariant = ser::Impossible<(), Error>;
        fn serialize_bytes(self, _: &[u8]) -> Result<()> {
            Err($err)
        }
        fn serialize_none(self) -> Result<()> {
            Err($err)
        }
        fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<()> {
            Err($err)
        }
        fn serialize_unit(self) -> Result<()> {
            Err($err)
        }
        fn serialize_unit_struct(self, _: &'static str) -> Result<()> {
            Err($err)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<()> {
            Err($err)
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq> {
            Err($err)
        }
        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple> {
            Err($err)
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct> {
            Err($err)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant> {
            Err($err)
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap> {
            Err($err)
        }
        fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct> {
            Err($err)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant> {
            Err($err)
        }
    };
}

macro_rules! quoted_ints {
    ($($f:ident: $t:ty),*) => {
        $(fn $f(self, v: $t) -> Result<()> {
            self.quoted(itoa::Buffer::new().format(v))
        })*
    };
}

impl ser::Serializer for Key<'_> {
    type Ok = ();
    type Error = Error;
    refuse!(key_must_be_a_string());
    quoted_ints!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128);

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.quoted(if v { "true" } else { "false" })
    }
    fn serialize_f32(self, v: f32) -> Result<()> {
        if !v.is_finite() {
            return Err(Error("float key must be finite".into()));
        }
        self.quoted(ryu::Buffer::new().format_finite(v))
    }
    fn serialize_f64(self, v: f64) -> Result<()> {
        if !v.is_finite() {
            return Err(Error("float key must be finite".into()));
        }
        self.quoted(ryu::Buffer::new().format_finite(v))
    }
    fn serialize_char(self, v: char) -> Result<()> {
        write_str(self.0, v.encode_utf8(&mut [0u8; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<()> {
        write_str(self.0, v);
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<()> {
        write_str(self.0, variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<()> {
        v.serialize(self)
    }
}

/// serde_json's number's digits, written as they are.
struct Digits<'a>(&'a mut String);

fn invalid_number() -> Error {
    Error("invalid number".into())
}

macro_rules! refuse_scalars {
    ($($f:ident: $t:ty),*) => {
        $(fn $f(self, _: $t) -> Result<()> {
            Err(invalid_number())
        })*
    };
}

impl ser::Serializer for Digits<'_> {
    type Ok = ();
    type Error = Error;
    refuse!(invalid_number());
    refuse_scalars!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16,
        serialize_i32: i32, serialize_i64: i64, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_f32: f32, serialize_f64: f64,
        serialize_char: char);

    fn serialize_str(self, v: &str) -> Result<()> {
        self.0.push_str(v);
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<()> {
        Err(invalid_number())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, _: &T) -> Result<()> {
        Err(invalid_number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Serialize;
    use serde_json::{json, Value};

    fn same<T: Serialize + ?Sized + std::fmt::Debug>(v: &T) {
        assert_eq!(
            to_string(v).unwrap(),
            serde_json::to_string(v).unwrap(),
            "{v:?}"
        );
    }

    #[test]
    fn every_byte_at_every_place_is_escaped_as_serde_json_escapes_it() {
        for len in 0..=24usize {
            let base: Vec<u8> = (0..len).map(|i| b'a' + (i * 7 % 26) as u8).collect();
            for at in 0..len {
                for byte in 0..=0x7fu8 {
                    let mut v = base.clone();
                    v[at] = byte;
                    same(std::str::from_utf8(&v).unwrap());
                    // A second byte to escape right after the first: borrows between them.
                    if at + 1 < len {
                        v[at + 1] = byte.wrapping_add(1) & 0x7f;
                        same(std::str::from_utf8(&v).unwrap());
                    }
                }
            }
        }
        same("naïve café: 東京 \u{7f} \u{1f600} \"q\" \\ \u{2028}");
    }

    #[test]
    fn values_of_every_kind_are_written_as_serde_json_writes_them() {
        let v = json!({
            "z": null, "a": [true, false, 0, -1, 18446744073709551615u64, -9223372036854775808i64,
            0.0, -0.0, 1.5, 1e300, 2.5e-8, 0.1, "s"],
            "nested": {"": {}, "e": [], "x\n": [[{}]]},
            "big": serde_json::from_str::<Value>("123456789012345678901234567890.5e10").unwrap(),
        });
        same(&v);
        same(&serde_json::from_str::<Value>("[1.0, 100000000000000000000000, -0]").unwrap());

        #[derive(Serialize, Debug)]
        enum E {
            Unit,
            New(u8),
            Tuple(u8, &'static str),
            Struct { a: Option<u8>, b: Vec<u8> },
        }
        #[derive(Serialize, Debug)]
        struct Unit;
        #[derive(Serialize, Debug)]
        struct Wrap(String);
        #[derive(Serialize, Debug)]
        struct Pair(u8, i8);
        #[derive(Serialize, Debug)]
        struct S {
            e: Vec<E>,
            #[serde(skip_serializing_if = "Option::is_none")]
            skipped: Option<u8>,
            none: Option<u8>,
            unit: Unit,
            wrap: Wrap,
            pair: Pair,
            tuple: (u8, char, f32),
            #[serde(with = "serde_bytes_as_seq")]
            bytes: Vec<u8>,
            f: f64,
            nan: f64,
            inf: f32,
            map: std::collections::BTreeMap<u32, bool>,
            bools: std::collections::BTreeMap<bool, u8>,
            chars: std::collections::BTreeMap<char, u8>,
            #[serde(rename = "re\"named")]
            renamed: u128,
            i: i128,
        }
        mod serde_bytes_as_seq {
            pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(v)
            }
        }
        same(&S {
            e: vec![
                E::Unit,
                E::New(7),
                E::Tuple(1, "t"),
                E::Struct { a: None, b: vec![] },
                E::Struct {
                    a: Some(2),
                    b: vec![3, 4],
                },
            ],
            skipped: None,
            none: None,
            unit: Unit,
            wrap: Wrap("w".into()),
            pair: Pair(1, -1),
            tuple: (1, '"', 0.1),
            bytes: vec![0, 255],
            f: 0.000_012_5,
            nan: f64::NAN,
            inf: f32::INFINITY,
            map: [(1, true), (20, false)].into_iter().collect(),
            bools: [(true, 1)].into_iter().collect(),
            chars: [('\n', 1)].into_iter().collect(),
            renamed: u128::MAX,
            i: i128::MIN,
        });
    }

    #[test]
    fn a_key_that_is_not_a_string_is_an_error_as_in_serde_json() {
        let m: std::collections::BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into_iter().collect();
        assert!(serde_json::to_string(&m).is_err());
        assert_eq!(
            to_string(&m).unwrap_err().to_string(),
            "key must be a string"
        );
        let f: std::collections::BTreeMap<String, f64> = [("k".into(), 1.0)].into_iter().collect();
        same(&f);
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".*".prop_map(Value::String),
            "[\\x00-\\x7f]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec(("[\\x00-\\x7f]{0,12}|.{0,6}", inner), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_value_is_written_as_serde_json_writes_it(v in any_json()) {
            prop_assert_eq!(to_vec(&v).unwrap(), serde_json::to_vec(&v).unwrap());
        }

        #[test]
        fn any_string_is_written_as_serde_json_writes_it(s in ".*", t in "[\\x00-\\x7f]*") {
            prop_assert_eq!(to_string(&s).unwrap(), serde_json::to_string(&s).unwrap());
            prop_assert_eq!(to_string(&t).unwrap(), serde_json::to_string(&t).unwrap());
        }
    }
}
