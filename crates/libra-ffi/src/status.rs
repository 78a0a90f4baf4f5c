//! The status code every C function returns. It mirrors `libra::Status` variant by variant;
//! the conversions below are exhaustive matches, so a code added on one side and not the other
//! does not compile.
use libra::error::Status;

/// Status codes of every fallible function; `LIBRA_OK` is 0.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum libra_status {
    /// Success.
    LIBRA_OK = 0,
    /// A required pointer argument was NULL.
    LIBRA_ERR_NULL_ARGUMENT = 1,
    /// An argument was out of range or inconsistent; the message names it.
    LIBRA_ERR_INVALID_ARGUMENT = 2,
    /// The pool has no block to give and nothing may be evicted or swapped.
    LIBRA_ERR_OUT_OF_MEMORY = 3,
    /// An id (adapter, request, event) is unknown or was already released.
    LIBRA_ERR_NOT_FOUND = 4,
    /// The object is in use (e.g. unregistering an adapter that requests still pin).
    LIBRA_ERR_BUSY = 5,
    /// A device call failed, or the requested backend is unavailable.
    LIBRA_ERR_DEVICE = 6,
    /// An internal fault was caught at the boundary; the handle may be poisoned.
    LIBRA_ERR_PANIC = 7,
    /// The object already exists (e.g. registering an adapter id twice).
    LIBRA_ERR_ALREADY_EXISTS = 8,
    /// A wait ended before the awaited copies completed.
    LIBRA_ERR_TIMEOUT = 9,
    /// A handle was poisoned by an earlier internal fault and must be freed.
    LIBRA_ERR_POISONED = 10,
    /// The optimiser found no feasible point (e.g. a budget below the lower bounds).
    LIBRA_ERR_INFEASIBLE = 11,
    /// Text input (a configuration or topology file) could not be parsed.
    LIBRA_ERR_PARSE = 12,
}

macro_rules! mirror {
    ($($name:ident),* $(,)?) => {
        impl From<Status> for libra_status {
            fn from(s: Status) -> Self {
                match s {
                    $(Status::$name => libra_status::$name,)*
                }
            }
        }
        impl From<libra_status> for Status {
            fn from(s: libra_status) -> Self {
                match s {
                    $(libra_status::$name => Status::$name,)*
                }
            }
        }
    };
}
mirror!(
    LIBRA_OK,
    LIBRA_ERR_NULL_ARGUMENT,
    LIBRA_ERR_INVALID_ARGUMENT,
    LIBRA_ERR_OUT_OF_MEMORY,
    LIBRA_ERR_NOT_FOUND,
    LIBRA_ERR_BUSY,
    LIBRA_ERR_DEVICE,
    LIBRA_ERR_PANIC,
    LIBRA_ERR_ALREADY_EXISTS,
    LIBRA_ERR_TIMEOUT,
    LIBRA_ERR_POISONED,
    LIBRA_ERR_INFEASIBLE,
    LIBRA_ERR_PARSE
);

/// Lets tests and Rust callers compare a C function's result with a `libra::Status`.
impl PartialEq<Status> for libra_status {
    fn eq(&self, other: &Status) -> bool {
        Status::from(*self) == *other
    }
}

impl PartialEq<libra_status> for Status {
    fn eq(&self, other: &libra_status) -> bool {
        *self == Status::from(*other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_keeps_its_value_both_ways() {
        for code in 0..=64 {
            if let Some(s) = Status::from_raw(code) {
                let c = libra_status::from(s);
                assert_eq!(c as i32, code, "{s:?}");
                assert_eq!(Status::from(c), s);
            }
        }
    }
}
