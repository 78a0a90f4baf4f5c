//! Workloads: phases added one by one, a preset, or a parsed ASTRA-sim text; and the
//! iteration time of a workload on a network.
use crate::boundary::{check_ptr, deref, deref_mut, entry, slice, write_out};
use crate::status::libra_status;
use libra::error::Error;
use libra::topo::astra::{astra_iteration, parse_astra_workload};
use libra::topo::model::iteration_time;
use libra::topo::parse::{parse_communicator, parse_workload};
use libra::topo::presets::WorkloadPreset;
use libra::topo::workload::{Collective, Workload};
use std::os::raw::c_char;

use super::types::*;

/// Creates an empty workload with an overlap mode (LIBRA_OVERLAP_*). `*out` is freed with
/// libra_workload_free(). Thread-safe.
///
/// Pointers: `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn libra_workload_new(
    overlap_mode: libra_overlap_raw,
    out: *mut *mut libra_workload,
) -> libra_status {
    entry!({
        check_ptr(out, "out")?;
        let wl = Workload::new(overlap(overlap_mode)?);
        // SAFETY: `out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out, boxed(libra_workload { inner: wl })) };
        Ok(())
    })
}

/// Appends a phase: `compute_ns` of compute and a collective of `kind` (LIBRA_COLLECTIVE_NONE
/// for none; then `bytes` and `groups` are ignored and `groups` may be NULL) of `bytes` per
/// NPU over a communicator with `groups[d]` NPUs along dimension d (-1 or 1 = not involved).
/// `name` may be NULL. The communicator is checked against a network when the workload is used
/// (a group size must divide its dimension). Not thread-safe: needs exclusive access.
///
/// Pointers: `workload` valid or NULL; `name` NULL or a NUL-terminated string; `groups` NULL or
/// `num_groups` values.
#[no_mangle]
pub unsafe extern "C" fn libra_workload_add_phase(
    workload: *mut libra_workload,
    name: *const c_char,
    compute_ns: f64,
    kind: libra_collective_raw,
    bytes: f64,
    groups: *const i32,
    num_groups: usize,
) -> libra_status {
    entry!({
        // SAFETY: `workload` is NULL or points to a live, writable value no one else uses during the call, per the contract above.
        let wl = unsafe { deref_mut(workload, "workload") }?;
        let name = if name.is_null() {
            format!("phase{}", wl.inner.phases.len())
        } else {
            // SAFETY: `name` is NULL or a NUL-terminated string, per the contract above.
            unsafe { c_str(name, "name") }?.to_string()
        };
        if !(compute_ns.is_finite() && compute_ns >= 0.0) {
            return Err(Error::invalid(format!("`compute_ns` is {compute_ns}, must be non-negative")));
        }
        let collective = match collective_kind(kind, "kind")? {
            None => None,
            Some(k) => {
                if !(bytes.is_finite() && bytes >= 0.0) {
                    return Err(Error::invalid(format!("`bytes` is {bytes}, must be non-negative")));
                }
                check_ptr(groups, "groups")?;
                // SAFETY: `groups` points to `num_groups` readable elements (or the count is 0), per the contract above.
                let g = groups_from_c(unsafe { slice(groups, num_groups, "groups") }?, "groups")?;
                if g.is_empty() {
                    return Err(Error::invalid("`num_groups` is 0"));
                }
                Some(Collective::new(k, bytes, g))
            }
        };
        wl.inner.push(name, compute_ns, collective);
        Ok(())
    })
}

/// Builds a preset training iteration (LIBRA_WORKLOAD_PRESET_*) laid out for a preset network
/// (LIBRA_NETWORK_PRESET_*), with no compute/communication overlap. `*out` is freed with
/// libra_workload_free(). Thread-safe.
///
/// Pointers: `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn libra_workload_preset_new(
    preset: libra_workload_preset_raw,
    network: libra_network_preset_raw,
    out: *mut *mut libra_workload,
) -> libra_status {
    entry!({
        check_ptr(out, "out")?;
        let w = match libra_workload_preset::from_raw(preset, "preset")? {
            libra_workload_preset::LIBRA_WORKLOAD_PRESET_GPT3 => WorkloadPreset::Gpt3,
            libra_workload_preset::LIBRA_WORKLOAD_PRESET_MSFT_1T => WorkloadPreset::Msft1T,
            libra_workload_preset::LIBRA_WORKLOAD_PRESET_TURING_NLG => WorkloadPreset::TuringNlg,
            libra_workload_preset::LIBRA_WORKLOAD_PRESET_RESNET50 => WorkloadPreset::ResNet50,
        };
        let wl = w.workload(network_preset(network)?);
        // SAFETY: `out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out, boxed(libra_workload { inner: wl })) };
        Ok(())
    })
}

/// Parses an ASTRA-sim 1.0 workload text and a LIBRA communicator YAML text for a network of
/// `num_dims` dimensions into one training iteration (forward of every layer, then input- and
/// weight-gradient from the last layer back). Strings are borrowed, NUL-terminated UTF-8.
/// Fails with LIBRA_ERR_PARSE naming the line or key. `*out` is freed with
/// libra_workload_free(). Thread-safe.
///
/// Pointers: Both strings must be NUL-terminated; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn libra_workload_parse(
    workload_text: *const c_char,
    communicator_yaml: *const c_char,
    num_dims: usize,
    overlap_mode: libra_overlap_raw,
    out: *mut *mut libra_workload,
) -> libra_status {
    entry!({
        check_ptr(out, "out")?;
        // SAFETY: `workload_text` is NULL or a NUL-terminated string, per the contract above.
        let text = unsafe { c_str(workload_text, "workload_text") }?;
        // SAFETY: `communicator_yaml` is NULL or a NUL-terminated string, per the contract above.
        let comm = unsafe { c_str(communicator_yaml, "communicator_yaml") }?;
        let wl = parse_workload(text, comm, num_dims, overlap(overlap_mode)?)?;
        // SAFETY: `out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out, boxed(libra_workload { inner: wl })) };
        Ok(())
    })
}

/// Parses an ASTRA-sim 1.0 workload text into one training iteration on `network`. With
/// `communicator_yaml` NULL, each layer's communicators follow the file's parallelism as
/// ASTRA-sim 1.0 assigns them (`DATA`, `MODEL`, `HYBRID_DATA_MODEL`: model parallel on
/// dimension 0, `HYBRID_MODEL_DATA`: data parallel on dimension 0, `HYBRID_TRANSFORMER`:
/// model parallel over the first `model_parallel_NPU_group` NPUs, `HYBRID_DLRM`, `MICRO`, and
/// `HYBRID_CUSTOMIZED`, whose layers name their own in a 13th field); otherwise the LIBRA
/// communicator applies to every layer. Strings are borrowed, NUL-terminated UTF-8. Fails with
/// LIBRA_ERR_PARSE naming the line or key, and LIBRA_ERR_INVALID_ARGUMENT when a file without a
/// parallelism header comes without a communicator or a model-parallel group does not fit the
/// network. `*out` is freed with libra_workload_free(). Thread-safe on a const network.
///
/// Pointers: `network` valid or NULL; `workload_text` NUL-terminated; `communicator_yaml` NULL or
/// NUL-terminated; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn libra_workload_parse_astra(
    network: *const libra_network,
    workload_text: *const c_char,
    communicator_yaml: *const c_char,
    overlap_mode: libra_overlap_raw,
    out: *mut *mut libra_workload,
) -> libra_status {
    entry!({
        // SAFETY: `network` is NULL or points to a live value, per the contract above.
        let n = unsafe { deref(network, "network") }?;
        check_ptr(out, "out")?;
        // SAFETY: `workload_text` is NULL or a NUL-terminated string, per the contract above.
        let text = unsafe { c_str(workload_text, "workload_text") }?;
        let comm = if communicator_yaml.is_null() {
            None
        } else {
            // SAFETY: `communicator_yaml` is NULL or a NUL-terminated string, per the contract above.
            Some(parse_communicator(
                unsafe { c_str(communicator_yaml, "communicator_yaml") }?,
                n.inner.num_dims(),
            )?)
        };
        let w = parse_astra_workload(text)?;
        let wl = astra_iteration(&w, &n.inner, comm.as_ref(), overlap(overlap_mode)?)?;
        // SAFETY: `out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out, boxed(libra_workload { inner: wl })) };
        Ok(())
    })
}

/// Frees a workload. NULL is a no-op. The workload must not be in use by another thread.
///
/// Pointers: `workload` must be NULL or a handle from a libra_workload_* constructor, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn libra_workload_free(workload: *mut libra_workload) {
    entry!(void {
        if !workload.is_null() {
            // SAFETY: non-NULL, so a handle this library boxed and the caller has not freed,
            // per the contract above; it is freed once, here.
            drop(unsafe { Box::from_raw(workload) });
        }
    })
}

/// Writes the number of phases to `*out`. Thread-safe on a const workload.
///
/// Pointers: `workload` valid or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_workload_num_phases(
    workload: *const libra_workload,
    out: *mut usize,
) -> libra_status {
    entry!({
        // SAFETY: `workload` is NULL or points to a live value, per the contract above.
        let wl = unsafe { deref(workload, "workload") }?;
        // SAFETY: `out` is NULL or points to a live, writable value no one else uses during the call, per the contract above.
        unsafe { deref_mut(out, "out") }?;
        // SAFETY: `out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out, wl.inner.phases.len()) };
        Ok(())
    })
}

/// Writes the iteration time (ns) of `workload` on `network` with its own bandwidths under
/// `model` (LIBRA_MODEL_*) to `*out_ns`. Fails with LIBRA_ERR_INVALID_ARGUMENT naming the phase
/// and field when a communicator does not fit the network. Thread-safe on const handles.
///
/// Pointers: Handles valid or NULL; `out_ns` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_iteration_time(
    network: *const libra_network,
    workload: *const libra_workload,
    model: libra_time_model_raw,
    out_ns: *mut f64,
) -> libra_status {
    entry!({
        // SAFETY: `network` is NULL or points to a live value, per the contract above.
        let n = unsafe { deref(network, "network") }?;
        // SAFETY: `workload` is NULL or points to a live value, per the contract above.
        let wl = unsafe { deref(workload, "workload") }?;
        // SAFETY: `out_ns` is NULL or points to a live, writable value no one else uses during the call, per the contract above.
        unsafe { deref_mut(out_ns, "out_ns") }?;
        let t = iteration_time(&wl.inner, &n.inner, &time_model(model)?, None)?;
        // SAFETY: `out_ns` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out_ns, t) };
        Ok(())
    })
}
