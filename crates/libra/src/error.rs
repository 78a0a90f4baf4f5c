//! The one error type of the Rust API. Each error carries the status code the C ABI returns and a
//! message that names the offending argument.
use std::ffi::CStr;
use std::fmt;

/// Declares `Status` and derives its description and its decoding from one table of
/// (variant, code, description), so a code added to the enum cannot be missing from either.
macro_rules! statuses {
    ($($(#[doc = $doc:literal])* $name:ident = $code:literal, $text:literal;)*) => {
        /// What went wrong, as a code. The variants carry the names of the C ABI's `libra_status`
        /// constants (libra-ffi maps one to the other, variant by variant), so that a code reads
        /// the same in Rust, in C and in a log.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Status {
            $($(#[doc = $doc])* $name = $code,)*
        }

        impl Status {
            /// A static, human-readable description of the code, NUL-terminated for C.
            pub fn describe_c(self) -> &'static CStr {
                match self {
                    $(Status::$name => $text,)*
                }
            }

            /// Maps a raw integer (as C may pass any value) to a status.
            pub fn from_raw(code: i32) -> Option<Status> {
                match code {
                    $($code => Some(Status::$name),)*
                    _ => None,
                }
            }
        }
    };
}

statuses! {
    /// Success.
    LIBRA_OK = 0, c"ok";
    /// A required pointer argument was NULL.
    LIBRA_ERR_NULL_ARGUMENT = 1, c"a required pointer argument was NULL";
    /// An argument was out of range or inconsistent; the message names it.
    LIBRA_ERR_INVALID_ARGUMENT = 2, c"invalid argument";
    /// The pool has no block to give and nothing may be evicted or swapped.
    LIBRA_ERR_OUT_OF_MEMORY = 3, c"out of memory: no block can be freed";
    /// An id (adapter, request, event) is unknown or was already released.
    LIBRA_ERR_NOT_FOUND = 4, c"not found";
    /// The object is in use (e.g. unregistering an adapter that requests still pin).
    LIBRA_ERR_BUSY = 5, c"busy: the object is in use";
    /// A device call failed, or the requested backend is unavailable.
    LIBRA_ERR_DEVICE = 6, c"device error or device unavailable";
    /// An internal fault was caught at the boundary; the handle may be poisoned.
    LIBRA_ERR_PANIC = 7, c"internal fault caught at the API boundary";
    /// The object already exists (e.g. registering an adapter id twice).
    LIBRA_ERR_ALREADY_EXISTS = 8, c"already exists";
    /// A wait ended before the awaited copies completed.
    LIBRA_ERR_TIMEOUT = 9, c"timed out";
    /// A handle was poisoned by an earlier internal fault and must be freed.
    LIBRA_ERR_POISONED = 10, c"handle poisoned by an earlier internal fault";
    /// The optimiser found no feasible point (e.g. a budget below the lower bounds).
    LIBRA_ERR_INFEASIBLE = 11, c"infeasible problem";
    /// Text input (a configuration or topology file) could not be parsed.
    LIBRA_ERR_PARSE = 12, c"parse error";
}

impl Status {
    /// A static, human-readable description of the code.
    pub fn describe(self) -> &'static str {
        self.describe_c().to_str().unwrap_or("")
    }
}

/// An error: a status code and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub status: Status,
    pub message: String,
}

impl Error {
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Error { status, message: message.into() }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Status::LIBRA_ERR_INVALID_ARGUMENT, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Status::LIBRA_ERR_NOT_FOUND, message)
    }
    pub fn out_of_memory(message: impl Into<String>) -> Self {
        Self::new(Status::LIBRA_ERR_OUT_OF_MEMORY, message)
    }
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(Status::LIBRA_ERR_BUSY, message)
    }
    pub fn device(message: impl Into<String>) -> Self {
        Self::new(Status::LIBRA_ERR_DEVICE, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status.describe(), self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
