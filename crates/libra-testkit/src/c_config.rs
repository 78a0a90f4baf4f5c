//! The C API's cache configuration as the tests start from it: the library's defaults, filled
//! through `libra_cache_config_default` the way a C caller does.
use libra_ffi::cache::{libra_cache_config, libra_cache_config_default};
use libra_ffi::libra_status;

/// `libra_cache_config_default` on a struct whose `struct_size` is set first, as the header
/// asks; panics if the call fails.
pub fn default_cache_config() -> libra_cache_config {
    // SAFETY: all-zero bytes are a valid `libra_cache_config` (integers, floats and a NULL
    // pointer).
    let mut cfg: libra_cache_config = unsafe { std::mem::zeroed() };
    cfg.struct_size = std::mem::size_of::<libra_cache_config>();
    // SAFETY: `cfg` is a live, aligned config of the size it declares.
    let status = unsafe { libra_cache_config_default(&mut cfg) };
    assert_eq!(status, libra_status::LIBRA_OK, "libra_cache_config_default");
    cfg
}
