//! Collective schedules: built for a network, walked step by step, and run on host buffers.
use crate::boundary::Versioned;
use crate::boundary::{
    check_ptr, deref, deref_mut, entry, read_versioned, slice, versioned_size, write_out, write_versioned,
};
use crate::status::libra_status;
use libra::error::Error;
use libra::topo::exec::execute;
use libra::topo::schedule::{Policy, Schedule, ScheduleConfig, StepOp};

use super::types::*;

/// Fills `*config` with the defaults: Themis, 64 chunks, 4-byte elements. Set
/// `config->struct_size = sizeof(libra_schedule_config)` first: only `min(struct_size,
/// sizeof(libra_schedule_config))` bytes are written and `struct_size` is kept, so a struct
/// declared from another header is filled with the fields it has and nothing past it is
/// written. Errors: LIBRA_ERR_NULL_ARGUMENT, LIBRA_ERR_INVALID_ARGUMENT (`config` misaligned,
/// or `struct_size` below the first published layout, e.g. 0: nothing written).
/// Thread-safe.
///
/// Pointers: `config` NULL or a writable struct of the `struct_size` it declares.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_config_default(config: *mut libra_schedule_config) -> libra_status {
    entry!({
        // SAFETY: `config` is NULL or holds the `struct_size` writable bytes it declares, per
        // the contract above.
        unsafe { write_versioned(config, libra_schedule_config::defaults(), "config") }
    })
}

/// Schedules a collective `kind` (all-reduce, reduce-scatter, all-gather, or all-to-all, whose
/// `count` must be a multiple of the communicator's rank count) of `count` elements per rank
/// over the communicator `groups` (`num_groups` = the network's dimension
/// count, -1 or 1 = not involved; NULL = every NPU) on `network`. `config` may be NULL for the
/// defaults. Ranks of the communicator are numbered mixed-radix over the group sizes, dimension
/// 0 fastest. `*out` is freed with libra_schedule_free(). Thread-safe on a const network.
///
/// Pointers: `network` valid or NULL; `groups` NULL or `num_groups` values; `config` NULL or valid;
/// `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_new(
    network: *const libra_network,
    kind: libra_collective_raw,
    count: usize,
    groups: *const i32,
    num_groups: usize,
    config: *const libra_schedule_config,
    out: *mut *mut libra_schedule,
) -> libra_status {
    entry!({
        // SAFETY: `network` is NULL or points to a live value, per the contract above.
        let n = unsafe { deref(network, "network") }?;
        check_ptr(out, "out")?;
        let kind = collective_kind(kind, "kind")?
            .ok_or_else(|| Error::invalid("`kind` is LIBRA_COLLECTIVE_NONE"))?;
        let groups = if groups.is_null() {
            None
        } else {
            // SAFETY: `groups` points to `num_groups` readable elements (or the count is 0), per the contract above.
            Some(groups_from_c(unsafe { slice(groups, num_groups, "groups") }?, "groups")?)
        };
        let mut cfg = ScheduleConfig::default();
        if !config.is_null() {
            // SAFETY: `config` is NULL or holds the `struct_size` bytes it declares, per the contract above.
            let c = unsafe { read_versioned(config, "config") }?;
            cfg.policy = match libra_schedule_policy::from_raw(c.policy, "config.policy")? {
                libra_schedule_policy::LIBRA_SCHEDULE_POLICY_BASELINE => Policy::Baseline,
                libra_schedule_policy::LIBRA_SCHEDULE_POLICY_THEMIS => Policy::Themis,
            };
            cfg.chunks = c.chunks;
            cfg.elem_size = c.elem_size;
        }
        let s = Schedule::new(&n.inner, kind, count, groups.as_deref(), &cfg)?;
        // SAFETY: `out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out, boxed(libra_schedule { inner: s })) };
        Ok(())
    })
}

/// Frees a schedule. NULL is a no-op. The schedule must not be in use by another thread.
///
/// Pointers: `schedule` must be NULL or a handle from libra_schedule_new(), not yet freed.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_free(schedule: *mut libra_schedule) {
    entry!(void {
        if !schedule.is_null() {
            // SAFETY: non-NULL, so a handle this library boxed and the caller has not freed,
            // per the contract above; it is freed once, here.
            drop(unsafe { Box::from_raw(schedule) });
        }
    })
}

/// Writes the number of steps to `*out`. Steps are numbered in a valid issue order: every
/// step's dependencies come before it, and steps on one dimension are in start order.
/// Thread-safe on a const schedule.
///
/// Pointers: `schedule` valid or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_num_steps(
    schedule: *const libra_schedule,
    out: *mut usize,
) -> libra_status {
    entry!({
        // SAFETY: `schedule` is NULL or points to a live value, per the contract above.
        let s = unsafe { deref(schedule, "schedule") }?;
        // SAFETY: `out` is NULL or points to a live, writable value no one else uses during the call, per the contract above.
        unsafe { deref_mut(out, "out") }?;
        // SAFETY: `out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out, s.inner.steps.len()) };
        Ok(())
    })
}

/// Writes the number of ranks in the schedule's communicator to `*out`. Thread-safe on a const
/// schedule.
///
/// Pointers: `schedule` valid or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_num_ranks(
    schedule: *const libra_schedule,
    out: *mut usize,
) -> libra_status {
    entry!({
        // SAFETY: `schedule` is NULL or points to a live value, per the contract above.
        let s = unsafe { deref(schedule, "schedule") }?;
        // SAFETY: `out` is NULL or points to a live, writable value no one else uses during the call, per the contract above.
        unsafe { deref_mut(out, "out") }?;
        // SAFETY: `out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out, s.inner.ranks()) };
        Ok(())
    })
}

/// Writes the predicted completion time (ns) to `*out_ns`. Thread-safe on a const schedule.
///
/// Pointers: `schedule` valid or NULL; `out_ns` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_finish_time(
    schedule: *const libra_schedule,
    out_ns: *mut f64,
) -> libra_status {
    entry!({
        // SAFETY: `schedule` is NULL or points to a live value, per the contract above.
        let s = unsafe { deref(schedule, "schedule") }?;
        // SAFETY: `out_ns` is NULL or points to a live, writable value no one else uses during the call, per the contract above.
        unsafe { deref_mut(out_ns, "out_ns") }?;
        // SAFETY: `out_ns` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out_ns, s.inner.finish_time) };
        Ok(())
    })
}

fn step_at(s: &libra_schedule, index: usize) -> Result<&libra::topo::schedule::Step, Error> {
    s.inner.steps.get(index).ok_or_else(|| {
        Error::invalid(format!("`index` is {index}, the schedule has {} steps", s.inner.steps.len()))
    })
}

/// Copies step `index` into `*out` (whose `struct_size` the caller sets to
/// sizeof(libra_step)). Thread-safe on a const schedule.
///
/// Pointers: `schedule` valid or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_step(
    schedule: *const libra_schedule,
    index: usize,
    out: *mut libra_step,
) -> libra_status {
    entry!({
        // SAFETY: `schedule` is NULL or points to a live value, per the contract above.
        let s = unsafe { deref(schedule, "schedule") }?;
        // SAFETY: `out` is NULL or holds the `struct_size` bytes it declares, per the contract above.
        unsafe { versioned_size(out, "out") }?;
        let st = step_at(s, index)?;
        let step = libra_step {
            struct_size: 0,
            chunk: st.chunk,
            stage: st.stage,
            dim: st.dim,
            op: match st.op {
                StepOp::ReduceScatter => libra_step_op::LIBRA_STEP_REDUCE_SCATTER,
                StepOp::AllGather => libra_step_op::LIBRA_STEP_ALL_GATHER,
                StepOp::AllToAll => libra_step_op::LIBRA_STEP_ALL_TO_ALL,
            }
            .raw(),
            group: st.group,
            bytes: st.bytes,
            chunk_offset: st.chunk_offset,
            chunk_count: st.chunk_count,
            num_deps: st.deps.len(),
            start_ns: st.start,
            finish_ns: st.finish,
        };
        // SAFETY: `out` is NULL or holds the `struct_size` writable bytes it declares, per the contract above.
        unsafe { write_versioned(out, step, "out") }?;
        Ok(())
    })
}

/// Writes the index of dependency `dep` (0 <= dep < num_deps) of step `index` to `*out`.
/// Thread-safe on a const schedule.
///
/// Pointers: `schedule` valid or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_step_dep(
    schedule: *const libra_schedule,
    index: usize,
    dep: usize,
    out: *mut usize,
) -> libra_status {
    entry!({
        // SAFETY: `schedule` is NULL or points to a live value, per the contract above.
        let s = unsafe { deref(schedule, "schedule") }?;
        // SAFETY: `out` is NULL or points to a live, writable value no one else uses during the call, per the contract above.
        unsafe { deref_mut(out, "out") }?;
        let st = step_at(s, index)?;
        let d = *st.deps.get(dep).ok_or_else(|| {
            Error::invalid(format!("`dep` is {dep}, step {index} has {} dependencies", st.deps.len()))
        })?;
        // SAFETY: `out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out, d) };
        Ok(())
    })
}

/// Writes the element range (`*offset`, `*count`) that `rank` passes to step `index`: the
/// reduce-scatter's input or the all-gather's output. The rank's own part of it is part
/// `coordinate along step.dim` of `step.group` parts, the first `count % group` parts one
/// element longer. For an all-to-all step: the range within each block that the step moves
/// (see LIBRA_STEP_ALL_TO_ALL), the same for every rank. Thread-safe on a const schedule.
///
/// Pointers: `schedule` valid or NULL; `offset` and `count` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_step_segment(
    schedule: *const libra_schedule,
    index: usize,
    rank: usize,
    offset: *mut usize,
    count: *mut usize,
) -> libra_status {
    entry!({
        // SAFETY: `schedule` is NULL or points to a live value, per the contract above.
        let s = unsafe { deref(schedule, "schedule") }?;
        // SAFETY: `offset` is NULL or points to a live, writable value no one else uses during the call, per the contract above.
        unsafe { deref_mut(offset, "offset") }?;
        // SAFETY: `count` is NULL or points to a live, writable value no one else uses during the call, per the contract above.
        unsafe { deref_mut(count, "count") }?;
        step_at(s, index)?;
        if rank >= s.inner.ranks() {
            return Err(Error::invalid(format!(
                "`rank` is {rank}, the communicator has {} ranks",
                s.inner.ranks()
            )));
        }
        let (o, c) = s.inner.segment(index, rank);
        // SAFETY: `offset` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(offset, o) };
        // SAFETY: `count` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(count, c) };
        Ok(())
    })
}

/// Runs the schedule on host buffers: `buffers[r]` is rank r's `count` doubles (count = the
/// schedule's element count), updated in place with the reference executor. All-reduce leaves
/// the element-wise sum in every buffer. Buffers must not overlap. Thread-safe on a const
/// schedule; the buffers need exclusive access.
///
/// Pointers: `buffers` NULL or `num_ranks` pointers, each to `count` writable doubles.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_execute_f64(
    schedule: *const libra_schedule,
    buffers: *const *mut f64,
    num_ranks: usize,
    count: usize,
) -> libra_status {
    entry!({
        // SAFETY: `schedule` is NULL or points to a live value, per the contract above.
        let s = unsafe { deref(schedule, "schedule") }?;
        // SAFETY: `buffers` points to `num_ranks` readable elements (or the count is 0), per the contract above.
        let ptrs = unsafe { slice(buffers, num_ranks, "buffers") }?;
        check_ptr(buffers, "buffers")?;
        if num_ranks != s.inner.ranks() {
            return Err(Error::invalid(format!(
                "`num_ranks` is {num_ranks}, the schedule has {}",
                s.inner.ranks()
            )));
        }
        if count != s.inner.count {
            return Err(Error::invalid(format!("`count` is {count}, the schedule has {}", s.inner.count)));
        }
        let mut bufs = Vec::with_capacity(num_ranks);
        for (r, &p) in ptrs.iter().enumerate() {
            // SAFETY: `p` points to `count` readable elements (or the count is 0), per the contract above.
            bufs.push(unsafe { slice(p, count, &format!("buffers[{r}]")) }?.to_vec());
        }
        execute(&s.inner, &mut bufs)?;
        for (&p, b) in ptrs.iter().zip(&bufs) {
            if count > 0 {
                // SAFETY: `slice` above checked `p` non-NULL and aligned; it holds `count`
                // writable doubles and overlaps no other buffer, per the contract above.
                unsafe { std::slice::from_raw_parts_mut(p, count) }.copy_from_slice(b);
            }
        }
        Ok(())
    })
}
