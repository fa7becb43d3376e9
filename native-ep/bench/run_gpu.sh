#!/usr/bin/env bash
# Builds, tests and benchmarks the cuda-ipc transport on the GPU machine, one step per argument:
#
#   native-ep/bench/run_gpu.sh info build test:2 test:4 bench:2 bench:4 full:2 nccl:2 sanitize:2 ...
#
#   info        GPUs, links, driver
#   build       configure and build into $NEP_BUILD (default native-ep/target/gpu-build) unless its
#               drivers already run here; also builds the unroll-2 variant of the plug-in
#   test:W      ep_test --world W --quick --timeout-test
#   full:W      ep_test --world W (adds the 4096 x 7168 cases)
#   bench:W     ep_bench --world W --sms $NEP_SMS (default 24,12,32), JSON to $OUT
#   bench2:W    the same with the unroll-2 plug-in
#   nccl:W      torch all_to_all_single baseline, JSON to $OUT
#   sanitize:W  compute-sanitizer memcheck of a small ep_test case
# Logs and JSON go to $OUT (default /tmp/nep-out). Every step has a wall-clock limit.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/nep-out}
BUILD=${NEP_BUILD:-native-ep/target/gpu-build}
BUILD2=${BUILD}-u2
SMS=${NEP_SMS:-24,12,32}
MACHINE=${NEP_MACHINE:-h200x$(nvidia-smi -L 2>/dev/null | wc -l)}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
status=0

runs_here() { [ -x "$1/bin/$2" ] && "$1/bin/$2" --world 0 >/dev/null 2>&1; [ $? -eq 2 ]; }

for step in "$@"; do
  name=${step%%:*}
  w=2; [ "$name" != "$step" ] && w=${step#*:}
  log="$OUT/${name}-$w.log"
  echo "=== $step ($(date +%T))"
  case "$name" in
    info)
      { nvidia-smi; nvidia-smi topo -m; nvcc --version | tail -2; } > "$OUT/info.log" 2>&1
      nvidia-smi -L; nvidia-smi topo -m | head -8 ;;
    build)
      if runs_here "$BUILD" ep_test && runs_here "$BUILD" ep_bench; then echo "prebuilt drivers run here"; else
        timeout 400 bash -c "cmake -S native-ep -B $BUILD -DNEP_BUILD_CUDA=ON -DNEP_BUILD_TESTS=OFF >/dev/null && cmake --build $BUILD -j 32" \
          > "$OUT/build.log" 2>&1 || { echo "build failed"; tail -30 "$OUT/build.log"; exit 1; }
      fi
      if ! runs_here "$BUILD2" ep_bench; then
        timeout 300 bash -c "cmake -S native-ep -B $BUILD2 -DNEP_BUILD_CUDA=ON -DNEP_BUILD_TESTS=OFF -DCMAKE_CUDA_FLAGS=-DNEP_CUDA_UNROLL=2 >/dev/null && cmake --build $BUILD2 -j 32 --target ep_bench" \
          >> "$OUT/build.log" 2>&1 || echo "unroll-2 build failed (bench2 skipped)"
      fi ;;
    test|full)
      args="--world $w"; [ "$name" = test ] && args="$args --quick --timeout-test"
      timeout 200 "$BUILD/bin/ep_test" $args > "$log" 2>&1; rc=$?
      grep -E "case |ep_test|FAIL|relative error|timeout:|errors:|hash" "$log" | grep -E "rank 0\]|ep_test|FAIL" | head -60
      echo "rc=$rc"; [ $rc -eq 0 ] || status=1 ;;
    bench|bench2)
      b=$BUILD; [ "$name" = bench2 ] && b=$BUILD2
      timeout 150 "$b/bin/ep_bench" --world "$w" --sms "$SMS" --machine "$MACHINE" --json "$OUT/${name}-$w.json" > "$log" 2>&1; rc=$?
      tail -16 "$log"; echo "rc=$rc"; [ $rc -eq 0 ] || status=1 ;;
    nccl)
      timeout 150 python3 native-ep/bench/nccl_baseline.py --world "$w" --json "$OUT/nccl-$w.json" > "$log" 2>&1; rc=$?
      tail -3 "$log"; echo "rc=$rc"; [ $rc -eq 0 ] || status=1 ;;
    sanitize)
      timeout 400 compute-sanitizer --tool memcheck --target-processes all --error-exitcode 9 \
        "$BUILD/bin/ep_test" --world "$w" --only bf16-pattern-uneven > "$log" 2>&1; rc=$?
      grep -E "ERROR SUMMARY|case |ep_test" "$log" | head -12; echo "rc=$rc"; [ $rc -eq 0 ] || status=1 ;;
    *) echo "unknown step $step"; status=1 ;;
  esac
done
exit $status
