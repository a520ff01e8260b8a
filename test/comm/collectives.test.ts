import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProcessGroup } from '../../src/comm/process-group.ts';
import { RING_DATA_BYTES } from '../../src/comm/shm-ring.ts';
import { REDUCE_OPS, type ReduceOp, shardRange, WIRE_DTYPES, type WireDtype } from '../../src/comm/types.ts';
import { roundToWire } from '../../src/comm/wire-dtype.ts';
import { bits, makeWorld, randomValues, type World } from './world.ts';

// Small segments so that 1001 values already make many segments, and the big length many more.
const SEGMENT_BYTES = 256;
const LENGTHS = [0, 1, 7, 1001, 5003];
const WORLD_SIZES = [1, 2, 3, 4];

const round = (dtype: WireDtype, x: number) => roundToWire(dtype, new Float32Array([x]))[0];
function combine(op: ReduceOp, a: number, b: number): number {
  if (op === 'max') return Math.max(a, b);
  if (op === 'min') return Math.min(a, b);
  return Math.fround(a + b);
}

/**
 * The ring's result for one element of chunk c, with the ring's rounding: the partial starts at rank c+1, every
 * hop travels in the wire dtype and is combined in fp32, and the owner c finishes (avg: divides) and rounds once.
 */
function ringReduce(
  inputs: Float32Array[],
  i: number,
  owner: number,
  op: ReduceOp,
  dtype: WireDtype,
): number {
  const n = inputs.length;
  if (n === 1) return inputs[0][i];
  let partial = inputs[(owner + 1) % n][i];
  for (let k = 2; k <= n; k++) partial = combine(op, round(dtype, partial), inputs[(owner + k) % n][i]);
  if (op === 'avg') partial = Math.fround(partial / n);
  return round(dtype, partial);
}

function reduceReference(inputs: Float32Array[], op: ReduceOp, dtype: WireDtype): Float32Array {
  const n = inputs.length;
  const length = inputs[0].length;
  const out = new Float32Array(length);
  for (let c = 0; c < n; c++) {
    const { start, end } = shardRange(length, n, c);
    for (let i = start; i < end; i++) out[i] = ringReduce(inputs, i, c, op, dtype);
  }
  return out;
}

/**
 * Both data planes: ZeroMQ, and shared-memory rings of 4 KiB, so that every payload from one byte on goes
 * through a ring, rings wrap many times, and what does not fit at once goes over ZeroMQ beside them.
 */
const TRANSPORTS = ['zmq', 'shm'] as const;
type TransportName = (typeof TRANSPORTS)[number];
const SHM_RING_BYTES = 4096;

const worlds = new Map<string, World>();
beforeAll(async () => {
  for (const transport of TRANSPORTS)
    for (const n of WORLD_SIZES)
      worlds.set(
        `${transport} ${n}`,
        await makeWorld(n, {
          segmentBytes: SEGMENT_BYTES,
          shmRingBytes: transport === 'shm' ? SHM_RING_BYTES : undefined,
        }),
      );
});
afterAll(async () => {
  for (const w of worlds.values()) await w.close();
});

describe.each(TRANSPORTS)('%s', (transport: TransportName) => {
  const groupsOf = (n: number): ProcessGroup[] => worlds.get(`${transport} ${n}`)!.groups;

  describe.each(WORLD_SIZES)('world %i', (n) => {
    describe.each(WIRE_DTYPES)('%s', (dtype) => {
      it.each(REDUCE_OPS)('allReduce %s matches the reference on every rank, bit for bit', async (op) => {
        for (const length of LENGTHS) {
          const inputs = groupsOf(n).map((_, r) => randomValues(length, 100 * r + length + 1));
          const expected = reduceReference(inputs, op, dtype);
          const bufs = inputs.map((x) => x.slice());
          const results = await Promise.all(groupsOf(n).map((g, r) => g.allReduce(bufs[r], { op, dtype })));
          results.forEach((res, r) => {
            expect(res, `rank ${r} returns its buffer`).toBe(bufs[r]);
            expect(bits(res), `length ${length}, rank ${r}`).toEqual(bits(expected));
          });
        }
      });

      it('reduceScatter gives each rank its shard of the reduction: apart (the input left alone) or in place', async () => {
        for (const length of LENGTHS) {
          const inputs = groupsOf(n).map((_, r) => randomValues(length, 7 * r + length));
          const copies = inputs.map((x) => x.slice());
          const expected = reduceReference(inputs, 'sum', dtype);
          const shards = await Promise.all(groupsOf(n).map((g, r) => g.reduceScatter(inputs[r], { dtype })));
          // The same into a caller's buffer, which is returned: each rank's part of one larger array.
          const outs = groupsOf(n).map((_, r) => {
            const { start, end } = shardRange(length, n, r);
            return new Float32Array(end - start + 2).fill(-1).subarray(1, 1 + end - start);
          });
          const into = await Promise.all(
            groupsOf(n).map((g, r) => g.reduceScatter(inputs[r], { dtype, out: outs[r] })),
          );
          // In place: each rank's own shard of its input is the output, and nothing else of the input changes.
          const inPlace = copies.map((x) => x.slice());
          const own = inPlace.map((x, r) => {
            const { start, end } = shardRange(length, n, r);
            return x.subarray(start, end);
          });
          await Promise.all(groupsOf(n).map((g, r) => g.reduceScatter(inPlace[r], { dtype, out: own[r] })));
          shards.forEach((shard, r) => {
            const { start, end } = shardRange(length, n, r);
            expect(bits(shard), `length ${length}, rank ${r}`).toEqual(bits(expected.subarray(start, end)));
            expect(into[r]).toBe(outs[r]);
            expect(bits(into[r]), `into, length ${length}, rank ${r}`).toEqual(bits(shard));
            expect(bits(own[r]), `in place, length ${length}, rank ${r}`).toEqual(bits(shard));
            const others = inPlace[r].slice();
            others.set(copies[r].subarray(start, end), start);
            expect(others, 'the rest of the input as it was').toEqual(copies[r]);
            const around = new Float32Array(outs[r].buffer);
            expect([around[0], around[around.length - 1]], 'nothing written outside out').toEqual([-1, -1]);
            expect(inputs[r]).toEqual(copies[r]);
          });
        }
        const input = new Float32Array(4 * n);
        await expect(groupsOf(n)[0].reduceScatter(input, { out: new Float32Array(5) })).rejects.toThrow(
          /out has 5 values, rank 0's shard 4/,
        );
        if (n > 1) {
          await expect(groupsOf(n)[0].reduceScatter(input, { out: input.subarray(1, 5) })).rejects.toThrow(
            /overlaps the input other than as this rank's own shard/,
          );
        }
      });

      it('allGather concatenates uneven shards, identical on every rank', async () => {
        for (const base of [0, 1, 7, 1001]) {
          const counts = groupsOf(n).map((_, r) => (base === 0 ? 0 : base + 3 * r));
          const shards = counts.map((c, r) => randomValues(c, 31 * r + base));
          const expected = roundToWire(
            n === 1 ? 'fp32' : dtype,
            Float32Array.from(shards.flatMap((s) => [...s])),
          );
          const results = await Promise.all(
            groupsOf(n).map((g, r) => g.allGather(shards[r], { counts, dtype })),
          );
          for (const res of results) expect(bits(res), `base ${base}`).toEqual(bits(expected));
        }
      });

      it('allGather in place: each shard a part of the output buffer, which is returned', async () => {
        for (const base of [0, 1, 7, 1001]) {
          const counts = groupsOf(n).map((_, r) => (base === 0 ? 0 : base + 3 * r));
          const total = counts.reduce((x, y) => x + y, 0);
          const shards = counts.map((c, r) => randomValues(c, 17 * r + base));
          const expected = roundToWire(
            n === 1 ? 'fp32' : dtype,
            Float32Array.from(shards.flatMap((s) => [...s])),
          );
          const outs = groupsOf(n).map((_, r) => {
            const out = new Float32Array(total).fill(-1);
            const at = counts.slice(0, r).reduce((x, y) => x + y, 0);
            out.set(shards[r], at);
            return { out, mine: out.subarray(at, at + counts[r]) };
          });
          const results = await Promise.all(
            groupsOf(n).map((g, r) => g.allGather(outs[r].mine, { counts, dtype, out: outs[r].out })),
          );
          results.forEach((res, r) => {
            expect(res).toBe(outs[r].out);
            expect(bits(res), `base ${base}`).toEqual(bits(expected));
          });
        }
        await expect(
          groupsOf(n)[0].allGather(new Float32Array(2), { out: new Float32Array(2 * n + 1) }),
        ).rejects.toThrow(/out has/);
      });

      it('allGather into memory that moves while it waits (as the wasm heap does when it grows)', async () => {
        for (const base of [1, 1001]) {
          const counts = groupsOf(n).map((_, r) => base + 3 * r);
          const total = counts.reduce((x, y) => x + y, 0);
          const shards = counts.map((c, r) => randomValues(c, 23 * r + base));
          const expected = roundToWire(
            n === 1 ? 'fp32' : dtype,
            Float32Array.from(shards.flatMap((s) => [...s])),
          );
          // The memory moves on every turn of the event loop while the collective runs: its contents are copied
          // to a new buffer and the old one is detached (transferred), so a write through an earlier view is lost.
          const memories = groupsOf(n).map(() => {
            let current = new Float32Array(total).fill(-1);
            return {
              look: () => current,
              move() {
                const moved = new Float32Array(current);
                structuredClone(current.buffer, { transfer: [current.buffer] });
                current = moved;
              },
            };
          });
          let gathering = true;
          const moves = (async () => {
            while (gathering) {
              for (const m of memories) m.move();
              await new Promise((resolve) => setImmediate(resolve));
            }
          })();
          const results = await Promise.all(
            groupsOf(n).map((g, r) => g.allGather(shards[r], { counts, dtype, out: memories[r].look })),
          );
          gathering = false;
          await moves;
          results.forEach((res, r) => {
            expect(bits(memories[r].look()), `base ${base}`).toEqual(bits(expected));
            expect(res === memories[r].look() || res.length === 0, 'the memory as it was at the end').toBe(
              true,
            );
          });
        }
      });

      it('broadcast from the last rank reaches every rank', async () => {
        const root = n - 1;
        for (const length of LENGTHS) {
          const source = randomValues(length, length + 5);
          const bufs = groupsOf(n).map((_, r) =>
            r === root ? source.slice() : new Float32Array(length).fill(-1),
          );
          const expected = n === 1 ? source : roundToWire(dtype, source);
          await Promise.all(groupsOf(n).map((g, r) => g.broadcast(bufs[r], root, { dtype })));
          for (const b of bufs) expect(bits(b), `length ${length}`).toEqual(bits(expected));
        }
      });
    });

    it('allGather with equal default counts', async () => {
      const shards = groupsOf(n).map((_, r) => randomValues(5, r));
      const results = await Promise.all(groupsOf(n).map((g, r) => g.allGather(shards[r])));
      for (const res of results) expect(res).toEqual(Float32Array.from(shards.flatMap((s) => [...s])));
    });

    it('barrier holds everyone until the last rank arrives', async () => {
      const groups = groupsOf(n);
      const arrived: number[] = [];
      const left: number[] = [];
      await Promise.all(
        groups.map(async (g, r) => {
          await new Promise((resolve) => setTimeout(resolve, r === n - 1 ? 50 : 0));
          arrived.push(r);
          await g.barrier();
          left.push(arrived.length);
        }),
      );
      expect(left).toEqual(new Array(n).fill(n));
    });

    it('runs several collectives in flight at once, matched by sequence number', async () => {
      const groups = groupsOf(n);
      const a = groups.map((_, r) => randomValues(300, r));
      const b = groups.map((_, r) => randomValues(77, r + 50));
      const expectA = reduceReference(a, 'sum', 'fp32');
      const expectB = reduceReference(b, 'max', 'fp32');
      // Ranks issue the same calls in the same order, but nobody waits between them.
      const runs = groups.map((g, r) =>
        Promise.all([g.allReduce(a[r]), g.allReduce(b[r], { op: 'max' }), g.barrier()]),
      );
      await Promise.all(runs);
      for (let r = 0; r < n; r++) {
        expect(a[r]).toEqual(expectA);
        expect(b[r]).toEqual(expectB);
      }
    });
  });
});

describe('bookkeeping', () => {
  it('each data plane carried its worlds’ payloads (a full ring’s overflow goes over ZeroMQ beside it)', async () => {
    for (const transport of TRANSPORTS)
      for (const n of WORLD_SIZES.filter((k) => k > 1)) {
        const w = worlds.get(`${transport} ${n}`)!;
        await Promise.all(w.groups.map((g, r) => g.allReduce(randomValues(5003, r))));
        const shm = w.transports.map((t) => t.bytesSent.shm > 0);
        expect(shm, `${transport} world ${n}`).toEqual(new Array(n).fill(transport === 'shm'));
        // A chunk larger than the 4 KiB ring: the rest of it went over ZeroMQ, beside the ring.
        const overflow = w.transports.map((t) => t.bytesSent.overflow > 0);
        expect(overflow, `${transport} world ${n}`).toEqual(new Array(n).fill(transport === 'shm'));
      }
  });

  it('counts payload bytes per op (fp16 halves them) and records the last collective', async () => {
    const groups = worlds.get('zmq 2')!.groups;
    const before = groups[0].bytesSent['allReduce'] ?? 0;
    await Promise.all(groups.map((g) => g.allReduce(new Float32Array(1000))));
    const fp32 = (groups[0].bytesSent['allReduce'] ?? 0) - before;
    await Promise.all(groups.map((g) => g.allReduce(new Float32Array(1000), { dtype: 'fp16' })));
    const fp16 = (groups[0].bytesSent['allReduce'] ?? 0) - before - fp32;
    expect(fp32).toBe(4000); // 2(n−1)/n · 4000 bytes at n = 2
    expect(fp16).toBe(2000);
    const seq = groups[0].lastCollective!.seq;
    expect(groups[0].lastCollective).toEqual({ op: 'allReduce', seq, group: 'world' });
    await Promise.all(groups.map((g) => g.barrier()));
    expect(groups[0].lastCollective).toEqual({ op: 'barrier', seq: seq + 1, group: 'world' });
  });

  it('fp16 and bf16 all-reduce put half the bytes of fp32 on the wire (world 2, default 4 MiB segments)', async () => {
    const w = await makeWorld(2);
    try {
      const sent = async (dtype: WireDtype) => {
        const before = w.groups.map((g) => g.bytesSent['allReduce'] ?? 0);
        await Promise.all(w.groups.map((g, r) => g.allReduce(randomValues(3 << 20, r), { dtype })));
        return w.groups.map((g, r) => (g.bytesSent['allReduce'] ?? 0) - before[r]);
      };
      const fp32 = await sent('fp32');
      expect(fp32).toEqual([12 << 20, 12 << 20]); // 2(n−1)/n · 12 MiB at n = 2, per rank
      // Payload bytes only (the msgpack header of each of the few segments is ~60 bytes): exactly half.
      expect(await sent('fp16')).toEqual(fp32.map((b) => b / 2));
      expect(await sent('bf16')).toEqual(fp32.map((b) => b / 2));
    } finally {
      await w.close();
    }
  });

  it('rejects ranks that call with different lengths instead of mixing them up', async () => {
    const w = await makeWorld(2, { timeoutMs: 500 });
    try {
      const results = await Promise.allSettled([
        w.groups[0].allReduce(new Float32Array(10)),
        w.groups[1].allReduce(new Float32Array(12)),
      ]);
      expect(
        results.some((r) => r.status === 'rejected' && /expected allReduce/.test(String(r.reason))),
      ).toBe(true);
    } finally {
      await w.close();
    }
  });
});

describe("16 Mi values (64 MiB), as a model's gradients", () => {
  /**
   * `ringReduce` over whole chunks: the partial of chunk c starts at rank c+1 and travels round the ring, rounded
   * to the wire before each hop and combined in fp32; the owner finishes (avg: divides) and rounds once.
   */
  function bigReference(inputs: Float32Array[], op: ReduceOp, dtype: WireDtype): Float32Array {
    const n = inputs.length;
    const length = inputs[0].length;
    const out = new Float32Array(length);
    for (let c = 0; c < n; c++) {
      const { start, end } = shardRange(length, n, c);
      const acc = out.subarray(start, end);
      acc.set(inputs[(c + 1) % n].subarray(start, end));
      for (let k = 2; k <= n; k++) {
        const x = inputs[(c + k) % n].subarray(start, end);
        acc.set(roundToWire(dtype, acc));
        for (let i = 0; i < acc.length; i++) acc[i] = combine(op, acc[i], x[i]);
      }
      if (op === 'avg') for (let i = 0; i < acc.length; i++) acc[i] = acc[i] / n;
      acc.set(roundToWire(dtype, acc));
    }
    return out;
  }

  /** Every fp32 op, and the half dtypes' sums, at world 2; the average at world 4 (four ranks in this process). */
  const CASES: Record<number, (readonly [ReduceOp, WireDtype])[]> = {
    2: [...REDUCE_OPS.map((op) => [op, 'fp32'] as const), ['sum', 'fp16'], ['sum', 'bf16']],
    4: [['avg', 'fp32']],
  };

  it.each([2, 4])(
    'world %i over shared memory and over ZeroMQ: equal to the reference, bit for bit',
    async (n) => {
      const length = 16 << 20;
      const inputs = Array.from({ length: n }, (_, r) => randomValues(length, 1000 + r));
      // ZeroMQ at world 2 only: at world 4 the four ranks share this one process, and the plane is the same code.
      // Default segments and rings: the sizes a training run uses.
      const worlds = await Promise.all(
        (n === 2 ? [true, false] : [true]).map(async (shm) => ({
          shm,
          w: await makeWorld(n, shm ? { shmRingBytes: RING_DATA_BYTES } : {}),
        })),
      );
      try {
        for (const [op, dtype] of CASES[n]) {
          const expected = Buffer.from(bits(bigReference(inputs, op, dtype)).buffer);
          for (const { shm, w } of worlds) {
            const bufs = inputs.map((x) => x.slice());
            await Promise.all(w.groups.map((g, r) => g.allReduce(bufs[r], { op, dtype })));
            for (const [r, b] of bufs.entries())
              expect(
                Buffer.from(bits(b).buffer).equals(expected),
                `${op} ${dtype} shm=${shm} rank ${r}`,
              ).toBe(true);
          }
        }
        // Every payload in shared memory: a ring holds a whole chunk's segments with their headers.
        for (const { shm, w } of worlds)
          if (shm) expect(w.transports.every((t) => t.bytesSent.shm > 0 && t.bytesSent.zmq === 0)).toBe(true);
      } finally {
        for (const { w } of worlds) await w.close();
      }
    },
  );
});
