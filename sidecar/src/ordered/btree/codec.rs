//! A small binary codec for pages and root records: varints, length-prefixed bytes, and a
//! CRC-32C trailer so that a damaged item decodes to an error, never to wrong data.

/// Why bytes read from memcached could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("item ends early")]
    Truncated,
    #[error("checksum mismatch")]
    Checksum,
    #[error("unknown tag {0}")]
    Tag(u8),
    #[error("key or value is not UTF-8")]
    Utf8,
    #[error("{0}")]
    Invalid(&'static str),
}

pub type DecodeResult<T> = Result<T, DecodeError>;

/// Appends fields to a buffer; [`Writer::finish`] seals it with the checksum.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(capacity: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(capacity + 4),
        }
    }

    pub fn u8(&mut self, value: u8) {
        self.buf.push(value);
    }

    pub fn u32(&mut self, value: u32) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    pub fn u64(&mut self, value: u64) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    pub fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.buf.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
    }

    pub fn bytes(&mut self, value: &[u8]) {
        self.varint(value.len() as u64);
        self.buf.extend_from_slice(value);
    }

    pub fn raw(&mut self, value: &[u8]) {
        self.buf.extend_from_slice(value);
    }

    pub fn finish(mut self) -> Vec<u8> {
        let crc = crc32c::crc32c(&self.buf);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// Bytes a varint of `value` takes, for size accounting without encoding.
pub fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads fields back from a checksummed item.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Check the trailer and read the body.
    pub fn open(item: &'a [u8]) -> DecodeResult<Reader<'a>> {
        let split = item.len().checked_sub(4).ok_or(DecodeError::Truncated)?;
        let (body, trailer) = item.split_at(split);
        let mut stored = [0u8; 4];
        stored.copy_from_slice(trailer);
        if crc32c::crc32c(body) != u32::from_le_bytes(stored) {
            return Err(DecodeError::Checksum);
        }
        Ok(Reader { rest: body })
    }

    fn take(&mut self, len: usize) -> DecodeResult<&'a [u8]> {
        if self.rest.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> DecodeResult<u32> {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(bytes))
    }

    pub fn u64(&mut self) -> DecodeResult<u64> {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(bytes))
    }

    pub fn varint(&mut self) -> DecodeResult<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(DecodeError::Invalid("varint too long"))
    }

    pub fn len(&mut self) -> DecodeResult<usize> {
        let len = self.varint()?;
        usize::try_from(len)
            .ok()
            .filter(|len| *len <= self.rest.len())
            .ok_or(DecodeError::Truncated)
    }

    pub fn bytes(&mut self) -> DecodeResult<&'a [u8]> {
        let len = self.len()?;
        self.take(len)
    }

    pub fn string(&mut self) -> DecodeResult<String> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Utf8)
    }

    /// Everything left of the body.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    pub fn end(&self) -> DecodeResult<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Invalid("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let mut writer = Writer::default();
        writer.u8(7);
        writer.varint(300);
        writer.varint(u64::MAX);
        writer.bytes(b"hello");
        writer.u64(42);
        let item = writer.finish();
        let mut reader = Reader::open(&item).unwrap();
        assert_eq!(reader.u8().unwrap(), 7);
        assert_eq!(reader.varint().unwrap(), 300);
        assert_eq!(reader.varint().unwrap(), u64::MAX);
        assert_eq!(reader.string().unwrap(), "hello");
        assert_eq!(reader.u64().unwrap(), 42);
        reader.end().unwrap();
        assert_eq!(varint_len(300), 2);
        assert_eq!(varint_len(0), 1);
        let mut damaged = item.clone();
        damaged[3] ^= 1;
        assert!(matches!(Reader::open(&damaged), Err(DecodeError::Checksum)));
        assert!(matches!(
            Reader::open(&item[..2]),
            Err(DecodeError::Truncated)
        ));
    }
}
