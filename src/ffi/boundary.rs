//! The single boundary every entry point goes through: panic capture, status mapping and the
//! thread-local last-error message.
use crate::error::{Error, Status};
use std::cell::RefCell;
use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error.
pub fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|slot| *slot.borrow_mut() = c);
}

/// Returns a pointer to this thread's last error message (valid until the next failing call on
/// this thread).
pub fn last_error_ptr() -> *const std::os::raw::c_char {
    LAST_ERROR.with(|slot| slot.borrow().as_ptr())
}

/// Runs `body`, converting an `Err` or a panic into a status and a last-error message.
pub fn guard<F>(function: &str, body: F) -> Status
where
    F: FnOnce() -> Result<(), Error>,
{
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => Status::LIBRA_OK,
        Ok(Err(e)) => {
            set_last_error(&format!("{function}: {}", e.message));
            e.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            set_last_error(&format!("{function}: internal fault: {what}"));
            Status::LIBRA_ERR_PANIC
        }
    }
}

/// Error for a NULL pointer argument, naming it.
pub fn null_arg(name: &str) -> Error {
    Error::new(Status::LIBRA_ERR_NULL_ARGUMENT, format!("argument `{name}` is NULL"))
}

/// Borrows `*ptr` or fails naming the argument.
///
/// # Safety
/// `ptr` must be NULL or point to a valid `T` for the returned lifetime.
pub unsafe fn deref<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, Error> {
    ptr.as_ref().ok_or_else(|| null_arg(name))
}

/// Mutably borrows `*ptr` or fails naming the argument.
///
/// # Safety
/// `ptr` must be NULL or point to a valid, unaliased `T` for the returned lifetime.
pub unsafe fn deref_mut<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T, Error> {
    ptr.as_mut().ok_or_else(|| null_arg(name))
}

/// Views `(ptr, len)` as a slice; a NULL pointer is allowed only with `len == 0`.
///
/// # Safety
/// When non-NULL, `ptr` must point to `len` valid `T`s for the returned lifetime.
pub unsafe fn slice<'a, T>(ptr: *const T, len: usize, name: &str) -> Result<&'a [T], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(null_arg(name));
    }
    if len > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return Err(Error::invalid(format!("length of `{name}` is too large")));
    }
    Ok(std::slice::from_raw_parts(ptr, len))
}

/// Writes `value` through an out-pointer that was checked for NULL beforehand.
///
/// # Safety
/// `out` must be a valid, writable `T` pointer.
pub unsafe fn write_out<T>(out: *mut T, value: T) {
    std::ptr::write(out, value);
}

/// Checks that a caller's config struct is at least as large as the fields we read.
pub fn check_struct_size(given: usize, required: usize, name: &str) -> Result<(), Error> {
    if given < required {
        return Err(Error::invalid(format!(
            "`{name}.struct_size` is {given}, expected at least {required}: initialise it with the matching _default() function"
        )));
    }
    Ok(())
}
