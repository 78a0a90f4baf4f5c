//! Each batch's events (one per readiness group, the last completing the batch), their reuse
//! once retired, and waiting on one without the backend.
use super::context::{bind, KeepCurrent};
use super::probe::dev_err;
use super::CudaBackend;
use crate::backend::{poll_until, BatchId, BatchWaiter, Direction};
use crate::error::Result;
use cudarc::driver::{CudaContext, CudaEvent};
use std::sync::Arc;
use std::time::Instant;

/// Waits on one batch's event without the backend. An error counts as finished: the backend's
/// `poll` reports it.
pub(super) struct EventWaiter {
    /// Always `Some` until the drop, which releases both with the caller's context kept.
    pub(super) held: Option<(Arc<CudaContext>, Arc<CudaEvent>)>,
}

impl BatchWaiter for EventWaiter {
    fn wait_until(&self, deadline: Instant) -> bool {
        let Some((ctx, event)) = &self.held else { return true };
        let Ok(_keep) = KeepCurrent::save() else { return true };
        if bind(ctx).is_err() {
            return true;
        }
        poll_until(deadline, || event.try_is_complete().unwrap_or(true))
    }
}

impl Drop for EventWaiter {
    fn drop(&mut self) {
        // A waiter can be the last owner of its event and of the context (the backend dropped
        // first): destroying them binds the context and releases it, which must not leave a
        // released context current on the caller's thread.
        let keep = KeepCurrent::save().ok();
        self.held = None;
        drop(keep);
    }
}

impl CudaBackend {
    /// Records an event after the work just enqueued on `direction`'s stream.
    pub(super) fn record_event(&mut self, direction: Direction) -> Result<Arc<CudaEvent>> {
        let free_spare = self.spare_events.iter().position(|e| Arc::strong_count(e) == 1);
        let event = match free_spare {
            Some(i) => self.spare_events.swap_remove(i),
            None => Arc::new(self.ctx.new_event(None).map_err(|e| dev_err("cuEventCreate", e))?),
        };
        if let Err(e) = event.record(self.stream(direction)) {
            self.spare_events.push(event);
            return Err(dev_err("cuEventRecord", e));
        }
        Ok(event)
    }

    /// Records a new batch's event after the work just enqueued.
    pub(super) fn finish_batch(&mut self, direction: Direction) -> Result<BatchId> {
        let event = self.record_event(direction)?;
        Ok(self.register(vec![event]))
    }

    /// A new batch completed by `events` (one per group, in stream order).
    pub(super) fn register(&mut self, events: Vec<Arc<CudaEvent>>) -> BatchId {
        if let (Some(slot), Some(last)) = (self.staged, events.last()) {
            self.staging.busy_until(slot, last.clone());
            self.staged = None;
        }
        let id = self.next_batch;
        self.next_batch += 1;
        self.batches.insert(id, events);
        id
    }
}
