#!/usr/bin/env bash
# GPU check: runs the CUDA backend's GPU tests and the copy benchmark, and writes
# DIR/gpu_check.json (a summary), DIR/bench_copy.json and DIR/*.log.
#
#   scripts/gpu_check.sh --prepare   on a machine with network and NVRTC (no GPU needed):
#                                    builds release binaries of the GPU tests and the benchmark
#                                    into target/gpu-check/bin and the kernels' cubins (sm_80,
#                                    sm_90) into target/gpu-check/kernels. Carry that directory
#                                    (a few MiB, git-ignored) to the GPU machine with the tree.
#   scripts/gpu_check.sh DIR         on the GPU machine. Uses target/gpu-check/bin when present
#                                    (no cargo, network or NVRTC needed there); otherwise builds
#                                    with `cargo --offline`, which needs the crates already in
#                                    ~/.cargo or vendored (`cargo vendor target/vendor`).
#
# The GPU machine needs the NVIDIA driver (libcuda). Exit status: 0 when every GPU test passed
# (or skipped for lack of a GPU, which the summary says), 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
gpu_dir="${root}/target/gpu-check"

cargo_offline() { # subcommand, then its arguments: the offline flags go before any `--`
    local sub=$1
    shift
    if [ -d "${root}/target/vendor" ]; then
        cargo "${sub}" --offline --config 'source.crates-io.replace-with="vendored"' \
            --config "source.vendored.directory=\"${root}/target/vendor\"" "$@"
    else
        cargo "${sub}" --offline "$@"
    fi
}

# Prints the executable of each test target / example built by `cargo ... --message-format=json`.
executables() {
    python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
}

if [ "${1:-}" = "--prepare" ]; then
    set -e
    rm -rf "${gpu_dir}" && mkdir -p "${gpu_dir}/bin" "${gpu_dir}/kernels"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${root}/target}"
    { cargo test --release --no-run --test cuda_gpu --test kernels_nvrtc --message-format=json
      cargo build --release --example bench_copy --message-format=json; } | executables |
        while read -r name exe; do
            cp "${exe}" "${gpu_dir}/bin/${name}"
            strip --strip-debug "${gpu_dir}/bin/${name}" 2>/dev/null || true
        done
    "${gpu_dir}/bin/bench_copy" --precompile "${gpu_dir}/kernels"
    ls -l "${gpu_dir}/bin" "${gpu_dir}/kernels"
    du -sh "${gpu_dir}"
    exit 0
fi

out="${1:?usage: scripts/gpu_check.sh DIR | --prepare}"
mkdir -p "${out}"
out=$(cd "${out}" && pwd)
[ -d "${gpu_dir}/kernels" ] && export LIBRA_KERNEL_CACHE_DIR="${gpu_dir}/kernels"

if [ -x "${gpu_dir}/bin/cuda_gpu" ] && [ -x "${gpu_dir}/bin/bench_copy" ]; then
    build="prebuilt"
else
    build="cargo"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${root}/target}"
    if ! cargo_offline build --release --tests --examples >"${out}/build.log" 2>&1; then
        echo "build failed: see ${out}/build.log"
        printf '{"binaries": "cargo", "build_ok": false}\n' >"${out}/gpu_check.json"
        exit 1
    fi
fi

# Runs a test target or the benchmark with a time limit, logging to DIR/NAME.log.
run_logged() { # name, then arguments for the benchmark
    local name=$1
    shift
    local cmd
    if [ "${build}" = "prebuilt" ]; then
        cmd=("${gpu_dir}/bin/${name}")
    elif [ "${name}" = "bench_copy" ]; then
        cmd=(cargo_offline run --release --example bench_copy --)
    else
        cmd=(cargo_offline test --release --test "${name}" --)
    fi
    if [ "${name}" = "bench_copy" ]; then cmd+=("$@"); else cmd+=(--test-threads=1 --nocapture); fi
    export -f cargo_offline
    export root
    timeout 300 bash -c '"$@"' _ "${cmd[@]}" >"${out}/${name}.log" 2>&1
}

device=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 | tr -d '"')
echo "device: ${device:-unknown}; binaries: ${build}; kernel cache: ${LIBRA_KERNEL_CACHE_DIR:-none}"

status_of() { # test target -> pass / fail / skipped
    if ! run_logged "$1"; then
        echo fail
    elif grep -q "skipped" "${out}/$1.log"; then
        echo skipped
    else
        echo pass
    fi
}

gpu_tests=$(status_of cuda_gpu)
nvrtc_test=$(status_of kernels_nvrtc)
echo "cuda_gpu: ${gpu_tests}; kernels_nvrtc: ${nvrtc_test}"

bench="skipped"
if [ "${gpu_tests}" != "skipped" ]; then
    if run_logged bench_copy --json "${out}/bench_copy.json"; then
        bench="ok"
    else
        bench="fail"
    fi
    cat "${out}/bench_copy.log"
fi

bench_json="null"
[ -s "${out}/bench_copy.json" ] && bench_json=$(cat "${out}/bench_copy.json")
cat >"${out}/gpu_check.json" <<EOF
{
  "device": "${device:-unknown}",
  "binaries": "${build}",
  "kernel_cache": "${LIBRA_KERNEL_CACHE_DIR:-}",
  "cuda_gpu_tests": "${gpu_tests}",
  "kernels_nvrtc_test": "${nvrtc_test}",
  "bench": "${bench}",
  "bench_copy": ${bench_json}
}
EOF
echo "wrote ${out}/gpu_check.json"
[ "${gpu_tests}" != "fail" ] && [ "${bench}" != "fail" ]
