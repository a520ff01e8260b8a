#!/usr/bin/env bash
# The test suite under every x86-64 OpenBLAS kernel this CPU can run, with and without OPENBLAS_L2_SIZE=512
# (some machines of this kind set both variables), then with both unset: what a CI machine may pick.
#   npm run test:blas-kernels                      # the whole suite, 9 settings
#   npm run test:blas-kernels -- test/launcher     # only these files
# A kernel the CPU cannot run (SkylakeX without AVX-512) is reported as skipped. Prints one line per setting and
# exits non-zero when any setting failed.
set -uo pipefail
cd "$(dirname "$0")/.."
failed=0
run() {
  local label=$1; shift
  local out
  out=$(env "$@" npx vitest run "${FILES[@]}" 2>&1)
  local rc=$?
  echo "$label: $(printf '%s\n' "$out" | sed 's/\x1b\[[0-9;]*m//g' | grep -E '^ +Tests ' | tail -1 | xargs) (exit $rc)"
  [ $rc -eq 0 ] || failed=1
}
FILES=("$@")
for kernel in Haswell SkylakeX Zen Sandybridge; do
  if [ "$kernel" = SkylakeX ] && ! grep -q avx512f /proc/cpuinfo; then echo "$kernel: skipped (no AVX-512)"; continue; fi
  run "OPENBLAS_CORETYPE=$kernel" -u OPENBLAS_L2_SIZE OPENBLAS_CORETYPE=$kernel
  run "OPENBLAS_CORETYPE=$kernel OPENBLAS_L2_SIZE=512" OPENBLAS_CORETYPE=$kernel OPENBLAS_L2_SIZE=512
done
run "both unset" -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE
exit $failed
