import type { Transport } from '../src/comm/transport.ts';
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
  /** The path the payloads took: `shm`, `zmq`, or `shm+zmq` when a ring overflowed (bytes say which). */
  transport: string;
  iters: number;
  time_ms: number;
  algbw_gbps: number;
  busbw_gbps: number;
  /** One-way bandwidth between ranks 0 and 1 on the same transport with messages of the same size, in this run. */
  p2p_gbps: number | null;
  /**
   * One core's memcpy of a buffer of the same size, measured by rank 0 in this run: the physical limit of a
   * transport that copies each payload once (shared memory).
   */
  memcpy_gbps: number;
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

/**
 * Runs `fn` and returns its wall time (slowest rank) and the CPU cores all ranks kept busy meanwhile. `fn` says
 * how many of its milliseconds were spent on its own single-threaded preparation (a buffer's refill), which is
 * not the thing measured: they are left out of both.
 */
async function measured(
  pg: Collectives,
  fn: () => Promise<number | undefined>,
): Promise<{ ms: number; cores: number }> {
  await pg.barrier();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const excluded = (await fn()) ?? 0;
  const ms = performance.now() - t0 - excluded;
  const cpu = process.cpuUsage(cpu0);
  const wall = (await pg.allReduce(new Float32Array([ms]), { op: 'max' }))[0];
  const busy = new Float32Array([(cpu.user + cpu.system) / 1000 - excluded]);
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
    return undefined;
  });
  return { gbps: (iters * buf.byteLength) / (ms / 1000) / 1e9, cores };
}

/** One core copying `bytes` from one buffer to another, best of several: GB/s. */
function memcpyBandwidth(bytes: number): number {
  const src = new Uint8Array(bytes).fill(1);
  const dst = new Uint8Array(bytes);
  const reps = Math.max(3, Math.min(200, Math.floor((256 * MiB) / Math.max(bytes, 1))));
  let best = Number.POSITIVE_INFINITY;
  for (let round = 0; round < 3; round++) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) dst.set(src);
    best = Math.min(best, (performance.now() - t0) / reps);
  }
  return bytes / (best / 1000) / 1e9;
}

/**
 * Which path this rank's payloads took since `before`: `shm+zmq` when some found their ring full (the
 * one-value all-reduces that time the runs go in the frame on any transport).
 */
function pathSince(transport: Transport, before: Transport['bytesSent']): string {
  const { shm, overflow } = transport.bytesSent;
  if (shm === before.shm) return 'zmq';
  return overflow > before.overflow ? 'shm+zmq' : 'shm';
}

/**
 * The benchmark, size by size, and per size on each transport of `opts.transports` (every rank sets its own
 * sends' path: a receiver takes either). Without `transports`, the job's own choice.
 */
export async function runAllReduceBench(
  ctx: WorkerContext,
  opts: { sizesMiB: number[]; dtype: WireDtype; iters: number; transports?: readonly ('shm' | 'zmq')[] },
  transport: Transport,
): Promise<AllReduceBenchLine[]> {
  const lines: AllReduceBenchLine[] = [];
  const configured = transport.sharedMemory;
  for (const sizeMiB of opts.sizesMiB) {
    for (const path of opts.transports ?? [undefined]) {
      if (path) transport.sharedMemory = configured && path === 'shm';
      lines.push(await benchSize(ctx, opts, sizeMiB, transport));
    }
  }
  transport.sharedMemory = configured;
  return lines;
}

async function benchSize(
  ctx: WorkerContext,
  opts: { dtype: WireDtype; iters: number },
  sizeMiB: number,
  transport: Transport,
): Promise<AllReduceBenchLine> {
  const { pg } = ctx;
  const n = pg.size;
  const elements = Math.max(1, Math.round((sizeMiB * MiB) / 4));
  const input = gradientLike(elements, ctx.rank);
  const buf = input.slice();
  const iters = opts.iters > 0 ? opts.iters : autoIters(buf.byteLength);
  const memcpy = ctx.rank === 0 ? memcpyBandwidth(buf.byteLength) : 0;
  const p2p = await p2pBandwidth(pg, buf, iters);
  const before = { ...transport.bytesSent };

  const allReduceTime = async (dtype: WireDtype) => {
    await pg.allReduce(buf, { dtype }); // warm-up: connections, allocations
    return measured(pg, async () => {
      let refill = 0;
      for (let i = 0; i < iters; i++) {
        // Fresh inputs every time: summed in place they would double each op and reach fp16's inf within a few
        // dozen, timing the codec's rare inf path instead of real gradients. The refill is a memcpy of the whole
        // buffer, the same on every rank at once, and not the all-reduce's: it is left out (nccl-tests has none).
        const t = performance.now();
        buf.set(input);
        refill += performance.now() - t;
        await pg.allReduce(buf, { dtype });
      }
      return refill;
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
    transport: pathSince(transport, before),
    iters,
    time_ms: round(ms),
    algbw_gbps: round(algbw),
    busbw_gbps: round((algbw * 2 * (n - 1)) / n),
    p2p_gbps: p2p === null ? null : round(p2p.gbps),
    memcpy_gbps: round(memcpy),
    p2p_cores: p2p === null ? null : round(p2p.cores),
    allreduce_cores: round(run.cores),
    fp32_time_ms: fp32 === null ? null : round(fp32),
    vs_fp32: fp32 === null ? null : round(ms / fp32),
  };
  if (ctx.rank === 0) ctx.report(line);
  return line;
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
