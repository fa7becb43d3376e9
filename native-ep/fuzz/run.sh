#!/usr/bin/env bash
# Builds the libFuzzer targets of native-ep (fuzz/fuzz_*.cpp, with AddressSanitizer and
# UndefinedBehaviorSanitizer) in a separate clang build and runs each for a bounded time,
# printing the number of inputs it tried. Installs clang-14 from Debian when no clang is found.
#
#   native-ep/fuzz/run.sh SECONDS [TARGET]     e.g. native-ep/fuzz/run.sh 60
#
# Environment: NEP_FUZZ_BUILD (build directory, default native-ep/target/fuzz-build),
# NEP_FUZZ_JOBS (parallel fuzzing processes per target, default 1).
# Exit status: 0 when no target found a crash or a violated invariant; 1 otherwise (the
# reproducer is written under the build directory's artifacts/ and its path is printed).
set -euo pipefail
seconds="${1:?usage: run.sh SECONDS [TARGET]}"
only="${2:-}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$(cd "$here/.." && pwd)"
build="${NEP_FUZZ_BUILD:-$src/target/fuzz-build}"
jobs="${NEP_FUZZ_JOBS:-1}"

cxx=""
for c in clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14; do
  if command -v "$c" >/dev/null 2>&1; then cxx="$(command -v "$c")"; break; fi
done
if [ -z "$cxx" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "fuzz/run.sh: installing clang-14 and libclang-rt-14-dev with apt-get" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clang-14 libclang-rt-14-dev >/dev/null
  cxx="$(command -v clang++-14)"
fi
cc="${cxx/clang++/clang}"

gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
cmake -S "$src" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  -DNEP_BUILD_FUZZERS=ON -DNEP_BUILD_TESTS=OFF -DNEP_BUILD_CUDA=OFF >/dev/null
cmake --build "$build" --parallel "$(nproc)" >/dev/null

status=0
mkdir -p "$build/artifacts"
for target_src in "$here"/fuzz_*.cpp; do
  target="$(basename "$target_src" .cpp)"
  [ -n "$only" ] && [ "$target" != "$only" ] && continue
  corpus="$build/corpus/$target"
  mkdir -p "$corpus"
  # Seeds: one input per mode byte, so every mode is reached from the first run.
  for m in 0 1 2 3; do
    printf "\\x0$m\\x10\\x20\\x04\\x08\\x02\\x01\\x03\\x05\\x07\\x09\\x0b\\x0d\\x11\\x13\\x17" > "$corpus/seed-$m"
  done
  # Structured seeds of a target (valid request streams for fuzz_store), when it has some.
  if [ -d "$here/seeds/$target" ]; then cp "$here/seeds/$target"/* "$corpus/"; fi
  log="$build/$target.log"
  echo "fuzz/run.sh: $target for $seconds s (corpus $corpus)"
  set +e
  ASAN_OPTIONS="allocator_may_return_null=1:detect_leaks=1" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    "$build/bin/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -malloc_limit_mb=1024 -print_final_stats=1 -jobs="$jobs" -workers="$jobs" \
      -artifact_prefix="$build/artifacts/$target-" "$corpus" >"$log" 2>&1
  rc=$?
  set -e
  runs="$( (grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" || true) | awk '{s += $2} END {print s + 0}')"
  secs="$( (grep -o 'Done [0-9]* runs in [0-9]* second' "$log" || true) | tail -1 | awk '{print $5}')"
  cov="$( (grep -o 'cov: [0-9]*' "$log" || true) | tail -1 | awk '{print $2}')"
  echo "fuzz/run.sh: $target: $runs inputs tried in ${secs:-$seconds} s, coverage ${cov:-?} edges, exit $rc"
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "fuzz/run.sh: $target FAILED; last lines of $log:" >&2
    tail -40 "$log" >&2
  fi
done
exit "$status"
