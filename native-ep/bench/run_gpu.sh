#!/usr/bin/env bash
# Builds, tests and benchmarks the cuda-ipc transport on the GPU machine, one step per argument:
#
#   native-ep/bench/run_gpu.sh info build test:2 test:4 bench:2 bench:4 full:2 nccl:2 sanitize:2 ...
#
#   info        GPUs, links, driver
#   build       configure and build into $NEP_BUILD (default native-ep/target/gpu-build) unless its
#               drivers already run here. $NEP_BUILD-variant, if carried, holds a variant to compare
#   test:W      ep_test --world W --quick --timeout-test
#   full:W      ep_test --world W (adds the 4096 x 7168 cases)
#   bench:W     ep_bench --world W --sms $NEP_SMS (default 24,12,32), JSON to $OUT
#   bench2:W    the same with the variant build; test2:W likewise for ep_test
#   nccl:W      torch all_to_all_single baseline, JSON to $OUT
#   sanitize:W  compute-sanitizer memcheck of a small ep_test case
#   racecheck:W compute-sanitizer racecheck (shared-memory hazards) of the same case
#   ntest:W     ep_test --quick over the nccl transport, hosts simulated (LOCAL_WORLD_SIZE=W/2, so
#               --transport auto picks nccl), plus the all-reduce case
#   nbench:W    ep_bench over the nccl transport (24 SMs given, not used), JSON to $OUT
#   java:W      the Java driver (dev.djlmoe.nativeep.cuda.CudaEpJavaCheck): W JVMs drive the plug-in
#               through JavaCPP; needs $NEP_JAVA_DIR (default .gpucarry) with jre/, jars/, classes/,
#               test-classes/
#   lltest:W    ll_test --world W (low-latency mode; W ranks on GPU rank % device_count, so W > #GPUs
#               runs time-sliced on fewer GPUs)
#   llbench:W   ll_bench --world W (128 tokens/rank, H=7168, top-8 of 256, FP8 dispatch, bf16
#               combine), JSON to $OUT; llbenchrs:W the same with power-of-two (round) FP8 scales
#   llnccl:W    torch all_to_all_single baseline of the same decode step (ll_nccl_baseline.py),
#               JSON to $OUT (NCCL needs one GPU per rank: W <= number of GPUs)
#   pack        merges the JSON files into $OUT/results.json and the logs into $OUT/logs.tgz
# Logs and JSON go to $OUT (default /tmp/nep-out). Every step has a wall-clock limit; with
# NEP_BUDGET_S set, a step that would start after that many seconds of this script is skipped.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/nep-out}
BUILD=${NEP_BUILD:-native-ep/target/gpu-build}
BUILD2=${BUILD}-variant
SMS=${NEP_SMS:-24,12,16,32}
MACHINE=${NEP_MACHINE:-h200x$(nvidia-smi -L 2>/dev/null | wc -l)}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
status=0
JAVA_DIR=${NEP_JAVA_DIR:-.gpucarry}
BUDGET=${NEP_BUDGET_S:-100000}
# NCCL for the nccl transport: the Python wheel's copy unless NEP_NCCL_LIBRARY names one.
nccl_env() {
  if [ -z "${NEP_NCCL_LIBRARY:-}" ]; then
    NEP_NCCL_LIBRARY=$(python3 -c 'import glob,site; p=[f for s in site.getsitepackages() for f in glob.glob(s+"/nvidia/nccl/lib/libnccl.so.2")]; print(p[0] if p else "libnccl.so.2")')
    export NEP_NCCL_LIBRARY
  fi
  echo "NCCL: $NEP_NCCL_LIBRARY"
}

runs_here() { [ -x "$1/bin/$2" ] && "$1/bin/$2" --world 0 >/dev/null 2>&1; [ $? -eq 2 ]; }

for step in "$@"; do
  name=${step%%:*}
  w=2; [ "$name" != "$step" ] && w=${step#*:}
  log="$OUT/${name}-$w.log"
  if [ "$SECONDS" -gt "$BUDGET" ]; then echo "=== $step skipped: ${SECONDS}s used, budget ${BUDGET}s"; status=1; continue; fi
  echo "=== $step ($(date +%T))"
  case "$name" in
    info)
      { nvidia-smi; nvidia-smi topo -m; nvcc --version | tail -2; } > "$OUT/info.log" 2>&1
      nvidia-smi -L; nvidia-smi topo -m | head -8 ;;
    build)
      if runs_here "$BUILD" ep_test && runs_here "$BUILD" ep_bench && runs_here "$BUILD" ll_test && runs_here "$BUILD" ll_bench; then echo "prebuilt drivers run here"; else
        timeout 400 bash -c "cmake -S native-ep -B $BUILD -DNEP_BUILD_CUDA=ON -DNEP_BUILD_TESTS=OFF >/dev/null && cmake --build $BUILD -j 32" \
          > "$OUT/build.log" 2>&1 || { echo "build failed"; tail -30 "$OUT/build.log"; exit 1; }
      fi
      runs_here "$BUILD2" ep_bench || echo "no variant build at $BUILD2 (bench2/test2 skipped)" ;;
    test|test2|full)
      args="--world $w"; [ "$name" != full ] && args="$args --quick --timeout-test"
      b=$BUILD; [ "$name" = test2 ] && b=$BUILD2
      timeout 200 "$b/bin/ep_test" $args > "$log" 2>&1; rc=$?
      grep -E "case |ep_test|FAIL|relative error|timeout:|errors:|hash" "$log" | grep -E "rank 0\]|ep_test|FAIL" | head -60
      echo "rc=$rc"; [ $rc -eq 0 ] || status=1 ;;
    bench|bench2)
      b=$BUILD; [ "$name" = bench2 ] && b=$BUILD2
      timeout 150 "$b/bin/ep_bench" --world "$w" --sms "$SMS" --machine "$MACHINE" --json "$OUT/${name}-$w.json" > "$log" 2>&1; rc=$?
      tail -16 "$log"; echo "rc=$rc"; [ $rc -eq 0 ] || status=1 ;;
    nccl)
      timeout 150 python3 native-ep/bench/nccl_baseline.py --world "$w" --json "$OUT/nccl-$w.json" > "$log" 2>&1; rc=$?
      tail -3 "$log"; echo "rc=$rc"; [ $rc -eq 0 ] || status=1 ;;
    racecheck)
      timeout 120 compute-sanitizer --tool racecheck --target-processes all --error-exitcode 9 \
        "$BUILD/bin/ep_test" --world "$w" --only bf16-pattern-uneven > "$log" 2>&1; rc=$?
      grep -E "RACECHECK SUMMARY|ERROR SUMMARY|hazard|case |ep_test" "$log" | head -16; echo "rc=$rc"; [ $rc -eq 0 ] || status=1 ;;
    ntest)
      nccl_env
      LOCAL_WORLD_SIZE=$((w / 2 > 0 ? w / 2 : 1)) timeout 150 "$BUILD/bin/ep_test" --world "$w" --quick --transport auto > "$log" 2>&1; rc=$?
      grep -E "transport|case |ep_test|FAIL|relative error|errors:|hash" "$log" | grep -E "rank 0\]|ep_test|FAIL" | head -60
      echo "rc=$rc"; [ $rc -eq 0 ] || status=1 ;;
    nbench)
      nccl_env
      timeout 90 "$BUILD/bin/ep_bench" --world "$w" --sms 24 --warmup 5 --iters 20 --transport nccl --machine "$MACHINE" \
        --json "$OUT/nbench-$w.json" > "$log" 2>&1; rc=$?
      tail -8 "$log"; echo "rc=$rc"; [ $rc -eq 0 ] || status=1 ;;
    java)
      timeout 150 "$JAVA_DIR/jre/bin/java" -cp "$JAVA_DIR/classes:$JAVA_DIR/test-classes:$JAVA_DIR/jars/*" \
        dev.djlmoe.nativeep.cuda.CudaEpJavaCheck --world "$w" --timeout-s 140 > "$log" 2>&1; rc=$?
      cat "$log" | head -40; echo "rc=$rc"; [ $rc -eq 0 ] || status=1 ;;
    sanitize)
      timeout 150 compute-sanitizer --tool memcheck --target-processes all --error-exitcode 9 \
        "$BUILD/bin/ep_test" --world "$w" --only bf16-pattern-uneven > "$log" 2>&1; rc=$?
      grep -E "ERROR SUMMARY|case |ep_test" "$log" | head -12; echo "rc=$rc"; [ $rc -eq 0 ] || status=1 ;;
    lltest)
      timeout 300 "$BUILD/bin/ll_test" --world "$w" > "$log" 2>&1; rc=$?
      grep -E "rank 0\]|FAIL|ll_test" "$log" | head -60
      echo "rc=$rc"; [ $rc -eq 0 ] || status=1 ;;
    llbench|llbenchrs)
      rs=""; [ "$name" = llbenchrs ] && rs="--round-scale"
      timeout 300 "$BUILD/bin/ll_bench" --world "$w" $rs --machine "$MACHINE" --json "$OUT/${name}-$w.json" > "$log" 2>&1; rc=$?
      tail -8 "$log"; echo "rc=$rc"; [ $rc -eq 0 ] || status=1 ;;
    llnccl)
      timeout 200 python3 native-ep/bench/ll_nccl_baseline.py --world "$w" --json "$OUT/llnccl-$w.json" > "$log" 2>&1; rc=$?
      tail -3 "$log"; echo "rc=$rc"; [ $rc -eq 0 ] || status=1 ;;
    pack)
      python3 - "$OUT" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
merged = {}
for f in sorted(glob.glob(os.path.join(out, "*.json"))):
    if os.path.basename(f) == "results.json":
        continue
    with open(f) as fh:
        merged[os.path.basename(f)[:-5]] = json.load(fh)
    os.remove(f)
with open(os.path.join(out, "results.json"), "w") as fh:
    json.dump(merged, fh, indent=1)
print("merged:", ", ".join(merged))
PY
      (cd "$OUT" && tar czf logs.tgz --exclude=logs.tgz --exclude=run.log *.log && rm -f $(ls *.log | grep -v '^run.log$')) ;;
    *) echo "unknown step $step"; status=1 ;;
  esac
done
exit $status
