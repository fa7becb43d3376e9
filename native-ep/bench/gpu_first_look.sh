#!/usr/bin/env bash
# A first look at a fresh GPU host in one command of at most 600 s, for sessions that may get only
# one call: every GPU test once, the grouped FP8 GEMM benchmark on both tiers beside torch's, and
# the Java GPU tests of one module, each part under its own time cap so a hang in one leaves the
# others' results.
#
#   native-ep/bench/gpu_first_look.sh [--carry DIR] [--out DIR] [--java-modules LIST] [--budget S]
#                                     [--parts LIST]
#
# --carry DIR   a folder made by native-ep/bench/make_gpucarry.sh --djl --tests (default .gpucarry);
#               without DIR/jre the Java parts are skipped and say so
# --out DIR     where the results go (default $OUT, else /tmp/gpu-first-look): at most eight files,
#               as the device tool returns no more: summary.txt (every part's verdict and the tail
#               of its output), run_all.tgz and java.tgz (the full logs), gemm-mma.json,
#               gemm-wgmma.json, gemm-torch.json
# --java-modules   bin/gpu-java-tests --only (default djl-moe)
# --budget S    seconds for the whole command (default 570)
# --parts LIST  which parts run, of run_all,gemm,torch,java (default all four); without run_all the
#               GEMM drivers are built here (configure and build: about 60 s on 16 cores)
#
# Parts and caps (s): run_all.sh --rounds 1 (240), gemm_test alone (150, for its figures),
# gemm_bench portable tier (45), gemm_bench Hopper tier only if gemm_test's Hopper pass passed
# (45), grouped_gemm_torch.py (60), the Java tests (what is left). Exit 0 when every part that ran
# passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
export DJL_OFFLINE=true OPT_OUT_TRACKING=true PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
carry=.gpucarry out="${OUT:-/tmp/gpu-first-look}" modules=djl-moe budget=570 parts=,run_all,gemm,torch,java,
while [ $# -gt 0 ]; do
  case "$1" in
    --carry) carry=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --java-modules) modules=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --parts) parts=",$2,"; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "gpu_first_look.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
work=$(mktemp -d /tmp/gpu-first-look.XXXXXX)
summary="$out/summary.txt"
: > "$summary"
fail=0
left() { echo $((budget - SECONDS)); }
cap() { local c=$1 l; l=$(left); [ "$l" -lt "$c" ] && c=$l; [ "$c" -lt 1 ] && c=1; echo "$c"; }
part() {  # part NAME CAP LOGFILE COMMAND...: runs under timeout, records verdict and tail
  local name=$1 c log=$3 t0=$SECONDS rc
  c=$(cap "$2")
  shift 3
  if [ "$(left)" -lt 10 ]; then
    printf '== %-22s not run (budget spent)\n' "$name" >> "$summary"
    return
  fi
  timeout "$c" "$@" > "$log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || fail=1
  printf '== %-22s rc=%d  %d s (cap %d s)\n' "$name" "$rc" "$((SECONDS - t0))" "$c" >> "$summary"
  tail -n 40 "$log" >> "$summary"
}
{
  echo "gpu_first_look $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
} >> "$summary"

java=()
[ -x "$carry/jre/bin/java" ] && java=(--java "$carry")
has() { [[ "$parts" == *",$1,"* ]]; }
b=native-ep/target/gpu-tests
if has run_all; then
  part run_all 240 "$work/run_all.txt" native-ep/gpu-tests/run_all.sh --rounds 1 --jobs 6 \
    "${java[@]}" --out "$work/run_all"
  cp "$work/run_all.txt" "$work/run_all/" 2>/dev/null
  tar -czf "$out/run_all.tgz" -C "$work" run_all 2>/dev/null
elif has gemm; then  # the build run_all.sh would have made, GEMM drivers only
  part gemm_build 150 "$work/gemm-build.txt" bash -c "cmake -S native-ep -B $b -DNEP_BUILD_CUDA=ON \
    -DNEP_BUILD_TESTS=OFF -DNEP_GPU_TESTS=ON && cmake --build $b -j $(nproc) --target gemm_test"
fi

# run_all.sh builds the test drivers only; the benchmark is one more target of the same build.
has gemm && [ -d "$b" ] && timeout "$(cap 90)" cmake --build "$b" --target gemm_bench -j "$(nproc)" > "$work/gemm-bench-build.txt" 2>&1
if ! has gemm; then
  printf '== %-22s not run (--parts)\n' gemm >> "$summary"
elif [ -x "$b/bin/gemm_bench" ]; then
  part gemm_bench.mma 45 "$work/gemm-mma.txt" env NEP_GEMM_TIER=mma "$b/bin/gemm_bench" \
    --json "$out/gemm-mma.json"
  # gemm_test again, its own output kept (ctest keeps it only on failure): each case's figures.
  part gemm_test 150 "$work/gemm-test.txt" "$b/bin/gemm_test"
  # The Hopper tier only where gemm_test's Hopper pass passed (a broken pipeline traps or hangs).
  # Its skips are by design (k not a multiple of 16: TMA cannot address those rows).
  if grep -q '^gemm_test: all passed' "$work/gemm-test.txt" &&
    grep -q '^ok .* tier wgmma' "$work/gemm-test.txt" && ! grep -q '^FAIL' "$work/gemm-test.txt"; then
    part gemm_bench.wgmma 45 "$work/gemm-wgmma.txt" env NEP_GEMM_TIER=wgmma "$b/bin/gemm_bench" \
      --json "$out/gemm-wgmma.json"
  else
    printf '== %-22s not run (gemm_test did not report the Hopper tier passing)\n' gemm_bench.wgmma >> "$summary"
  fi
else
  printf '== %-22s not run (no %s/bin/gemm_bench)\n' gemm_bench "$b" >> "$summary"
fi
has torch && part gemm_torch 60 "$work/gemm-torch.txt" python3 native-ep/bench/grouped_gemm_torch.py \
  --json "$out/gemm-torch.json"

if ! has java; then
  printf '== %-22s not run (--parts)\n' java >> "$summary"
elif [ ${#java[@]} -gt 0 ] && [ -d "$carry/tests" ]; then
  part java "$(left)" "$work/java.txt" bin/gpu-java-tests --carry "$carry" --only "$modules" \
    --out "$work/java"
  cp "$work/java.txt" "$work/java/" 2>/dev/null
  tar -czf "$out/java.tgz" -C "$work" java 2>/dev/null
else
  printf '== %-22s not run (no %s/jre or %s/tests)\n' java "$carry" "$carry" >> "$summary"
fi
echo "gpu_first_look: $([ $fail -eq 0 ] && echo PASS || echo FAIL) after $SECONDS s" >> "$summary"
cat "$summary"
exit $fail
