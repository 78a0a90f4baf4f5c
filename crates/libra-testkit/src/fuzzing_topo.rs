//! Harnesses of the topology fuzz targets (`fuzz/`), shared with the corpus replay
//! (`tests/fuzz_corpus.rs`): LIBRA network and ASTRA-sim workload text through the C API. Each
//! panics only on an internal fault reported at the C boundary.
use crate::fuzzing::ok_or_expected;
use libra_ffi::libra_status as Status;
use libra_ffi::topo::*;
use std::ffi::CString;

/// A dimension description holding the defaults, filled by `libra_dim_desc_default`.
fn dim_desc() -> libra_dim_desc {
    // SAFETY: all-zero bytes are a valid description (integers and floats).
    let mut d: libra_dim_desc = unsafe { std::mem::zeroed() };
    d.struct_size = std::mem::size_of::<libra_dim_desc>();
    // SAFETY: `d` is a live, aligned description of the size it declares.
    assert_eq!(unsafe { libra_dim_desc_default(&mut d) }, Status::LIBRA_OK);
    d
}

/// Splits the input at its first NUL into two strings (lossy UTF-8, NULs dropped).
fn two_texts(data: &[u8]) -> (CString, Option<CString>) {
    let clean = |b: &[u8]| CString::new(String::from_utf8_lossy(b).replace('\0', "")).unwrap();
    match data.iter().position(|&b| b == 0) {
        Some(i) => (clean(&data[..i]), Some(clean(&data[i + 1..]))),
        None => (clean(data), None),
    }
}

/// Parses a LIBRA network YAML (and a cost YAML after the first NUL) through the C API, and
/// uses the network when it parses.
pub fn parse_network(data: &[u8]) {
    let (net_yaml, cost_yaml) = two_texts(data);
    let _ = libra::topo::parse::parse_yaml(net_yaml.to_str().unwrap());
    let mut net: *mut libra_network = std::ptr::null_mut();
    let cost_ptr = cost_yaml.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: NUL-terminated strings and a writable out-pointer.
    let s = unsafe { libra_network_parse(net_yaml.as_ptr(), cost_ptr, &mut net) };
    ok_or_expected(s, "libra_network_parse");
    if s != Status::LIBRA_OK {
        assert!(net.is_null());
        return;
    }
    // SAFETY: a live network until freed below.
    unsafe {
        let (mut dims, mut npus, mut cost) = (0usize, 0u64, 0.0f64);
        assert_eq!(libra_network_num_dims(net, &mut dims), Status::LIBRA_OK);
        assert_eq!(libra_network_npus(net, &mut npus), Status::LIBRA_OK);
        assert!(dims >= 1 && npus >= 2 && npus <= u32::MAX as u64);
        assert_eq!(libra_network_cost(net, std::ptr::null(), 0, &mut cost), Status::LIBRA_OK);
        assert!(cost.is_finite() && cost >= 0.0, "cost {cost}");
        let mut product = 1u64;
        for i in 0..dims {
            let mut d = dim_desc();
            assert_eq!(libra_network_dim(net, i, &mut d), Status::LIBRA_OK);
            assert!(d.size >= 2 && d.bandwidth > 0.0 && d.bandwidth.is_finite());
            product *= d.size as u64;
        }
        assert_eq!(product, npus);
        libra_network_free(net);
    }
}

/// Parses an ASTRA-sim workload (and a communicator YAML after the first NUL) through the C
/// API for a network of 1-4 dimensions chosen by the first byte, and times it on a network
/// with matching dimensions when it parses.
pub fn parse_workload(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else { return };
    let dims = 1 + first as usize % 4;
    let (text, comm) = two_texts(rest);
    let comm = comm.unwrap_or_else(|| CString::new("").unwrap());
    let _ = libra::topo::parse::parse_astra_layers(text.to_str().unwrap());
    let mut wl: *mut libra_workload = std::ptr::null_mut();
    let overlap = (first / 4) as i32 % 3;
    // SAFETY: NUL-terminated strings and a writable out-pointer.
    let s = unsafe { libra_workload_parse(text.as_ptr(), comm.as_ptr(), dims, overlap, &mut wl) };
    ok_or_expected(s, "libra_workload_parse");
    if s != Status::LIBRA_OK {
        assert!(wl.is_null());
        return;
    }
    // SAFETY: live handles until freed below.
    unsafe {
        let mut phases = 0usize;
        assert_eq!(libra_workload_num_phases(wl, &mut phases), Status::LIBRA_OK);
        assert!(phases >= 1);
        // A network of 2^k NPUs per dimension, so that many group sizes divide it.
        let mut descs = vec![dim_desc(); dims];
        for d in descs.iter_mut() {
            d.size = 64;
            d.bandwidth = 50.0;
            d.latency = 100.0;
        }
        let mut net: *mut libra_network = std::ptr::null_mut();
        assert_eq!(libra_network_new(descs.as_ptr(), dims, &mut net), Status::LIBRA_OK);
        for model in
            [libra_time_model::LIBRA_MODEL_LIBRA, libra_time_model::LIBRA_MODEL_ALPHA_BETA].map(i32::from)
        {
            let mut t = 0.0f64;
            let s = libra_iteration_time(net, wl, model, &mut t);
            ok_or_expected(s, "libra_iteration_time");
            if s == Status::LIBRA_OK {
                assert!(t >= 0.0 && !t.is_nan(), "iteration time {t}");
            }
        }
        libra_network_free(net);
        libra_workload_free(wl);
    }
}
