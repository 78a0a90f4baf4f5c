//! Sentinels shared by the tree and the prefix index, which must not depend on each other.

/// No node, block or slot: the empty value of every `u32` id.
pub const NONE: u32 = u32::MAX;
