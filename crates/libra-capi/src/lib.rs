//! liblibra.a and liblibra.so: libra's C ABI (`include/libra.h`). The functions are
//! `libra-ffi`'s; this crate only links them, with the Rust library, into the two artefacts
//! engines link, so that nothing else (the simulator, the test machinery) can end up in them.
pub use libra_ffi::*;
