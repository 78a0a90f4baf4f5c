#!/usr/bin/env bash
# Installs libra under a prefix:
#   PREFIX/lib/liblibra.a
#   PREFIX/lib/liblibra.so.X.Y.Z, liblibra.so.ABI -> it, liblibra.so -> liblibra.so.ABI
#     (ABI, the soname's version: X from 1.0 on, X.Y before, as the ABI may change between
#     0.x minor versions)
#   PREFIX/include/libra.h
#   PREFIX/lib/pkgconfig/libra.pc
#   PREFIX/lib/cmake/libra/libraConfig.cmake, libraConfigVersion.cmake
#
# Usage: scripts/install.sh PREFIX [--from DIR]
#   Builds the release libraries first, unless --from names a directory that already holds
#   liblibra.a and liblibra.so (e.g. target/debug).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

if [ $# -lt 1 ]; then
    echo "usage: $0 PREFIX [--from DIR]" >&2
    exit 2
fi
prefix="$1"
shift
# The crate that builds the artefacts and holds the header and package templates.
capi="${root}/crates/libra-capi"
from=""
while [ $# -gt 0 ]; do
    case "$1" in
        --from) from="$2"; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

if [ -z "${from}" ]; then
    cargo build --release --lib --manifest-path "${capi}/Cargo.toml"
    from="${CARGO_TARGET_DIR:-${root}/target}/release"
fi
for f in liblibra.a liblibra.so; do
    [ -f "${from}/${f}" ] || { echo "error: ${from}/${f} not found" >&2; exit 1; }
done

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "${root}/Cargo.toml" | head -n1)"
major="${version%%.*}"
minor="$(echo "${version}" | cut -d. -f2)"
if [ "${major}" = 0 ]; then abi="0.${minor}"; else abi="${major}"; fi

mkdir -p "${prefix}/lib/pkgconfig" "${prefix}/lib/cmake/libra" "${prefix}/include"
prefix="$(cd "${prefix}" && pwd)"
install -m 644 "${from}/liblibra.a" "${prefix}/lib/liblibra.a"
install -m 755 "${from}/liblibra.so" "${prefix}/lib/liblibra.so.${version}"
ln -sf "liblibra.so.${version}" "${prefix}/lib/liblibra.so.${abi}"
ln -sf "liblibra.so.${abi}" "${prefix}/lib/liblibra.so"
install -m 644 "${capi}/include/libra.h" "${prefix}/include/libra.h"

subst() {
    sed -e "s|@VERSION@|${version}|g" -e "s|@MAJOR@|${major}|g" -e "s|@MINOR@|${minor}|g" -e "s|@ABI@|${abi}|g" "$1" > "$2"
}
subst "${capi}/packaging/libra.pc.in" "${prefix}/lib/pkgconfig/libra.pc"
subst "${capi}/packaging/libraConfig.cmake.in" "${prefix}/lib/cmake/libra/libraConfig.cmake"
subst "${capi}/packaging/libraConfigVersion.cmake.in" "${prefix}/lib/cmake/libra/libraConfigVersion.cmake"

echo "installed libra ${version} under ${prefix}"
