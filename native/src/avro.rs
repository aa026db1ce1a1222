//! Avro binary primitives, read exactly as fastavro 1.x reads them (its C reader): the
//! differential tests hold the two to the same verdict on every input, malformed ones included.

/// Why a body does not decode (the Python path reports fastavro's exception text instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

pub type R<T> = Result<T, Corrupt>;

pub struct Reader<'a> {
    buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], pos: usize) -> Self {
        Reader { buf, pos }
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline]
    fn byte(&mut self) -> R<u8> {
        let b = *self.buf.get(self.pos).ok_or(Corrupt)?;
        self.pos += 1;
        Ok(b)
    }

    /// A zigzag varint. fastavro has no length limit and shifts a 64-bit accumulator by
    /// `7 * i` modulo 64 (x86 semantics of its C shift), so overlong varints wrap instead of failing.
    #[inline]
    pub fn long(&mut self) -> R<i64> {
        let mut b = self.byte()? as u64;
        let mut n = b & 0x7f;
        let mut shift: u32 = 7;
        while b & 0x80 != 0 {
            b = self.byte()? as u64;
            n |= (b & 0x7f).wrapping_shl(shift);
            shift = shift.wrapping_add(7);
        }
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    pub fn boolean(&mut self) -> R<bool> {
        Ok(self.byte()? != 0) // fastavro: any non-zero byte is true
    }

    pub fn double(&mut self) -> R<f64> {
        let end = self.pos.checked_add(8).ok_or(Corrupt)?;
        let raw = self.buf.get(self.pos..end).ok_or(Corrupt)?;
        self.pos = end;
        Ok(f64::from_le_bytes(raw.try_into().map_err(|_| Corrupt)?))
    }

    pub fn bytes(&mut self) -> R<&'a [u8]> {
        let n = self.long()?;
        if n < 0 {
            return Err(Corrupt);
        }
        let end = self.pos.checked_add(n as usize).ok_or(Corrupt)?;
        let raw = self.buf.get(self.pos..end).ok_or(Corrupt)?;
        self.pos = end;
        Ok(raw)
    }

    pub fn string(&mut self) -> R<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Corrupt)
    }

    /// A union branch or enum index: fastavro indexes a Python list, so -1 is the last entry.
    pub fn index(&mut self, n: usize) -> R<usize> {
        let i = self.long()?;
        let n = n as i64;
        if (0..n).contains(&i) {
            Ok(i as usize)
        } else if (-n..0).contains(&i) {
            Ok((n + i) as usize)
        } else {
            Err(Corrupt)
        }
    }

    pub fn optional_string(&mut self) -> R<Option<&'a str>> {
        Ok(if self.index(2)? == 0 { None } else { Some(self.string()?) })
    }

    pub fn optional_double(&mut self) -> R<Option<f64>> {
        Ok(if self.index(2)? == 0 { None } else { Some(self.double()?) })
    }

    /// A map's blocks: `item` reads one key/value pair. A negative count is followed by the
    /// block's byte size (read, unused); i64::MIN stays negative after negation and reads no item.
    pub fn map<F: FnMut(&mut Self) -> R<()>>(&mut self, mut item: F) -> R<()> {
        let mut count = self.long()?;
        while count != 0 {
            if count < 0 {
                count = count.wrapping_neg();
                self.long()?;
            }
            let mut i = 0i64;
            while i < count {
                item(self)?;
                i += 1;
            }
            count = self.long()?;
        }
        Ok(())
    }
}
