#!/usr/bin/env bash
# Runs a GPU driver under compute-sanitizer (the CTest entries gpu.<tool>.*):
#
#   sanitize.sh COMPUTE_SANITIZER TOOL DRIVER ARGS...
#
# TOOL is memcheck, racecheck, initcheck or synccheck. Exits 77 (CTest's skip code) when the driver
# finds no GPU, 9 when the tool reports an error, otherwise the driver's own status.
set -uo pipefail
sanitizer=$1 tool=$2 driver=$3
shift 3
"$driver" --probe-gpu >/dev/null || exit $?
extra=()
case "$tool" in
  racecheck) extra=(--racecheck-report hazard) ;;
  memcheck) extra=(--leak-check no) ;;
esac
exec "$sanitizer" --tool "$tool" "${extra[@]}" --target-processes all --error-exitcode 9 "$driver" "$@"
