#!/usr/bin/env bash
# GPU check: runs the CUDA backend's device tests and the copy benchmark on a GPU machine and
# writes DIR/gpu_check.json (always, through a trap, whatever ends the run), DIR/bench_copy.json
# and DIR/*.log.
#
#   scripts/gpu_check.sh --prepare   on a build machine (network, a compiler, NVRTC; no GPU):
#       builds release binaries of the device tests and the benchmark into target/gpu-check/bin,
#       the kernels as cubins for sm_80, 86, 89, 90, 100, 120 and as PTX into
#       target/gpu-check/kernels, and target/gpu-check/manifest.txt (commit, the newest GLIBC
#       symbol version each binary needs). Carry target/gpu-check with the tree (a few MiB).
#   scripts/gpu_check.sh DIR         on the GPU machine: needs only the NVIDIA driver, bash and
#       coreutils; no compiler, crates or NVRTC. Falls back to `cargo --offline` when there are no
#       prebuilt binaries.
#
# One deadline covers the whole run (LIBRA_GPU_CHECK_SECONDS, at most 480); every step runs
# under `timeout -k`, with what is left. When nvidia-smi sees a GPU, a skipped device test is a
# failure. The script refuses libra's CPU stand-in for libcuda (tests/cuda_standin): it is not
# a GPU. Targets checked on a GPU, at 256 blocks: the kernel reaches 85% of the pinned-memcpy
# peak and 5x the per-block memcpy baseline. Exit status: 0 all passed, 1 a failure, 3 refused.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
gpu_dir="${root}/target/gpu-check"
archs="80 86 89 90 100 120"
device_tests="cuda_gpu cuda_cache stress_threads"

json_escape() { # stdin -> a JSON string body
    sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/ /g' | tr -d '\000-\010\013-\037' | awk 'BEGIN{ORS="\\n"} {print}' |
        sed -e 's/\\n$//'
}

newest_glibc() { # binary -> the newest GLIBC_x.y it needs
    objdump -T "$1" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1
}

if [ "${1:-}" = "--prepare" ]; then
    set -e
    rm -rf "${gpu_dir}" && mkdir -p "${gpu_dir}/bin" "${gpu_dir}/kernels"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${root}/target}"
    list=$(mktemp)
    { cargo test --release --no-run --message-format=json -p libra-testkit --test cuda_gpu --test cuda_cache --test stress_threads \
        --test kernels_nvrtc
      cargo build --release -p libra --example bench_copy --message-format=json; } >"${list}"
    grep '"reason":"compiler-artifact"' "${list}" | grep '"executable":"' |
        sed -e 's/.*"target":{[^}]*"name":"\([^"]*\)".*"executable":"\([^"]*\)".*/\1 \2/' |
        while read -r name exe; do
            cp "${exe}" "${gpu_dir}/bin/${name}"
            strip --strip-debug "${gpu_dir}/bin/${name}" 2>/dev/null || true
        done
    rm -f "${list}"
    for t in ${device_tests} kernels_nvrtc bench_copy; do
        [ -x "${gpu_dir}/bin/${t}" ] || { echo "prepare: ${t} was not built"; exit 1; }
    done
    "${gpu_dir}/bin/bench_copy" --precompile "${gpu_dir}/kernels"
    for a in ${archs}; do
        ls "${gpu_dir}/kernels"/libra_swap_sm${a}_*.cubin >/dev/null || { echo "prepare: no cubin for sm_${a}"; exit 1; }
    done
    ls "${gpu_dir}/kernels"/libra_swap_compute*_*.ptx >/dev/null || { echo "prepare: no PTX"; exit 1; }
    {
        echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')"
        echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(ldd --version 2>/dev/null | head -n1)"
        for b in "${gpu_dir}"/bin/*; do echo "glibc $(basename "${b}") $(newest_glibc "${b}")"; done
    } >"${gpu_dir}/manifest.txt"
    cat "${gpu_dir}/manifest.txt"
    ls -l "${gpu_dir}/bin" "${gpu_dir}/kernels"
    du -sh "${gpu_dir}"
    exit 0
fi

out="${1:?usage: scripts/gpu_check.sh DIR | --prepare}"
mkdir -p "${out}"
out=$(cd "${out}" && pwd)
total=${LIBRA_GPU_CHECK_SECONDS:-460}
[ "${total}" -gt 480 ] && total=480
deadline=$(($(date +%s) + total))
left() { echo $((deadline - $(date +%s))); }

# What the JSON reports; filled as the run goes, written by the trap on any exit.
status="incomplete"
reason=""
tests_json=""
bench_state="not run"
kernel_status="unknown"
gpu_seen=false
manifest_commit="unknown"
glibc_need=""
write_json() {
    local bench="null"
    [ -s "${out}/bench_copy.json" ] && bench=$(cat "${out}/bench_copy.json")
    cat >"${out}/gpu_check.json" <<EOF
{
  "status": "${status}",
  "reason": "$(printf '%s' "${reason}" | json_escape)",
  "commit": "$(printf '%s' "${manifest_commit}" | json_escape)",
  "commit_here": "$(git rev-parse HEAD 2>/dev/null || echo unknown)",
  "binaries": "${build:-none}",
  "glibc_required": "${glibc_need}",
  "glibc_here": "$( (getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown) | json_escape)",
  "gpu": "$( (nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>/dev/null || echo none) | head -n1 | json_escape)",
  "cuda_driver": "$( (nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' || echo unknown) | head -n1)",
  "kernel": "$(uname -sr)",
  "kernel_cache": "${LIBRA_KERNEL_CACHE_DIR:-}",
  "kernel_status": "$(printf '%s' "${kernel_status}" | json_escape)",
  "seconds_left": $(left),
  "tests": [${tests_json}
  ],
  "bench": "${bench_state}",
  "bench_copy": ${bench}
}
EOF
    echo "wrote ${out}/gpu_check.json (${status})"
}
finish() {
    local rc=$?
    [ "${status}" = "incomplete" ] && reason="${reason:-the run ended early (exit ${rc})}"
    write_json
}
trap finish EXIT
trap 'reason="interrupted"; exit 1' INT TERM

# Runs a command with what is left of the deadline (at most $1 seconds), logging to $2.
step() {
    local limit=$1 log=$2
    shift 2
    local t
    t=$(left)
    t=$((t - 10))
    [ "${t}" -gt "${limit}" ] && t=${limit}
    if [ "${t}" -le 5 ]; then
        echo "no time left for: $*" >"${log}"
        return 124
    fi
    timeout -k 10 "${t}" "$@" >"${log}" 2>&1
}

# The stand-in is refused wherever the loader would find it: LD_LIBRARY_PATH first, as ld.so.
for d in ${LD_LIBRARY_PATH:+${LD_LIBRARY_PATH//:/ }}; do
    for n in libcuda.so libcuda.so.1; do
        if [ -e "${d}/${n}" ] && grep -aq libra_cuda_standin "$(readlink -f "${d}/${n}")"; then
            status="refused"
            reason="${d}/${n} is libra's CPU stand-in for libcuda, not a GPU driver"
            echo "${reason}"
            exit 3
        fi
    done
done

if nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then gpu_seen=true; fi
[ -d "${gpu_dir}/kernels" ] && export LIBRA_KERNEL_CACHE_DIR="${gpu_dir}/kernels"
[ -f "${gpu_dir}/manifest.txt" ] && manifest_commit=$(awk '/^commit /{print $2}' "${gpu_dir}/manifest.txt")

build="cargo"
if [ -x "${gpu_dir}/bin/cuda_gpu" ] && [ -x "${gpu_dir}/bin/bench_copy" ]; then
    build="prebuilt"
    glibc_need=$(awk '/^glibc /{print $3}' "${gpu_dir}/manifest.txt" 2>/dev/null | sort -uV | tail -n1)
    have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print "GLIBC_" $2}')
    if [ -n "${glibc_need}" ] && [ -n "${have}" ] &&
        [ "$(printf '%s\n%s\n' "${glibc_need}" "${have}" | sort -V | tail -n1)" != "${have}" ]; then
        status="fail"
        reason="the prebuilt binaries need ${glibc_need}; this machine has ${have}"
        echo "${reason}"
        exit 1
    fi
else
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${root}/target}"
    if ! step 300 "${out}/build.log" cargo build --offline --release --workspace --tests --examples; then
        status="fail"
        reason="no prebuilt binaries and the offline build failed: see build.log"
        exit 1
    fi
fi

# Runs one test binary, one thread, captured output shown at the end; appends per-test results.
run_tests() { # name, then filters
    local name=$1
    shift
    local cmd=("${gpu_dir}/bin/${name}")
    [ "${build}" = "cargo" ] && cmd=(cargo test --offline --release --workspace --test "${name}" --)
    step 240 "${out}/${name}.log" "${cmd[@]}" --test-threads=1 --show-output "$@"
    local rc=$?
    local rows
    rows=$(awk -v bin="${name}" '
        /^test .* \.\.\. (ok|FAILED|ignored)$/ { n++; t[n] = $2; s[$2] = $NF }
        /^---- .* stdout ----$/ { cur = $2; next }
        /^(failures|successes):$/ { cur = "" }
        cur != "" && /skipped/ { skip[cur] = 1; if (msg[cur] == "") msg[cur] = $0 }
        cur != "" && /panicked at/ { want[cur] = 1; next }
        cur != "" && want[cur] { msg[cur] = msg[cur] $0 " "; want[cur] = 0 }
        END {
            for (i = 1; i <= n; i++) {
                k = t[i]; r = s[k] == "ok" ? (skip[k] ? "skip" : "pass") : (s[k] == "ignored" ? "ignored" : "fail")
                printf "%s\t%s\t%s\t%s\n", bin, k, r, msg[k]
            }
        }' "${out}/${name}.log")
    [ -z "${rows}" ] && rows=$(printf '%s\t%s\t%s\t%s\n' "${name}" "(binary)" fail "exit ${rc} before any test ran: see ${name}.log")
    [ "${rc}" -ne 0 ] && ! grep -q $'\tfail\t' <<<"${rows}" &&
        rows+=$'\n'"$(printf '%s\t%s\t%s\t%s' "${name}" "(binary)" fail "exit ${rc} (timeout 124/137): see ${name}.log")"
    while IFS=$'\t' read -r bin test result msg; do
        [ -z "${bin}" ] && continue
        # With a GPU present a device test may not skip; kernels_nvrtc skips for lack of NVRTC.
        if [ "${result}" = "skip" ] && ${gpu_seen} && [ "${bin}" != "kernels_nvrtc" ]; then
            result="fail"
            msg="skipped although nvidia-smi sees a GPU: ${msg}"
        fi
        [ "${result}" = "fail" ] && failed=1
        tests_json+="${tests_json:+,}"$'\n'"    {\"binary\": \"${bin}\", \"test\": \"$(printf '%s' "${test}" | json_escape)\", \"result\": \"${result}\", \"message\": \"$(printf '%s' "${msg}" | json_escape)\"}"
    done <<<"${rows}"
}

failed=0
echo "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n1); binaries: ${build}"
run_tests cuda_gpu
# The fault test needs the stand-in's fault injection: a real device cannot fault on demand.
run_tests cuda_cache --skip a_faulting_launch_fails_its_request_and_the_cache_recovers
run_tests stress_threads eight_threads_share_one_cache_on_cuda
run_tests kernels_nvrtc

bench_args=(--json "${out}/bench_copy.json" --max-blocks 256 --reps 3)
if ${gpu_seen}; then
    bcmd=("${gpu_dir}/bin/bench_copy")
    [ "${build}" = "cargo" ] && bcmd=(cargo run --offline --release --example bench_copy --)
    if step 180 "${out}/bench_copy.log" "${bcmd[@]}" "${bench_args[@]}"; then
        bench_state="ok"
    else
        rc=$?
        bench_state="fail"
        [ "${rc}" -eq 3 ] && { status="refused"; reason="bench_copy ran on a stand-in driver"; exit 3; }
        failed=1
    fi
    cat "${out}/bench_copy.log"
    kernel_status=$(grep -o '"kernel_status": "[^"]*"' "${out}/bench_copy.json" 2>/dev/null | cut -d'"' -f4)
    # Targets at 256 blocks, both directions: >= 85% of the pinned-memcpy peak, >= 5x memcpy.
    if [ "${bench_state}" = "ok" ]; then
        misses=$(grep '"blocks": 256,' "${out}/bench_copy.json" | awk -F'[:,]' '{
            for (i = 1; i < NF; i++) { gsub(/[ "{}]/, "", $i); v[$i] = $(i + 1) }
            gsub(/[ "]/, "", v["direction"]); pct = v["kernel_pct_of_peak"] + 0; x = v["kernel_x_memcpy"] + 0
            if (pct < 85 || x < 5) printf "%s: %.1f%% of peak, %.2fx memcpy; ", v["direction"], pct, x }')
        if [ -n "${misses}" ]; then
            bench_state="below target"
            reason="${reason}targets missed at 256 blocks: ${misses}"
            failed=1
        elif ! grep -q '"blocks": 256,' "${out}/bench_copy.json"; then
            bench_state="fail"
            reason="${reason}bench_copy.json has no 256-block row; "
            failed=1
        fi
    fi
else
    bench_state="skipped: nvidia-smi sees no GPU"
fi

if [ "${failed}" -ne 0 ]; then
    status="fail"
elif ${gpu_seen}; then
    status="pass"
else
    status="no gpu"
    reason="nvidia-smi sees no GPU: device tests skipped"
fi
[ "${status}" = "pass" ] || [ "${status}" = "no gpu" ]
