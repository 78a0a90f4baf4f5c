//! A bounded log of residency changes that an engine drains, in the spirit of TensorRT-LLM's
//! KV-cache events, so a cluster router can send requests to the instance holding a prefix.
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A block entered the cache (on the GPU).
    Stored,
    /// A block left the cache entirely.
    Removed,
    /// A block moved to the host tier.
    ToHost,
    /// A block moved (back) to the GPU tier.
    ToGpu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// The block's prefix key (the adapter's chain root for adapter events).
    pub block_hash: u128,
    pub adapter_id: u64,
    /// The event concerns an adapter's weights rather than a KV block.
    pub adapter: bool,
}

pub struct EventLog {
    enabled: bool,
    capacity: usize,
    queue: VecDeque<Event>,
    dropped: u64,
}

impl EventLog {
    pub fn new(enabled: bool, capacity: usize) -> Self {
        EventLog { enabled, capacity: capacity.max(1), queue: VecDeque::new(), dropped: 0 }
    }
    pub fn enabled(&self) -> bool {
        self.enabled
    }
    pub fn push(&mut self, e: Event) {
        if self.queue.len() == self.capacity {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(e);
    }
    pub fn drain(&mut self, max: usize) -> Vec<Event> {
        let n = max.min(self.queue.len());
        self.queue.drain(..n).collect()
    }
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}
