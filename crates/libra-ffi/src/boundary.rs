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
    match guard_value(function, body) {
        Ok(()) => Status::LIBRA_OK,
        Err(status) => status,
    }
}

/// Runs `body`, returning its value, or the status of its `Err` or panic (recorded as the last
/// error, prefixed with `function`).
pub fn guard_value<T, F>(function: &str, body: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, Error>,
{
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => {
            set_last_error(&format!("{function}: {}", e.message));
            Err(e.status.into())
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            set_last_error(&format!("{function}: internal fault: {what}"));
            Err(Status::LIBRA_ERR_PANIC)
        }
    }
}

/// Error for a NULL pointer argument, naming it.
pub fn null_arg(name: &str) -> Error {
    Error::new(libra::Status::LIBRA_ERR_NULL_ARGUMENT, format!("argument `{name}` is NULL"))
}

/// Fails naming the argument unless `ptr` is non-NULL and aligned for `T`: an out-pointer,
/// checked before any work so that a bad one changes nothing.
pub fn check_ptr<T>(ptr: *const T, name: &str) -> Result<(), Error> {
    if ptr.is_null() {
        return Err(null_arg(name));
    }
    check_aligned(ptr, name)
}

/// Borrows `*ptr` or fails naming the argument (NULL or misaligned).
///
/// # Safety
/// `ptr` must be NULL, misaligned, or point to a valid `T` for the returned lifetime.
pub unsafe fn deref<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, Error> {
    check_aligned(ptr, name)?;
    // SAFETY: `ptr` is NULL or valid for `'a`, as this function requires.
    unsafe { ptr.as_ref() }.ok_or_else(|| null_arg(name))
}

/// Mutably borrows `*ptr` or fails naming the argument (NULL or misaligned).
///
/// # Safety
/// `ptr` must be NULL, misaligned, or point to a valid, unaliased `T` for the returned
/// lifetime.
pub unsafe fn deref_mut<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T, Error> {
    check_aligned(ptr, name)?;
    // SAFETY: `ptr` is NULL or valid and unaliased for `'a`, as this function requires.
    unsafe { ptr.as_mut() }.ok_or_else(|| null_arg(name))
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
    // SAFETY: non-NULL and aligned (checked above), `len` elements long with a byte length
    // within `isize::MAX` (checked above), valid for `'a` as this function requires.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Writes `value` through an out-pointer that was checked (non-NULL, aligned) beforehand.
///
/// # Safety
/// `out` must be a valid, writable `T` pointer.
pub unsafe fn write_out<T>(out: *mut T, value: T) {
    // SAFETY: `out` is valid and writable, as this function requires.
    unsafe { std::ptr::write(out, value) };
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
    // SAFETY: non-NULL and aligned (checked above; a `usize` first field shares the struct's
    // alignment), and the caller provides at least the `usize` it starts with.
    let given = unsafe { std::ptr::read(ptr as *const usize) };
    if given < T::FIRST_SIZE {
        return Err(Error::invalid(format!(
            "`{name}.struct_size` is {given}, expected at least {}: set it to the struct's sizeof before passing the struct, _default() functions included",
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
    // SAFETY: `ptr` is NULL or holds the `struct_size` bytes it declares, per the contract above.
    let given = unsafe { versioned_size(ptr, name) }?;
    let mut value = T::defaults();
    let n = given.min(std::mem::size_of::<T>());
    // SAFETY: the caller holds `given >= n` readable bytes; `T: Versioned` makes any bytes a
    // valid `T`; `value` is a distinct local of `size_of::<T>() >= n` bytes.
    unsafe { std::ptr::copy_nonoverlapping(ptr as *const u8, &mut value as *mut T as *mut u8, n) };
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
    // SAFETY: `ptr` is NULL or holds the `struct_size` bytes it declares, per the contract above.
    let given = unsafe { versioned_size(ptr, name) }?;
    let mut value = value;
    // SAFETY: `T: Versioned` starts with its `usize` struct size.
    unsafe { std::ptr::write(&mut value as *mut T as *mut usize, given) };
    let n = given.min(std::mem::size_of::<T>());
    // SAFETY: the caller holds `given >= n` writable bytes at `ptr`, distinct from the local.
    unsafe { std::ptr::copy_nonoverlapping(&value as *const T as *const u8, ptr as *mut u8, n) };
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
    // SAFETY: `element` is NULL or holds the `struct_size` bytes it declares, per the contract above.
    let value = unsafe { read_versioned(element, &format!("{name}[{index}]")) }?;
    // SAFETY: `read_versioned` just read this element, so it is aligned and readable.
    let own = unsafe { std::ptr::read(element as *const usize) };
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

/// The body of every C entry point: runs it through [`guard`] with the entry point's own name,
/// so a last-error message always names the function that failed, and no panic crosses into C.
/// - `entry!({ ...; Ok(()) })` returns a `libra_status`;
/// - `entry!(void { ... })` is for functions that return nothing (`_free`): a panic there is
///   caught and left as the last error;
/// - `entry!(or FALLBACK, { ...; Ok(value) })` returns the body's value, or `FALLBACK` after an
///   error (recorded as the last error) or a panic.
///
/// cbindgen reads the signature, which stays plain Rust around the macro: it does not expand
/// macros, so a macro that wrote the whole `#[no_mangle] pub unsafe extern "C" fn` would hide
/// the function from the header. `tests::every_entry_point_follows_the_convention` checks the
/// signatures instead.
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
    (or $fallback:expr, $body:block) => {{
        fn here() {}
        let name = $crate::boundary::enclosing_function(::std::any::type_name_of_val(&here));
        $crate::boundary::guard_value(name, || $body).unwrap_or($fallback)
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

    /// Every C function of the skin: its name, whether the signature is exported as the
    /// convention says, and the start of its body.
    fn entry_points() -> Vec<(String, String, String)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
        let mut found = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let mut rest = text.as_str();
            while let Some(at) = rest.find("extern \"C\" fn libra_") {
                let before = &rest[..at];
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let head = &rest[line_start..at];
                let attrs: Vec<&str> =
                    before[..line_start].lines().rev().take_while(|l| l.starts_with("#[")).collect();
                let after = &rest[at..];
                let name = after["extern \"C\" fn ".len()..].split('(').next().unwrap().to_string();
                let open = after.find('(').unwrap();
                let close = open + after[open..].find(')').unwrap();
                let params = after[open + 1..close].trim().to_string();
                let body_at = after.find('{').unwrap();
                let body: String = after[body_at + 1..].trim_start().chars().take(12).collect();
                let signature = format!(
                    "{}{head}|{params}",
                    if attrs.contains(&"#[no_mangle]") { "#[no_mangle] " } else { "" }
                );
                found.push((name, signature, body));
                rest = &after[body_at..];
            }
        }
        found
    }

    /// The one convention of the skin: exported by name; `unsafe extern "C"` whenever it takes
    /// a pointer; the body runs through `entry!` whenever there is an argument to fail on (a
    /// function without parameters only returns a constant or this thread's last error).
    #[test]
    fn every_entry_point_follows_the_convention() {
        let found = entry_points();
        assert!(found.len() >= 60, "only {} entry points found", found.len());
        let mut wrong = Vec::new();
        for (name, signature, body) in &found {
            let (head, params) = signature.split_once('|').unwrap();
            let takes_pointer = params.contains('*');
            let want = if takes_pointer { "#[no_mangle] pub unsafe " } else { "#[no_mangle] pub " };
            if head != want {
                wrong.push(format!("{name}: `{head}`, want `{want}extern \"C\" fn`"));
            }
            if !params.is_empty() && !body.starts_with("entry!(") {
                wrong.push(format!("{name}: body starts `{body}`, not `entry!(`"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
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
