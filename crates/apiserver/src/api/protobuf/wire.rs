//! The protobuf wire format: varints, field keys and length-delimited payloads.
//!
//! Only what Kubernetes messages use: wire types 0 (varint), 1 (64-bit), 2
//! (length-delimited) and 5 (32-bit). Groups (3, 4) never appear in Kubernetes protos and
//! are rejected. Every read is bounds-checked, so a body from the network can make the
//! reader fail but never panic or allocate more than the body's own size.

use super::ProtobufError;

/// Wire type of a varint-encoded scalar (int32, int64, bool).
pub(crate) const VARINT: u8 = 0;
/// Wire type of a fixed 64-bit scalar (double).
pub(crate) const FIXED64: u8 = 1;
/// Wire type of strings, bytes, messages and packed repeated scalars.
pub(crate) const LENGTH_DELIMITED: u8 = 2;
/// Wire type of a fixed 32-bit scalar (float; unused by Kubernetes but skippable).
pub(crate) const FIXED32: u8 = 5;

/// One field value as it appears on the wire, before the schema gives it meaning.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WireValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
}

impl WireValue<'_> {
    pub(crate) fn wire_type(&self) -> u8 {
        match self {
            WireValue::Varint(_) => VARINT,
            WireValue::Fixed64(_) => FIXED64,
            WireValue::Fixed32 => FIXED32,
            WireValue::Bytes(_) => LENGTH_DELIMITED,
        }
    }
}

/// A cursor over one message's bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Read a base-128 varint of at most 10 bytes.
    pub(crate) fn read_varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value: u64 = 0;
        for index in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(ProtobufError::Truncated("varint"));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::Malformed(
            "varint longer than 10 bytes".to_string(),
        ))
    }

    fn read_slice(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], ProtobufError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.buf.len())
            .ok_or(ProtobufError::Truncated(what))?;
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// Read a little-endian 64-bit value (an element of a packed double array).
    pub(crate) fn read_fixed64(&mut self) -> Result<u64, ProtobufError> {
        let bytes = self.read_slice(8, "64-bit value")?;
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(array))
    }

    /// Read the next field key and value, or `None` at the end of the message.
    pub(crate) fn read_field(&mut self) -> Result<Option<(u32, WireValue<'a>)>, ProtobufError> {
        if self.is_empty() {
            return Ok(None);
        }
        let key = self.read_varint()?;
        let tag = u32::try_from(key >> 3)
            .ok()
            .filter(|tag| *tag != 0)
            .ok_or_else(|| ProtobufError::Malformed(format!("invalid field key {key}")))?;
        let wire_type = (key & 7) as u8;
        let value = match wire_type {
            VARINT => WireValue::Varint(self.read_varint()?),
            FIXED64 => WireValue::Fixed64(self.read_fixed64()?),
            FIXED32 => {
                self.read_slice(4, "32-bit value")?;
                WireValue::Fixed32
            }
            LENGTH_DELIMITED => {
                let len = usize::try_from(self.read_varint()?)
                    .map_err(|_| ProtobufError::Truncated("length-delimited field"))?;
                WireValue::Bytes(self.read_slice(len, "length-delimited field")?)
            }
            other => {
                return Err(ProtobufError::Malformed(format!(
                    "field {tag}: unsupported wire type {other}"
                )));
            }
        };
        Ok(Some((tag, value)))
    }
}

/// Append a base-128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Append a field key.
pub(crate) fn put_key(out: &mut Vec<u8>, tag: u32, wire_type: u8) {
    put_varint(out, (u64::from(tag) << 3) | u64::from(wire_type));
}

/// Append a length-delimited field (string, bytes or an encoded message).
pub(crate) fn put_bytes(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    put_key(out, tag, LENGTH_DELIMITED);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Append a varint field; negative int32/int64 are sign-extended to 64 bits as protobuf does.
pub(crate) fn put_varint_field(out: &mut Vec<u8>, tag: u32, value: i64) {
    put_key(out, tag, VARINT);
    put_varint(out, value as u64);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn varints_round_trip_including_negative_numbers() {
        for value in [0i64, 1, 127, 128, 300, -1, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            put_varint_field(&mut out, 7, value);
            let mut reader = Reader::new(&out);
            let Some((7, WireValue::Varint(read))) = reader.read_field().unwrap() else {
                panic!("expected field 7 as a varint");
            };
            assert_eq!(read as i64, value);
            assert!(reader.is_empty());
        }
    }

    #[test]
    fn truncated_and_oversized_inputs_are_errors() {
        assert!(Reader::new(&[0x08]).read_field().is_err());
        assert!(Reader::new(&[0x08, 0x80]).read_field().is_err());
        assert!(Reader::new(&[0x0a, 0x05, b'a']).read_field().is_err());
        // a length near u64::MAX must not overflow the bounds check
        let huge = [
            0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert!(Reader::new(&huge).read_field().is_err());
        assert!(
            Reader::new(&[0x0b]).read_field().is_err(),
            "groups are rejected"
        );
        assert!(
            Reader::new(&[0x00]).read_field().is_err(),
            "tag 0 is invalid"
        );
    }
}
