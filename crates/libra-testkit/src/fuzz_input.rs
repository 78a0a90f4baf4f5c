//! The fuzz harnesses' view of their input: a reader that hands out bytes, integers and
//! sizes one at a time, and zeros once the input runs out, so every input is a valid run.

/// Reads the input a byte at a time; zeros once it runs out.
pub(crate) struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }
    pub(crate) fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    pub(crate) fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub(crate) fn u64(&mut self) -> u64 {
        (0..8).fold(0u64, |acc, _| (acc << 8) | self.u8() as u64)
    }
    pub(crate) fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// A size that is usually small and sometimes extreme.
    pub(crate) fn size(&mut self, small: usize) -> usize {
        match self.u8() {
            0..=239 => self.u8() as usize % (small + 1),
            240..=247 => usize::MAX,
            248..=251 => usize::MAX / 4 + 1,
            _ => 1 << 24 | 1,
        }
    }
}
