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

    pub fn u64(&mut self, v: u64) {
        self.varint(u128::from(v));
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
        self.varint(((m << 1) ^ (m >> 127)) as u128);
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
        u64::try_from(self.varint()?).map_err(|_| CodecError::Corrupt("integer out of range"))
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
        let z = self.varint()?;
        let m = ((z >> 1) as i128) ^ -((z & 1) as i128);
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

    #[test]
    fn round_trips() {
        let mut w = Writer::default();
        w.u8(7);
        w.u64(300);
        w.i64(-123_456_789);
        w.i64(i64::MIN);
        w.str("счёт-1");
        for d in ["0", "-12.34", "79228162514264337593543950335", "0.000001"] {
            w.decimal(Decimal::from_str(d).unwrap());
        }
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u64(), Ok(300));
        assert_eq!(r.i64(), Ok(-123_456_789));
        assert_eq!(r.i64(), Ok(i64::MIN));
        assert_eq!(r.str(), Ok("счёт-1"));
        for d in ["0", "-12.34", "79228162514264337593543950335", "0.000001"] {
            assert_eq!(r.decimal(), Ok(Decimal::from_str(d).unwrap()));
        }
        assert!(r.is_empty());
        assert_eq!(r.u8(), Err(CodecError::Truncated));
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
