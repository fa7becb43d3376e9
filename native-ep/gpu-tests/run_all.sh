#!/usr/bin/env bash
# Every GPU test there is, in one command, on a machine with a GPU (run from anywhere):
#
#   native-ep/gpu-tests/run_all.sh [--rounds N] [--jobs J] [--build DIR] [--java DIR] [--out DIR]
#
# Builds the CUDA plug-in and its drivers (cmake, NEP_BUILD_CUDA=ON, into DIR, default
# native-ep/target/gpu-tests) and runs, N times over (default 1):
#   - `ctest -L gpu`: ep_test quick and full at W=1 and W=2, ll_test at W=1 and W=2 (W ranks share
#     the GPUs: rank r on GPU r mod count, so one GPU serves both), and compute-sanitizer memcheck /
#     racecheck / initcheck / synccheck on small cases (when compute-sanitizer is on the PATH);
#     gemm_test (the grouped FP8 GEMMs against the CPU path) and its memcheck run; wire_test (the
#     kernels' wire encoders and decoders against the CPU codec, and DeviceGuard's contexts);
#   - the Java check through JavaCPP (CudaEpJavaCheck, W=1 and W=2) when DIR/jre exists (see
#     native-ep/bench/make_gpucarry.sh, which assembles jre/, jars/, classes/, test-classes/).
# --jobs J runs J tests at once (default 4; their processes share the GPUs, which also stresses the
# protocols' waits). Ends with one summary line per test and round, then one verdict line; exits 0 only when every
# test of every round passed (a skipped test counts as not passed here: this command is for GPU hosts).
# Logs go to --out (default $OUT, else /tmp/nep-gpu-tests).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
rounds=1
jobs=4
build="$root/native-ep/target/gpu-tests"
java_dir="${NEP_JAVA_DIR:-$root/.gpucarry}"
out="${OUT:-/tmp/nep-gpu-tests}"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --java) java_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "run_all.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export DJL_OFFLINE=true OPT_OUT_TRACKING=true
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"

echo "=== build ($(date +%T)) into $build"
if ! { cmake -S "$root/native-ep" -B "$build" -DNEP_BUILD_CUDA=ON -DNEP_BUILD_TESTS=OFF -DNEP_GPU_TESTS=ON >"$out/build.log" 2>&1 &&
       cmake --build "$build" -j "$(nproc)" --target nativeep_cuda ep_test ll_test adamw_test gemm_test wire_test >>"$out/build.log" 2>&1; }; then
  echo "build failed:"; tail -30 "$out/build.log"; exit 1
fi
grep -q "compute-sanitizer not found" "$out/build.log" && echo "note: compute-sanitizer not found, the sanitizer tests are not registered"

fail=0
for round in $(seq 1 "$rounds"); do
  echo "=== round $round of $rounds ($(date +%T))"
  log="$out/ctest-$round.log"
  ctest --test-dir "$build" -L gpu -j "$jobs" --output-on-failure --timeout 900 > "$log" 2>&1
  # "  1/13 Test  #1: gpu.ep_test.quick.w1 ..........   Passed   12.34 sec"
  grep -E "^ *[0-9]+/[0-9]+ Test +#" "$log" | while read -r line; do
    name=$(echo "$line" | sed -E 's/.*Test +#[0-9]+: ([^ ]+) .*/\1/')
    verdict=$(echo "$line" | sed -E 's/.*\.\.+ *\**([A-Za-z ]+[A-Za-z]).* ([0-9.]+) sec.*/\1/')
    secs=$(echo "$line" | sed -E 's/.* ([0-9.]+) sec.*/\1/')
    printf 'round %d  %-34s %-10s %7s s\n' "$round" "$name" "$verdict" "$secs" >> "$summary"
  done
  grep -Eq "^100% tests passed" "$log" || { fail=1; grep -E "FAIL|fatal|Failed|Skipped|Timeout" "$log" | head -20; }
  grep -Eq "did not run|Skipped" "$log" && fail=1
  if [ -x "$java_dir/jre/bin/java" ]; then
    # classes/ when carried; else the module's jar in lib/ (make_gpucarry.sh --djl leaves classes/
    # out when the carry would pass its 64 MiB).
    java_cp="$java_dir/classes:$java_dir/test-classes:$java_dir/jars/*"
    [ -d "$java_dir/classes" ] || java_cp="$java_dir/lib/native-ep-0.1.0-SNAPSHOT.jar:$java_dir/test-classes:$java_dir/jars/*"
    for w in 1 2; do
      t0=$SECONDS
      timeout 300 "$java_dir/jre/bin/java" -cp "$java_cp" \
        dev.djlmoe.nativeep.cuda.CudaEpJavaCheck --world "$w" --no-bench > "$out/java-$round-w$w.log" 2>&1
      rc=$?
      verdict=Passed; [ $rc -eq 0 ] || { verdict="Failed($rc)"; fail=1; tail -8 "$out/java-$round-w$w.log"; }
      printf 'round %d  %-34s %-10s %7s s\n' "$round" "java.CudaEpJavaCheck.w$w" "$verdict" "$((SECONDS - t0))" >> "$summary"
    done
  else
    printf 'round %d  %-34s %-10s\n' "$round" "java.CudaEpJavaCheck" "not run (no $java_dir/jre)" >> "$summary"
  fi
done
echo "=== summary ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), $(date -u +%FT%TZ))"
cat "$summary"
passed=$(grep -c " Passed " "$summary"); total=$(grep -c . "$summary")
echo "gpu tests: $rounds round(s), $passed of $total runs passed -> $([ $fail -eq 0 ] && echo PASS || echo FAIL)"
exit $fail
