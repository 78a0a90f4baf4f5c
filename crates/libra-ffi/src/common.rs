//! Status strings, last-error access and the version.
use crate::boundary::entry;
use std::os::raw::c_char;

pub use crate::status::libra_status;

/// Returns a static, NUL-terminated description of a status code. Unknown codes give
/// "unknown status". The pointer is never NULL and must not be freed. Thread-safe.
#[no_mangle]
pub extern "C" fn libra_status_str(code: i32) -> *const c_char {
    entry!(or c"unknown status".as_ptr(), {
        Ok(match libra::Status::from_raw(code) {
            Some(status) => status.describe_c().as_ptr(),
            None => c"unknown status".as_ptr(),
        })
    })
}

/// Returns the message of the last failing libra call on the calling thread, naming the bad
/// argument ("" if none failed yet). The string is owned by the library and stays valid until
/// the next failing call on the same thread; copy it to keep it. Never NULL. Thread-safe (the
/// message is thread-local).
#[no_mangle]
pub extern "C" fn libra_last_error_message() -> *const c_char {
    crate::boundary::last_error_ptr()
}

/// Returns the library version as a static NUL-terminated string, e.g. "0.2.0". Compare with
/// LIBRA_VERSION_STRING to detect a header/library mismatch. Never NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn libra_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}
