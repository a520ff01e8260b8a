#!/usr/bin/env bash
# What a 2-node job puts on the wire: two network namespaces joined by a veth pair, tcpdump on the veth, the
# exact-allreduce job (test/fixtures) across the two nodes, with CURVE and then with comm.insecure. Counts, in each
# capture, the occurrences of the job token (hex and raw bytes) and of 32 bytes of rank 0's first tensor.
# Needs root and tcpdump (apt-get install tcpdump).
#
#   sudo bash bench/capture-namespaces.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/two-hosts.sh 79

export KD_JOB_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
worker=$PWD/test/fixtures/exact-allreduce.worker.ts
printf 'name: capture\nscript: %s\n' "$worker" > "$tmp/on.yaml"
printf 'name: capture\nscript: %s\ncomm: {insecure: true}\n' "$worker" > "$tmp/off.yaml"
# 32 bytes of rank 0's first all-reduce input from the chunk it sends first (the second half), in fp32.
needle=$(npx tsx -e "import('./test/fixtures/inputs.ts').then(({ inputFor }) => process.stdout.write(Buffer.from(inputFor(0, 4096, 0).buffer).subarray(8256, 8288).toString('hex')))")
for mode in on off; do
  ip netns exec "$a" tcpdump -i "va-$$" -w "$tmp/$mode.pcap" -U -q 2>/dev/null &
  dump=$!
  sleep 1
  port=$((29500 + RANDOM % 1000))
  common=(--nproc 1 --nnodes 2 --master-addr 10.79.0.1 --master-port "$port")
  ip netns exec "$b" node bin/kd-launch.js "${common[@]}" --node-rank 1 --node-addr 10.79.0.2 "$tmp/$mode.yaml" > "$tmp/$mode-1.log" 2>&1 &
  ip netns exec "$a" node bin/kd-launch.js "${common[@]}" --node-rank 0 --node-addr 10.79.0.1 "$tmp/$mode.yaml" > "$tmp/$mode-0.log" 2>&1 \
    || { echo "node 0 failed:"; tail -5 "$tmp/$mode-0.log"; }
  wait %2 2>/dev/null || true
  sleep 1; kill "$dump"; wait "$dump" 2>/dev/null || true
  python3 - "$tmp/$mode.pcap" "$KD_JOB_TOKEN" "$needle" "$mode" <<'PY'
import sys
data = open(sys.argv[1], 'rb').read()
token, needle, mode = sys.argv[2], bytes.fromhex(sys.argv[3]), sys.argv[4]
print(f"CURVE {mode}: {len(data)} bytes captured; token as text {data.count(token.encode())}, "
      f"token as bytes {data.count(bytes.fromhex(token))}, tensor bytes {data.count(needle)}")
PY
done
