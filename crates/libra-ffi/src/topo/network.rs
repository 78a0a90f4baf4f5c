//! Networks: built from dimension descriptions, a preset or a YAML text; queried, costed,
//! exported and re-bandwidthed.
use crate::boundary::Versioned;
use crate::boundary::{
    check_ptr, deref, deref_mut, entry, read_versioned_at, slice, versioned_size, write_out, write_versioned,
};
use crate::status::libra_status;
use libra::error::Error;
use libra::topo::astra::to_astra_sim_yaml;
use libra::topo::network::{CostParams, Dimension, Network};
use libra::topo::parse::parse_network;
use std::os::raw::c_char;

use super::types::*;

/// Fills `*desc` with the defaults: a ring of 2 NPUs at 1 GB/s, no latency and no cost. Set
/// `desc->struct_size = sizeof(libra_dim_desc)` first: only `min(struct_size,
/// sizeof(libra_dim_desc))` bytes are written and `struct_size` is kept, so a struct declared
/// from another header is filled with the fields it has and nothing past it is written.
/// Errors: LIBRA_ERR_NULL_ARGUMENT, LIBRA_ERR_INVALID_ARGUMENT (`desc` misaligned, or
/// `struct_size` below the first published layout, e.g. 0: nothing written).
/// Thread-safe.
///
/// Pointers: `desc` NULL or a writable struct of the `struct_size` it declares.
#[no_mangle]
pub unsafe extern "C" fn libra_dim_desc_default(desc: *mut libra_dim_desc) -> libra_status {
    entry!({
        // SAFETY: `desc` is NULL or holds the `struct_size` writable bytes it declares, per the
        // contract above.
        unsafe { write_versioned(desc, libra_dim_desc::defaults(), "desc") }
    })
}

/// Builds a network from `num_dims` dimension descriptions (dimension 0 first; NPU coordinates
/// are mixed-radix with dimension 0 fastest). `dims` is borrowed for the call; its elements are
/// `dims[0].struct_size` bytes apart (an older or newer header's size works), each declaring that
/// size, which must keep them aligned. On success `*out` receives a new network that the caller
/// frees with libra_network_free(). Fails with LIBRA_ERR_INVALID_ARGUMENT naming the field for
/// an empty network, a size below 2 or a zero, negative or non-finite bandwidth.
/// Thread-safe.
///
/// Pointers: `dims` must point to `num_dims` descriptions; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn libra_network_new(
    dims: *const libra_dim_desc,
    num_dims: usize,
    out: *mut *mut libra_network,
) -> libra_status {
    entry!({
        check_ptr(out, "out")?;
        if num_dims == 0 {
            return Err(Error::invalid("`num_dims` is 0: a network needs at least one dimension"));
        }
        // Every dimension has at least 2 NPUs and a network at most 2^32: more is never valid,
        // and `num_dims` must not size an allocation unchecked.
        if num_dims > MAX_DIMS {
            return Err(Error::invalid(format!("`num_dims` is {num_dims}; at most {MAX_DIMS} dimensions")));
        }
        // Elements are `dims[0].struct_size` bytes apart, so an array of an older, smaller
        // layout is read as such.
        // SAFETY: `dims` is NULL or holds the `struct_size` bytes it declares, per the contract above.
        let stride = unsafe { versioned_size(dims, "dims[0]") }?;
        let mut v = Vec::with_capacity(num_dims);
        for i in 0..num_dims {
            // SAFETY: `dims` is NULL or holds the `struct_size` bytes it declares, per the contract above.
            let d = unsafe { read_versioned_at(dims, i, stride, "dims") }?;
            v.push(Dimension {
                kind: dim_kind(d.kind, &format!("dims[{i}].kind"))?,
                size: d.size,
                bandwidth: d.bandwidth,
                latency: d.latency,
                cost: CostParams { link: d.link_cost, switch: d.switch_cost, nic: d.nic_cost },
            });
        }
        let net = Network::new(v)?;
        // SAFETY: `out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out, boxed(libra_network { inner: net })) };
        Ok(())
    })
}

/// Builds a preset network (LIBRA_NETWORK_PRESET_*), with a starting bandwidth split, per-step
/// latencies and LIBRA's reference costs. `*out` is freed with libra_network_free().
/// Thread-safe.
///
/// Pointers: `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn libra_network_preset_new(
    preset: libra_network_preset_raw,
    out: *mut *mut libra_network,
) -> libra_status {
    entry!({
        check_ptr(out, "out")?;
        let net = network_preset(preset)?.network();
        // SAFETY: `out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out, boxed(libra_network { inner: net })) };
        Ok(())
    })
}

/// Parses a network YAML file's text, told apart by its keys: LIBRA's (`Topology`,
/// `NpusCount`, optional `CostDimension`, and our optional `Bandwidth` in GB/s per NPU, default
/// 100, and `Latency` in ns per step) or ASTRA-sim 2.0's analytical one (`topology`,
/// `npus_count`, `bandwidth` in GB/s per link with ASTRA-sim's 2^30-byte GB, `latency` in ns per
/// link; converted to per-NPU bandwidth: x2 for a ring, x(n-1) fully-connected, x1 switch, and
/// a switch step's latency is two links'). `cost_yaml`, if not NULL, is a LIBRA cost-model text
/// (`Link` for every dimension, plus `Switch` and `Nic` for switch dimensions, positive $ per
/// GB/s) and needs a LIBRA network with `CostDimension`. Both strings are borrowed,
/// NUL-terminated UTF-8. Fails with LIBRA_ERR_PARSE and a message naming the key or line for
/// unknown keys, values of the wrong shape or out of range, nesting deeper than 16 levels, and
/// YAML outside the supported subset (flow mappings, anchors, several documents).
/// `*out` is freed with libra_network_free(). Thread-safe.
///
/// Pointers: `network_yaml` must be a NUL-terminated string; `cost_yaml` NULL or one; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn libra_network_parse(
    network_yaml: *const c_char,
    cost_yaml: *const c_char,
    out: *mut *mut libra_network,
) -> libra_status {
    entry!({
        check_ptr(out, "out")?;
        // SAFETY: `network_yaml` is NULL or a NUL-terminated string, per the contract above.
        let text = unsafe { c_str(network_yaml, "network_yaml") }?;
        // SAFETY: `cost_yaml` is NULL or a NUL-terminated string, per the contract above.
        let cost = if cost_yaml.is_null() { None } else { Some(unsafe { c_str(cost_yaml, "cost_yaml") }?) };
        let net = parse_network(text, cost)?;
        // SAFETY: `out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out, boxed(libra_network { inner: net })) };
        Ok(())
    })
}

/// Writes `network` as an ASTRA-sim 2.0 analytical network YAML text (the inverse of the
/// conversion in libra_network_parse(); costs are not part of that format). With `buf` NULL,
/// writes the size needed (including the terminating NUL) to `*len_out` and succeeds. Otherwise
/// `buf` must hold `cap` bytes: fails with LIBRA_ERR_INVALID_ARGUMENT when `cap` is smaller than
/// the size needed (nothing written), and on success writes the NUL-terminated text to `buf` and
/// its size including the NUL to `*len_out`. Thread-safe on a const network.
///
/// Pointers: `network` valid or NULL; `buf` NULL or `cap` writable bytes; `len_out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_network_export_astra_sim(
    network: *const libra_network,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> libra_status {
    entry!({
        // SAFETY: `network` is NULL or points to a live value, per the contract above.
        let n = unsafe { deref(network, "network") }?;
        // SAFETY: `len_out` is NULL or points to a live, writable value no one else uses during the call, per the contract above.
        unsafe { deref_mut(len_out, "len_out") }?;
        let text = to_astra_sim_yaml(&n.inner);
        let need = text.len() + 1;
        if !buf.is_null() {
            if cap < need {
                return Err(Error::invalid(format!("`cap` is {cap}; the text needs {need} bytes")));
            }
            // SAFETY: `buf` is non-NULL and holds `cap >= need = text.len() + 1` writable bytes,
            // per the contract above; a byte buffer needs no alignment.
            unsafe {
                std::ptr::copy_nonoverlapping(text.as_ptr(), buf as *mut u8, text.len());
                *buf.add(text.len()) = 0;
            }
        }
        // SAFETY: `len_out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(len_out, need) };
        Ok(())
    })
}

/// Frees a network. NULL is a no-op. The network must not be in use by another thread.
///
/// Pointers: `network` must be NULL or a handle from a libra_network_* constructor, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn libra_network_free(network: *mut libra_network) {
    entry!(void {
        if !network.is_null() {
            // SAFETY: non-NULL, so a handle this library boxed and the caller has not freed,
            // per the contract above; it is freed once, here.
            drop(unsafe { Box::from_raw(network) });
        }
    })
}

/// Writes the number of dimensions to `*out`. Thread-safe on a const network.
///
/// Pointers: `network` must be a valid handle or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_network_num_dims(
    network: *const libra_network,
    out: *mut usize,
) -> libra_status {
    entry!({
        // SAFETY: `network` is NULL or points to a live value, per the contract above.
        let n = unsafe { deref(network, "network") }?;
        // SAFETY: `out` is NULL or points to a live, writable value no one else uses during the call, per the contract above.
        unsafe { deref_mut(out, "out") }?;
        // SAFETY: `out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out, n.inner.num_dims()) };
        Ok(())
    })
}

/// Writes the total number of NPUs to `*out`. Thread-safe on a const network.
///
/// Pointers: `network` must be a valid handle or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_network_npus(network: *const libra_network, out: *mut u64) -> libra_status {
    entry!({
        // SAFETY: `network` is NULL or points to a live value, per the contract above.
        let n = unsafe { deref(network, "network") }?;
        // SAFETY: `out` is NULL or points to a live, writable value no one else uses during the call, per the contract above.
        unsafe { deref_mut(out, "out") }?;
        // SAFETY: `out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out, n.inner.npus()) };
        Ok(())
    })
}

/// Copies dimension `index` into `*out`, whose `struct_size` the caller sets (only that many
/// bytes are written); LIBRA_ERR_INVALID_ARGUMENT if `index` is out of range.
/// Thread-safe on a const network.
///
/// Pointers: `network` must be a valid handle or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_network_dim(
    network: *const libra_network,
    index: usize,
    out: *mut libra_dim_desc,
) -> libra_status {
    entry!({
        // SAFETY: `network` is NULL or points to a live value, per the contract above.
        let n = unsafe { deref(network, "network") }?;
        // SAFETY: `out` is NULL or holds the `struct_size` bytes it declares, per the contract above.
        unsafe { versioned_size(out, "out") }?;
        let d = n.inner.dims().get(index).ok_or_else(|| {
            Error::invalid(format!("`index` is {index}, the network has {} dimensions", n.inner.num_dims()))
        })?;
        let kind = dim_kind_to_c(d.kind).raw();
        let desc = libra_dim_desc {
            struct_size: 0,
            kind,
            size: d.size,
            bandwidth: d.bandwidth,
            latency: d.latency,
            link_cost: d.cost.link,
            switch_cost: d.cost.switch,
            nic_cost: d.cost.nic,
        };
        // SAFETY: `out` is NULL or holds the `struct_size` writable bytes it declares, per the contract above.
        unsafe { write_versioned(out, desc, "out") }?;
        Ok(())
    })
}

/// Writes LIBRA's network cost ($) of `bandwidths` (`num_dims` per-NPU GB/s values), or of
/// the network's own bandwidths when `bandwidths` is NULL, to `*out`. Thread-safe on a const
/// network.
///
/// Pointers: `network` valid or NULL; `bandwidths` NULL or `num_dims` values; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_network_cost(
    network: *const libra_network,
    bandwidths: *const f64,
    num_dims: usize,
    out: *mut f64,
) -> libra_status {
    entry!({
        // SAFETY: `network` is NULL or points to a live value, per the contract above.
        let n = unsafe { deref(network, "network") }?;
        // SAFETY: `out` is NULL or points to a live, writable value no one else uses during the call, per the contract above.
        unsafe { deref_mut(out, "out") }?;
        let cost = if bandwidths.is_null() {
            n.inner.cost()
        } else {
            // SAFETY: `bandwidths` points to `num_dims` readable elements (or the count is 0), per the contract above.
            n.inner.cost_of(unsafe { slice(bandwidths, num_dims, "bandwidths") }?)?
        };
        // SAFETY: `out` was checked (non-NULL, aligned) above and is writable, per the contract above.
        unsafe { write_out(out, cost) };
        Ok(())
    })
}

/// Replaces the network's per-NPU bandwidths (`num_dims` positive GB/s values, e.g. an
/// optimiser's answer). On error the network is unchanged. Not thread-safe: needs exclusive
/// access to `network`.
///
/// Pointers: `network` valid or NULL; `bandwidths` NULL or `num_dims` values.
#[no_mangle]
pub unsafe extern "C" fn libra_network_set_bandwidths(
    network: *mut libra_network,
    bandwidths: *const f64,
    num_dims: usize,
) -> libra_status {
    entry!({
        // SAFETY: `network` is NULL or points to a live, writable value no one else uses during the call, per the contract above.
        let n = unsafe { deref_mut(network, "network") }?;
        // SAFETY: `bandwidths` points to `num_dims` readable elements (or the count is 0), per the contract above.
        let bw = unsafe { slice(bandwidths, num_dims, "bandwidths") }?;
        check_ptr(bandwidths, "bandwidths")?;
        n.inner = n.inner.with_bandwidths(bw)?;
        Ok(())
    })
}
