//! Generates the C header with cbindgen from the C skin (`libra-ffi`) alone. The header is
//! written to OUT_DIR on every build (a test compares it with the committed include/libra.h),
//! and over include/libra.h when LIBRA_UPDATE_HEADER is set.
use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    // The C skin's sources: cbindgen reads them and nothing else.
    let skin_dir = crate_dir.join("../libra-ffi");
    println!("cargo:rerun-if-changed=../libra-ffi/src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=LIBRA_UPDATE_HEADER");

    // A versioned soname, so that installed programs load an ABI-compatible version and an
    // install can keep several side by side. Before 1.0 the ABI may change between minor
    // versions, so the soname carries both (liblibra.so.0.1); from 1.0 on, the major alone.
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let major = env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
        let minor = env::var("CARGO_PKG_VERSION_MINOR").unwrap();
        let abi = if major == "0" { format!("0.{minor}") } else { major };
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,liblibra.so.{abi}");
    }

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is readable and valid");
    let version_macros = format!(
        "#define LIBRA_VERSION_MAJOR {}\n#define LIBRA_VERSION_MINOR {}\n#define LIBRA_VERSION_PATCH {}\n#define LIBRA_VERSION_STRING \"{}\"",
        env::var("CARGO_PKG_VERSION_MAJOR").unwrap(),
        env::var("CARGO_PKG_VERSION_MINOR").unwrap(),
        env::var("CARGO_PKG_VERSION_PATCH").unwrap(),
        env::var("CARGO_PKG_VERSION").unwrap(),
    );
    let bindings = match cbindgen::Builder::new()
        .with_crate(&skin_dir)
        .with_config(config)
        .with_after_include(version_macros)
        .generate()
    {
        Ok(b) => b,
        Err(e) => {
            // A syntax error in the skin is reported better by rustc than by cbindgen.
            println!("cargo:warning=cbindgen could not generate the header: {e}");
            return;
        }
    };
    bindings.write_to_file(out_dir.join("libra.h"));
    if env::var_os("LIBRA_UPDATE_HEADER").is_some() {
        bindings.write_to_file(crate_dir.join("include/libra.h"));
    }
}
