//! A tier of equal-size blocks with O(1) allocate and free.
use crate::error::{Error, Result};

/// Free-list allocator over block ids `0..capacity`.
#[derive(Debug, Clone)]
pub struct BlockPool {
    free: Vec<u32>,
    in_use: Vec<bool>,
}

impl BlockPool {
    pub fn new(capacity: u32) -> Self {
        // Reverse order so that block 0 is handed out first: easier to read in logs and tests.
        BlockPool { free: (0..capacity).rev().collect(), in_use: vec![false; capacity as usize] }
    }
    pub fn capacity(&self) -> u32 {
        self.in_use.len() as u32
    }
    pub fn free_count(&self) -> u32 {
        self.free.len() as u32
    }
    pub fn used_count(&self) -> u32 {
        self.capacity() - self.free_count()
    }
    pub fn allocate(&mut self) -> Option<u32> {
        let b = self.free.pop()?;
        self.in_use[b as usize] = true;
        Some(b)
    }
    /// Takes `n` blocks or none.
    pub fn allocate_many(&mut self, n: usize) -> Option<Vec<u32>> {
        if self.free.len() < n {
            return None;
        }
        Some((0..n).map(|_| self.allocate().expect("counted")).collect())
    }
    /// Returns a block; freeing a free or unknown block is a bug in the caller and is refused.
    pub fn free(&mut self, block: u32) -> Result<()> {
        match self.in_use.get_mut(block as usize) {
            Some(used) if *used => {
                *used = false;
                self.free.push(block);
                Ok(())
            }
            Some(_) => Err(Error::invalid(format!("block {block} is already free"))),
            None => Err(Error::invalid(format!("block {block} is out of range"))),
        }
    }
    pub fn is_used(&self, block: u32) -> bool {
        self.in_use.get(block as usize).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_free_roundtrip() {
        let mut p = BlockPool::new(3);
        let a = p.allocate().unwrap();
        let b = p.allocate().unwrap();
        assert_eq!((a, b), (0, 1));
        assert_eq!(p.used_count(), 2);
        p.free(a).unwrap();
        assert!(p.free(a).is_err(), "double free refused");
        assert!(p.free(7).is_err(), "out of range refused");
        assert!(p.allocate_many(3).is_none(), "all-or-nothing");
        assert_eq!(p.allocate_many(2).unwrap().len(), 2);
        assert_eq!(p.free_count(), 0);
        assert!(p.allocate().is_none());
    }
}
