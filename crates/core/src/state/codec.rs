//! A small binary codec for stored values: LEB128 varints, length-prefixed
//! strings, decimals as (scale, zigzag mantissa). Reading never panics:
//! corrupt or truncated bytes are a typed error.

use rust_decimal::Decimal;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("stored value is truncated")]
    Truncated,
    #[error("stored value has format version {0}, this build reads version {1}")]
    Version(u8, u8),
    #[error("stored value is corrupt: {0}")]
    Corrupt(&'static str),
}

#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Writer {
        Writer { buf: Vec::with_capacity(n) }
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn varint(&mut self, mut v: u128) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub fn u64(&mut self, mut v: u64) {
        // The same bytes as `varint`, without 128-bit shifts: lengths,
        // counts and offsets are written for every value stored.
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub fn decimal(&mut self, d: Decimal) {
        self.u8(d.scale() as u8);
        let m = d.mantissa();
        let zigzag = ((m << 1) ^ (m >> 127)) as u128;
        match u64::try_from(zigzag) {
            Ok(small) => self.u64(small),
            Err(_) => self.varint(zigzag),
        }
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Checks the leading format version byte.
    pub fn version(&mut self, expected: u8) -> Result<(), CodecError> {
        match self.u8()? {
            v if v == expected => Ok(()),
            v => Err(CodecError::Version(v, expected)),
        }
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.pos).ok_or(CodecError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u128, CodecError> {
        let mut v: u128 = 0;
        for shift in (0..128).step_by(7) {
            let b = self.u8()?;
            v |= u128::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Corrupt("varint too long"))
    }

    pub fn u64(&mut self) -> Result<u64, CodecError> {
        // One byte (counts, lengths, small numbers) is the common case.
        match self.buf.get(self.pos) {
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                Ok(u64::from(b))
            }
            _ => u64::try_from(self.varint()?).map_err(|_| CodecError::Corrupt("integer out of range")),
        }
    }

    pub fn u32(&mut self) -> Result<u32, CodecError> {
        u32::try_from(self.u64()?).map_err(|_| CodecError::Corrupt("integer out of range"))
    }

    pub fn i64(&mut self) -> Result<i64, CodecError> {
        let z = self.u64()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    pub fn len(&mut self) -> Result<usize, CodecError> {
        let n = self.u64()? as usize;
        if n > self.buf.len() - self.pos.min(self.buf.len()) {
            return Err(CodecError::Truncated);
        }
        Ok(n)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.len()?;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn str(&mut self) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| CodecError::Corrupt("string is not UTF-8"))
    }

    pub fn decimal(&mut self) -> Result<Decimal, CodecError> {
        let scale = u32::from(self.u8()?);
        let m = match self.buf.get(self.pos) {
            // Most amounts' zigzag mantissas fit in one byte.
            Some(&b) if b < 0x80 => {
                self.pos += 1;
                i128::from(b >> 1) ^ -i128::from(b & 1)
            }
            _ => {
                let z = self.varint()?;
                ((z >> 1) as i128) ^ -((z & 1) as i128)
            }
        };
        Decimal::try_from_i128_with_scale(m, scale).map_err(|_| CodecError::Corrupt("decimal out of range"))
    }

    /// A count of items that follow, each at least one byte long.
    pub fn count(&mut self) -> Result<usize, CodecError> {
        self.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    /// Mantissas of one byte, of several, and beyond 64 bits, both signs.
    const DECIMALS: [&str; 9] = [
        "0",
        "-1",
        "63",
        "-64",
        "64",
        "-12.34",
        "79228162514264337593543950335",
        "-18446744073709551616",
        "0.000001",
    ];

    #[test]
    fn round_trips() {
        let mut w = Writer::default();
        w.u8(7);
        w.u64(300);
        w.i64(-123_456_789);
        w.i64(i64::MIN);
        w.str("счёт-1");
        for d in DECIMALS {
            w.decimal(Decimal::from_str(d).unwrap());
        }
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u64(), Ok(300));
        assert_eq!(r.i64(), Ok(-123_456_789));
        assert_eq!(r.i64(), Ok(i64::MIN));
        assert_eq!(r.str(), Ok("счёт-1"));
        for d in DECIMALS {
            assert_eq!(r.decimal(), Ok(Decimal::from_str(d).unwrap()));
        }
        assert!(r.is_empty());
        assert_eq!(r.u8(), Err(CodecError::Truncated));
    }

    #[test]
    fn u64_writes_the_bytes_of_varint_and_reads_them_back() {
        for v in [0, 1, 127, 128, 300, 16_383, 16_384, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            let (mut fast, mut wide) = (Writer::default(), Writer::default());
            fast.u64(v);
            wide.varint(u128::from(v));
            assert_eq!(fast.buf, wide.buf, "{v}");
            assert_eq!(Reader::new(&fast.buf).u64(), Ok(v));
        }
        let mut too_big = Writer::default();
        too_big.varint(u128::from(u64::MAX) + 1);
        assert!(Reader::new(&too_big.buf).u64().is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&[0xffu8; 40][..], &[5, 0xff][..], &[0x80][..], &[200, 1][..]] {
            let mut r = Reader::new(bytes);
            let _ = r.str();
            let mut r = Reader::new(bytes);
            let _ = r.decimal();
            let mut r = Reader::new(bytes);
            let _ = r.u64();
        }
    }
}
