import type { Collectives, WireDtype } from '../src/comm/types.ts';
import type { WorkerContext } from '../src/trainer/context.ts';

const MiB = 1 << 20;
const P2P_TAG = 7001;
const ACK_TAG = 7002;

/** One line of the all-reduce benchmark, in nccl-tests' terms (bus bandwidth = 2(n−1)/n · bytes / time). */
export interface AllReduceBenchLine {
  kind: 'bench';
  op: 'allreduce';
  world: number;
  bytes: number;
  dtype: WireDtype;
  iters: number;
  time_ms: number;
  algbw_gbps: number;
  busbw_gbps: number;
  /** One-way ZeroMQ bandwidth between ranks 0 and 1 with messages of the same size, measured in this run. */
  p2p_gbps: number | null;
  /** Cores busy (user + system time of all ranks, ZeroMQ's I/O threads included) per second of the p2p phase. */
  p2p_cores: number | null;
  /** The same during the all-reduce: on a machine whose cores are all busy already in p2p, this is the limit. */
  allreduce_cores: number;
  /** For fp16/bf16: the fp32 all-reduce of the same buffer, measured in the same run (null for fp32). */
  fp32_time_ms: number | null;
  /** time_ms / fp32_time_ms: what the half-size wire saves (null for fp32). */
  vs_fp32: number | null;
}

/** Enough repetitions for a stable figure without spending minutes on the big sizes. */
function autoIters(bytes: number): number {
  return Math.max(5, Math.min(50, Math.floor((512 * MiB) / Math.max(bytes, 1))));
}

/** Runs `fn` and returns its wall time (slowest rank) and the CPU cores all ranks kept busy meanwhile. */
async function measured(pg: Collectives, fn: () => Promise<void>): Promise<{ ms: number; cores: number }> {
  await pg.barrier();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const wall = (await pg.allReduce(new Float32Array([ms]), { op: 'max' }))[0];
  const busy = new Float32Array([(cpu.user + cpu.system) / 1000]);
  await pg.allReduce(busy, { op: 'sum' });
  return { ms: wall, cores: busy[0] / wall };
}

/** Streams `iters` messages of `buf` from rank 0 to rank 1, acknowledged at the end: one-way GB/s. */
async function p2pBandwidth(
  pg: Collectives,
  buf: Float32Array,
  iters: number,
): Promise<{ gbps: number; cores: number } | null> {
  if (pg.size < 2) return null;
  const { ms, cores } = await measured(pg, async () => {
    if (pg.rank === 0) {
      for (let i = 0; i < iters; i++) await pg.send(buf, 1, P2P_TAG);
      await pg.recv(1, ACK_TAG);
    } else if (pg.rank === 1) {
      for (let i = 0; i < iters; i++) await pg.recv(0, P2P_TAG);
      await pg.send(new Float32Array(1), 0, ACK_TAG);
    }
  });
  return { gbps: (iters * buf.byteLength) / (ms / 1000) / 1e9, cores };
}

export async function runAllReduceBench(
  ctx: WorkerContext,
  opts: { sizesMiB: number[]; dtype: WireDtype; iters: number },
): Promise<AllReduceBenchLine[]> {
  const { pg } = ctx;
  const n = pg.size;
  const lines: AllReduceBenchLine[] = [];
  for (const sizeMiB of opts.sizesMiB) {
    const elements = Math.max(1, Math.round((sizeMiB * MiB) / 4));
    const input = gradientLike(elements, ctx.rank);
    const buf = input.slice();
    const iters = opts.iters > 0 ? opts.iters : autoIters(buf.byteLength);
    const p2p = await p2pBandwidth(pg, buf, iters);

    const allReduceTime = async (dtype: WireDtype) => {
      await pg.allReduce(buf, { dtype }); // warm-up: connections, allocations
      return measured(pg, async () => {
        for (let i = 0; i < iters; i++) {
          // Fresh inputs every time (a memcpy, the same for every dtype): summed in place they would double each op and
          // reach fp16's inf within a few dozen, timing the codec's rare inf path instead of real gradients.
          buf.set(input);
          await pg.allReduce(buf, { dtype });
        }
      });
    };
    const run = await allReduceTime(opts.dtype);
    const ms = run.ms / iters;
    const fp32 = opts.dtype === 'fp32' ? null : (await allReduceTime('fp32')).ms / iters;

    const bytes = buf.byteLength;
    const algbw = bytes / (ms / 1000) / 1e9;
    const line: AllReduceBenchLine = {
      kind: 'bench',
      op: 'allreduce',
      world: n,
      bytes,
      dtype: opts.dtype,
      iters,
      time_ms: round(ms),
      algbw_gbps: round(algbw),
      busbw_gbps: round((algbw * 2 * (n - 1)) / n),
      p2p_gbps: p2p === null ? null : round(p2p.gbps),
      p2p_cores: p2p === null ? null : round(p2p.cores),
      allreduce_cores: round(run.cores),
      fp32_time_ms: fp32 === null ? null : round(fp32),
      vs_fp32: fp32 === null ? null : round(ms / fp32),
    };
    lines.push(line);
    if (ctx.rank === 0) ctx.report(line);
  }
  return lines;
}

/** Deterministic values spread like gradients (both signs, magnitudes over several decades), per rank. */
function gradientLike(n: number, rank: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sin(i * 0.618 + rank) * 10 ** ((i % 7) - 5);
  return out;
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
