#!/usr/bin/env bash
# CURVE's cost on the data plane between two hosts: two network namespaces joined by a veth pair, one worker in
# each (world 2), `kd-launch --bench allreduce` with CURVE (the default across nodes) and with
# `comm.insecure: true`, in the same run. Needs root (ip netns); prints the busbw lines of both.
#
#   sudo bash bench/curve-namespaces.sh [SIZES_MIB]     # default 1,16,64
set -euo pipefail
cd "$(dirname "$0")/.."
sizes="${1:-1,16,64}"
source bench/two-hosts.sh 77

printf 'name: curve-on\nscript: <built-in>\n' > "$tmp/on.yaml"
printf 'name: curve-off\nscript: <built-in>\ncomm: {insecure: true}\n' > "$tmp/off.yaml"
export KD_JOB_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
for mode in on off; do
  port=$((29500 + RANDOM % 1000))
  common=(--nproc 1 --nnodes 2 --master-addr 10.77.0.1 --master-port "$port" --bench allreduce --sizes "$sizes")
  ip netns exec "$b" node bin/kd-launch.js "${common[@]}" --node-rank 1 --node-addr 10.77.0.2 "$tmp/$mode.yaml" \
    > "$tmp/$mode-1.log" 2>&1 &
  ip netns exec "$a" node bin/kd-launch.js "${common[@]}" --node-rank 0 --node-addr 10.77.0.1 "$tmp/$mode.yaml" \
    > "$tmp/$mode-0.log" 2>&1
  wait
  echo "== CURVE $mode"
  grep -vE '^\[rank|^(Hi,|=+$)|^$' "$tmp/$mode-0.log" | tail -n +1
done
