//! The single boundary every entry point goes through: panic capture, status mapping and the
//! thread-local last-error message.
use crate::status::libra_status as Status;
use libra::error::Error;
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
            e.status.into()
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
    Error::new(libra::Status::LIBRA_ERR_NULL_ARGUMENT, format!("argument `{name}` is NULL"))
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
    check_aligned(ptr, name)?;
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

/// Fails, naming the argument, unless `ptr` is aligned for `T` (reading through a misaligned
/// pointer is undefined behaviour).
pub fn check_aligned<T>(ptr: *const T, name: &str) -> Result<(), Error> {
    let align = std::mem::align_of::<T>();
    if (ptr as usize) % align != 0 {
        return Err(Error::invalid(format!("`{name}` ({ptr:p}) is not aligned to {align} bytes")));
    }
    Ok(())
}

/// A C struct that starts with `size_t struct_size` and grows only by appending fields, so a
/// caller built against an older, smaller layout keeps working: the library reads and writes
/// `min(struct_size, sizeof)` bytes and takes the fields the caller lacks from
/// [`Versioned::defaults`].
///
/// # Safety
/// The implementor is `#[repr(C)]`, its first field is a `usize` (the struct size), and every
/// bit pattern of every field is a valid value (integers, floats, raw pointers; no Rust enum,
/// `bool` or reference), so bytes from C can never make an invalid value.
pub unsafe trait Versioned: Copy {
    /// `sizeof` of the first published layout: a smaller `struct_size` is refused.
    const FIRST_SIZE: usize;
    /// Where the fields that an older caller's struct lacks come from.
    fn defaults() -> Self;
}

/// The `struct_size` the caller set in `*ptr`, checked: `ptr` non-NULL and aligned, and the
/// size at least the first published one.
///
/// # Safety
/// `ptr` is NULL or points to at least `size_of::<usize>()` readable bytes.
pub unsafe fn versioned_size<T: Versioned>(ptr: *const T, name: &str) -> Result<usize, Error> {
    if ptr.is_null() {
        return Err(null_arg(name));
    }
    check_aligned(ptr, name)?;
    let given = std::ptr::read(ptr as *const usize);
    if given < T::FIRST_SIZE {
        return Err(Error::invalid(format!(
            "`{name}.struct_size` is {given}, expected at least {}: initialise it with the matching _default() function",
            T::FIRST_SIZE
        )));
    }
    Ok(given)
}

/// Reads a caller's struct: `min(struct_size, size_of::<T>())` bytes from `ptr`, the rest from
/// `T::defaults()`. The result's `struct_size` is the caller's.
///
/// # Safety
/// `ptr` is NULL or points to `struct_size` readable bytes (as the caller's `struct_size` says).
pub unsafe fn read_versioned<T: Versioned>(ptr: *const T, name: &str) -> Result<T, Error> {
    let given = versioned_size(ptr, name)?;
    let mut value = T::defaults();
    let n = given.min(std::mem::size_of::<T>());
    // SAFETY (for the reader): the caller holds `given >= n` bytes; `T: Versioned` makes any
    // bytes a valid `T`; the two objects are distinct.
    std::ptr::copy_nonoverlapping(ptr as *const u8, &mut value as *mut T as *mut u8, n);
    Ok(value)
}

/// Writes `value` into a caller's struct whose `struct_size` the caller set: only
/// `min(struct_size, size_of::<T>())` bytes are written, and `struct_size` keeps the caller's
/// value. Fails, writing nothing, when `ptr` is NULL, misaligned or its size below the first
/// published one.
///
/// # Safety
/// `ptr` is NULL or points to `struct_size` writable bytes.
pub unsafe fn write_versioned<T: Versioned>(ptr: *mut T, value: T, name: &str) -> Result<(), Error> {
    let given = versioned_size(ptr, name)?;
    let mut value = value;
    std::ptr::write(&mut value as *mut T as *mut usize, given);
    let n = given.min(std::mem::size_of::<T>());
    std::ptr::copy_nonoverlapping(&value as *const T as *const u8, ptr as *mut u8, n);
    Ok(())
}

/// Reads element `index` of a caller's array of versioned structs laid out `stride` bytes
/// apart (the `struct_size` of its first element): the stride must keep every element aligned
/// and each element's `struct_size` must equal it.
///
/// # Safety
/// `base` is NULL or points to at least `(index + 1) * stride` readable bytes.
pub unsafe fn read_versioned_at<T: Versioned>(
    base: *const T,
    index: usize,
    stride: usize,
    name: &str,
) -> Result<T, Error> {
    if stride % std::mem::align_of::<T>() != 0 {
        return Err(Error::invalid(format!(
            "`{name}[0].struct_size` is {stride}, not a multiple of the struct's alignment ({})",
            std::mem::align_of::<T>()
        )));
    }
    let offset = index
        .checked_mul(stride)
        .filter(|&o| o <= isize::MAX as usize)
        .ok_or_else(|| Error::invalid(format!("`{name}` is too large: {index} x {stride} bytes")))?;
    let element = (base as *const u8).wrapping_add(offset) as *const T;
    let value = read_versioned(element, &format!("{name}[{index}]"))?;
    let own = std::ptr::read(element as *const usize);
    if own != stride {
        return Err(Error::invalid(format!(
            "`{name}[{index}].struct_size` is {own}, `{name}[0].struct_size` is {stride}: every element must be the same size"
        )));
    }
    Ok(value)
}

/// The name of the function that declared `here`, from `type_name_of_val(&here)`
/// (`path::to::function::here`); used by [`entry!`].
pub fn enclosing_function(here: &'static str) -> &'static str {
    let path = here.strip_suffix("::here").unwrap_or(here);
    path.rsplit("::").next().unwrap_or(path)
}

/// The body of a C entry point: runs it through [`guard`] with the entry point's own name, so
/// a last-error message always names the function that failed. `entry!({ ...; Ok(()) })`
/// returns a status; `entry!(void { ... })` is for functions that return nothing (`_free`):
/// a panic there is caught and left as the last error.
macro_rules! entry {
    ($body:block) => {{
        fn here() {}
        let name = $crate::boundary::enclosing_function(::std::any::type_name_of_val(&here));
        $crate::boundary::guard(name, || $body)
    }};
    (void $body:block) => {{
        fn here() {}
        let name = $crate::boundary::enclosing_function(::std::any::type_name_of_val(&here));
        let _ = $crate::boundary::guard(name, || {
            $body;
            Ok(())
        });
    }};
}
pub(crate) use entry;

#[cfg(test)]
mod tests {
    use super::*;

    /// Version 2 of a test struct; version 1 ended before `added`.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct V2 {
        struct_size: usize,
        a: u32,
        b: f64,
        added: u64,
    }
    /// The same struct as an older caller declared it.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct V1 {
        struct_size: usize,
        a: u32,
        b: f64,
    }

    // SAFETY: repr(C), `usize` first, integer and float fields only.
    unsafe impl Versioned for V2 {
        const FIRST_SIZE: usize = std::mem::size_of::<V1>();
        fn defaults() -> Self {
            V2 { struct_size: std::mem::size_of::<Self>(), a: 1, b: 2.0, added: 77 }
        }
    }

    #[test]
    fn read_versioned_takes_missing_fields_from_defaults() {
        let old = V1 { struct_size: std::mem::size_of::<V1>(), a: 5, b: 6.5 };
        // SAFETY: `old` is a live, aligned V1 of the size it declares.
        let got = unsafe { read_versioned(&old as *const V1 as *const V2, "cfg") }.unwrap();
        assert_eq!(got, V2 { struct_size: std::mem::size_of::<V1>(), a: 5, b: 6.5, added: 77 });

        let new = V2 { struct_size: std::mem::size_of::<V2>(), a: 9, b: 1.5, added: 3 };
        // SAFETY: as above.
        assert_eq!(unsafe { read_versioned(&new, "cfg") }.unwrap(), new);
    }

    #[test]
    fn versioned_sizes_below_the_first_layout_and_misaligned_pointers_are_refused() {
        let small = V1 { struct_size: std::mem::size_of::<V1>() - 1, a: 0, b: 0.0 };
        // SAFETY: `small` is live and aligned.
        let e = unsafe { read_versioned(&small as *const V1 as *const V2, "cfg") }.unwrap_err();
        assert_eq!(e.status, Status::LIBRA_ERR_INVALID_ARGUMENT);
        assert!(e.message.contains("`cfg.struct_size` is 23"), "{}", e.message);

        // SAFETY: NULL is checked before any access.
        let e = unsafe { read_versioned(std::ptr::null::<V2>(), "cfg") }.unwrap_err();
        assert_eq!(e.status, Status::LIBRA_ERR_NULL_ARGUMENT);

        let buf = [0u64; 8];
        let odd = (buf.as_ptr() as *const u8).wrapping_add(4) as *const V2;
        // SAFETY: the misaligned pointer is refused before it is read.
        let e = unsafe { read_versioned(odd, "cfg") }.unwrap_err();
        assert!(e.message.contains("not aligned to 8 bytes"), "{}", e.message);
    }

    #[test]
    fn write_versioned_writes_only_the_callers_bytes_and_keeps_its_size() {
        #[repr(C)]
        struct Guarded {
            v1: V1,
            after: [u8; 16],
        }
        let mut g =
            Guarded { v1: V1 { struct_size: std::mem::size_of::<V1>(), a: 0, b: 0.0 }, after: [0xAB; 16] };
        let value = V2 { struct_size: 999, a: 4, b: 8.0, added: u64::MAX };
        // SAFETY: `g.v1` holds the size it declares.
        unsafe { write_versioned(&mut g.v1 as *mut V1 as *mut V2, value, "out") }.unwrap();
        assert_eq!(g.v1, V1 { struct_size: std::mem::size_of::<V1>(), a: 4, b: 8.0 });
        assert_eq!(g.after, [0xAB; 16]);

        let mut full = V2 { struct_size: std::mem::size_of::<V2>(), a: 0, b: 0.0, added: 0 };
        // SAFETY: a live V2.
        unsafe { write_versioned(&mut full, value, "out") }.unwrap();
        assert_eq!(full, V2 { struct_size: std::mem::size_of::<V2>(), ..value });

        let mut tiny = V2 { struct_size: 8, a: 1, b: 1.0, added: 1 };
        // SAFETY: a live V2; the size is refused before anything is written.
        let e = unsafe { write_versioned(&mut tiny, value, "out") }.unwrap_err();
        assert!(e.message.contains("`out.struct_size` is 8"), "{}", e.message);
        assert_eq!(tiny, V2 { struct_size: 8, a: 1, b: 1.0, added: 1 });
    }

    #[test]
    fn strided_arrays_are_read_per_element_and_checked_for_alignment() {
        let v1 = |a| V1 { struct_size: std::mem::size_of::<V1>(), a, b: a as f64 };
        let arr = [v1(1), v1(2), v1(3)];
        let base = arr.as_ptr() as *const V2;
        let stride = std::mem::size_of::<V1>();
        for (i, want) in [1u32, 2, 3].into_iter().enumerate() {
            // SAFETY: `arr` holds three elements `stride` bytes apart.
            let got = unsafe { read_versioned_at(base, i, stride, "dims") }.unwrap();
            assert_eq!((got.a, got.b, got.added), (want, want as f64, 77));
        }
        // SAFETY: refused before any element is read.
        let e = unsafe { read_versioned_at(base, 1, stride + 4, "dims") }.unwrap_err();
        assert!(e.message.contains("alignment"), "{}", e.message);

        let mut mixed = arr;
        mixed[1].struct_size = std::mem::size_of::<V2>();
        // SAFETY: as above.
        let e = unsafe { read_versioned_at(mixed.as_ptr() as *const V2, 1, stride, "dims") }.unwrap_err();
        assert!(e.message.contains("`dims[1].struct_size` is 32"), "{}", e.message);
    }

    #[test]
    fn slices_must_be_aligned() {
        let buf = [0u64; 4];
        let odd = (buf.as_ptr() as *const u8).wrapping_add(1) as *const f64;
        // SAFETY: refused before it is read.
        let e = unsafe { slice(odd, 2, "bandwidths") }.unwrap_err();
        assert!(e.message.contains("`bandwidths`"), "{}", e.message);
    }

    fn libra_probe_entry(fail: bool) -> Status {
        entry!({
            if fail {
                Err(Error::invalid("`x` is bad"))
            } else {
                Ok(())
            }
        })
    }

    fn libra_probe_void_entry() {
        entry!(void {
            if std::hint::black_box(true) {
                panic!("dropped twice");
            }
        })
    }

    #[test]
    fn entry_names_the_function_it_is_written_in() {
        assert_eq!(libra_probe_entry(false), Status::LIBRA_OK);
        assert_eq!(libra_probe_entry(true), Status::LIBRA_ERR_INVALID_ARGUMENT);
        // SAFETY: the last error is a live NUL-terminated string until the next failure.
        let msg = || unsafe { std::ffi::CStr::from_ptr(last_error_ptr()) }.to_str().unwrap().to_string();
        assert_eq!(msg(), "libra_probe_entry: `x` is bad");
        libra_probe_void_entry();
        assert_eq!(msg(), "libra_probe_void_entry: internal fault: dropped twice");
    }
}
