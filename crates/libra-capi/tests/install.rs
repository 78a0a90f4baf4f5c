//! Installs the library into a temporary prefix with scripts/install.sh and builds the
//! examples against the installed package only: the C loop with pkg-config (dynamic and
//! static), the C++ loop with CMake's find_package(libra) (shared and static) when cmake is
//! installed, and with g++ directly otherwise. Runs every program built.
use std::path::PathBuf;
use std::process::Command;

mod process_common;
use process_common::*;

#[test]
fn install_and_build_the_examples() {
    let art = artifact_dir();
    build_libraries();

    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("install");
    let _ = std::fs::remove_dir_all(&tmp);
    let prefix = tmp.join("prefix");
    run(Command::new("bash")
        .arg(workspace_root().join("scripts/install.sh"))
        .arg(&prefix)
        .arg("--from")
        .arg(&art));

    let version = env!("CARGO_PKG_VERSION");
    // The soname's version: the major from 1.0 on, major.minor before (see build.rs).
    let abi = match env!("CARGO_PKG_VERSION_MAJOR") {
        "0" => format!("0.{}", env!("CARGO_PKG_VERSION_MINOR")),
        m => m.to_string(),
    };
    let lib = prefix.join("lib");
    for f in [
        "liblibra.a".to_string(),
        format!("liblibra.so.{version}"),
        "pkgconfig/libra.pc".into(),
        "cmake/libra/libraConfig.cmake".into(),
        "cmake/libra/libraConfigVersion.cmake".into(),
    ] {
        assert!(lib.join(&f).is_file(), "{f} not installed");
    }
    assert!(prefix.join("include/libra.h").is_file());
    assert_eq!(
        std::fs::read_link(lib.join("liblibra.so")).unwrap(),
        PathBuf::from(format!("liblibra.so.{abi}"))
    );
    assert_eq!(
        std::fs::read_link(lib.join(format!("liblibra.so.{abi}"))).unwrap(),
        PathBuf::from(format!("liblibra.so.{version}"))
    );
    if have("readelf") {
        let dynamic = run(Command::new("readelf").arg("-d").arg(lib.join(format!("liblibra.so.{version}"))));
        assert!(dynamic.contains(&format!("[liblibra.so.{abi}]")), "soname missing:\n{dynamic}");
    }

    // C with pkg-config, through the example's Makefile.
    let pc_path = lib.join("pkgconfig");
    if have("pkg-config") && have("make") {
        let c_dir = tmp.join("c");
        std::fs::create_dir_all(&c_dir).unwrap();
        for f in ["engine_loop.c", "Makefile"] {
            std::fs::copy(manifest_dir().join("examples/c").join(f), c_dir.join(f)).unwrap();
        }
        run(Command::new("make").arg("-C").arg(&c_dir).arg(format!("PKG_CONFIG_PATH={}", pc_path.display())));
        for exe in ["engine_loop", "engine_loop_static"] {
            let out = run(&mut Command::new(c_dir.join(exe)));
            assert!(out.contains("hit rate"), "{exe}: {out}");
            print!("C {exe}:\n{out}");
        }
        let ldd = run(Command::new("ldd").arg(c_dir.join("engine_loop")));
        assert!(
            ldd.contains(&format!("liblibra.so.{abi}")),
            "dynamic example does not load the soname:\n{ldd}"
        );
    } else {
        println!("skipped the C example: pkg-config or make is not installed");
    }

    // C++ with CMake's find_package, shared and static.
    if have("cmake") {
        for (name, static_link) in [("shared", "OFF"), ("static", "ON")] {
            let build = tmp.join(format!("cpp-{name}"));
            run(Command::new("cmake")
                .arg("-S")
                .arg(manifest_dir().join("examples/cpp"))
                .arg("-B")
                .arg(&build)
                .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
                .arg(format!("-DLIBRA_USE_STATIC={static_link}")));
            run(Command::new("cmake").arg("--build").arg(&build));
            let out = run(&mut Command::new(build.join("engine_loop")));
            assert!(out.contains("hit rate"), "{out}");
            print!("C++ ({name}, CMake):\n{out}");
        }
    } else {
        println!("skipped the CMake build of the C++ example: cmake is not installed (.ci/run installs it)");
        let exe = tmp.join("engine_loop_cpp");
        run(Command::new("g++")
            .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic"])
            .arg(format!("-I{}", prefix.join("include").display()))
            .arg(manifest_dir().join("examples/cpp/engine_loop.cpp"))
            .arg("-o")
            .arg(&exe)
            .arg(format!("-L{}", lib.display()))
            .arg("-llibra")
            .arg(format!("-Wl,-rpath,{}", lib.display())));
        let out = run(&mut Command::new(&exe));
        assert!(out.contains("hit rate"), "{out}");
        print!("C++ (g++):\n{out}");
    }
}
