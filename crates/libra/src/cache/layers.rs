//! Layer-wise readiness: a swap-in completes per layer group (a run of segments), so an engine
//! can run the first layers of a prefill while the later layers' KV are still on the link.
//! A request is ready up to group g when every copy it waits for has landed group g: its
//! swap-ins (its own and those it shares with other requests) group by group, and its adapter's
//! upload group by group too when adapters are registered layer by layer
//! (`CacheConfig::layered_adapters`), else only as a whole.
use super::core::{CacheCore, Flight};
use super::requests::Readiness;
use crate::backend::{Backend, SegmentGroups};
use crate::error::{Error, Result};

/// Readiness of a request's blocks, per layer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReadiness {
    pub readiness: Readiness,
    /// Leading groups usable now: `groups` when ready, 0 when failed.
    pub ready_groups: u32,
    /// Layer groups of the cache (at least 1).
    pub groups: u32,
}

impl CacheCore {
    /// The readiness groups swap-ins are submitted with, over the backend's segments.
    pub(crate) fn layer_groups(&self, io: &dyn Backend) -> SegmentGroups {
        SegmentGroups::new(io.gpu_layout().segments().len(), self.cfg.segments_per_group)
    }

    /// Whether a copy toward the GPU lands layer group by layer group: every swap-in, and an
    /// adapter upload when adapters are registered layer by layer.
    fn lands_in_groups(&self, flight: &Flight) -> bool {
        match flight {
            Flight::ToGpu(_) => true,
            Flight::Upload(_) => self.cfg.layered_adapters,
            _ => false,
        }
    }

    /// Whether the request's blocks are usable, and up to which layer group; finishes completed
    /// copies first. A request whose copy fails after some groups landed is `Failed` with no
    /// ready group: what was computed from those groups must be thrown away with the request.
    pub fn poll_groups(&mut self, io: &mut dyn Backend, request: u64) -> Result<GroupReadiness> {
        let readiness = self.poll(io, request)?;
        let groups = self.layer_groups(io).count();
        let ready_groups = match readiness {
            Readiness::Ready => groups,
            Readiness::Failed(_) => 0,
            Readiness::Pending => {
                let slot = self.request_slot(request)?;
                let waits: Vec<_> = self.req(slot).waits.iter().copied().collect();
                waits
                    .into_iter()
                    .map(|b| match self.inflight.get(&b) {
                        Some(f) if self.lands_in_groups(f) => io.groups_done(b, groups).min(groups),
                        _ => 0,
                    })
                    .min()
                    .unwrap_or(groups)
            }
        };
        Ok(GroupReadiness { readiness, ready_groups, groups })
    }

    /// A handle (CUevent under CUDA) the engine's stream can wait on before its kernels of layer
    /// group `group` read the request's blocks, or NULL when nothing is pending or the backend
    /// has no events. Every copy a request waits for goes to the GPU, and copies to the GPU run
    /// in submission order on one stream, so the group's event of the latest one covers every
    /// earlier one.
    pub fn group_event(&self, io: &dyn Backend, request: u64, group: u32) -> Result<*mut std::ffi::c_void> {
        let groups = self.layer_groups(io).count();
        if group >= groups {
            return Err(Error::invalid(format!(
                "`group` is {group} but the cache has {groups} layer group(s)"
            )));
        }
        let slot = self.request_slot(request)?;
        Ok(match self.req(slot).waits.iter().max() {
            None => std::ptr::null_mut(),
            Some(&b) => match self.inflight.get(&b) {
                Some(f) if self.lands_in_groups(f) => io.group_event(b, group),
                _ => io.batch_event(b),
            },
        })
    }
}

impl CacheCore {
    /// The copies the request still waits for, in submission order (for engines and simulators
    /// that time layers against their copies).
    pub fn request_batches(&self, request: u64) -> Result<Vec<crate::backend::BatchId>> {
        let slot = self.request_slot(request)?;
        let mut v: Vec<_> = self.req(slot).waits.iter().copied().collect();
        v.sort_unstable();
        Ok(v)
    }
}
