import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommAbortedError, CommTimeoutError } from '../../src/comm/errors.ts';
import { EAGER_SEND_BYTES } from '../../src/comm/process-group.ts';
import { roundToWire } from '../../src/comm/wire-dtype.ts';
import { makeWorld, randomValues, type World } from './world.ts';

// Both data planes; the rings (2 MiB) hold small messages and fall back to ZeroMQ for part of a large one.
const worlds: Record<string, World> = {};
beforeAll(async () => {
  worlds['zmq'] = await makeWorld(4, { segmentBytes: 256 });
  worlds['shm'] = await makeWorld(4, { segmentBytes: 256, shmRingBytes: 2 << 20 });
});
afterAll(async () => {
  expect(worlds['shm'].transports.every((t) => t.bytesSent.shm > 0)).toBe(true);
  await Promise.all(Object.values(worlds).map((w) => w.close()));
});

describe.each(['zmq', 'shm'])('%s', (transport) => {
  let world: World;
  beforeAll(() => {
    world = worlds[transport];
  });

  describe('sub-groups', () => {
    it('[0,2] and [1,3] run concurrently with a world all-reduce, without mixing messages', async () => {
      const g = world.groups;
      const evens = [g[0].newGroup([0, 2]), g[2].newGroup([0, 2])];
      const odds = [g[1].newGroup([1, 3]), g[3].newGroup([1, 3])];
      expect(evens.map((x) => [x.id, x.rank, x.size])).toEqual([
        ['[0,2]#0', 0, 2],
        ['[0,2]#0', 1, 2],
      ]);
      expect(odds[1].rank).toBe(1);

      const sub = [0, 1, 2, 3].map((r) => randomValues(500, r));
      const full = [0, 1, 2, 3].map((r) => Float32Array.from({ length: 300 }, () => r + 1));
      const pairOf = (r: number) => (r % 2 === 0 ? evens[r / 2] : odds[(r - 1) / 2]);
      const sums = [0, 1].map((parity) => sub[parity].map((v, i) => Math.max(v, sub[parity + 2][i])));
      await Promise.all(
        [0, 1, 2, 3].map((r) =>
          Promise.all([pairOf(r).allReduce(sub[r], { op: 'max' }), g[r].allReduce(full[r])]),
        ),
      );
      for (let r = 0; r < 4; r++) {
        expect(sub[r]).toEqual(Float32Array.from(sums[r % 2]));
        expect(full[r]).toEqual(new Float32Array(300).fill(10));
      }
    });

    it('a second group over the same ranks gets its own id', async () => {
      const a = [world.groups[1].newGroup([3, 1]), world.groups[3].newGroup([3, 1])];
      expect(a[0].id).toBe('[3,1]#0');
      expect(a[0].rank).toBe(1); // rank = index in the list
      const b = [world.groups[1].newGroup([3, 1]), world.groups[3].newGroup([3, 1])];
      expect(b[1].id).toBe('[3,1]#1');
      const bufs = [new Float32Array([1, 2]), new Float32Array([3, 4])];
      await Promise.all([a[0].broadcast(bufs[0], 0), a[1].broadcast(bufs[1], 0)]);
      expect(bufs[0]).toEqual(new Float32Array([3, 4])); // group rank 0 is world rank 3
    });

    it('only members may create a group', () => {
      expect(() => world.groups[1].newGroup([0, 2])).toThrow(/not in \[0,2\]/);
    });
  });

  describe('send / recv', () => {
    it('matches by tag whatever the arrival order, keeps order within a tag, and carries the length', async () => {
      const [a, b] = [world.groups[0], world.groups[3]];
      const messages = [0, 1, 2].map((i) => randomValues(10 + i, i));
      await Promise.all([a.send(messages[0], 3, 1), a.send(messages[1], 3, 2), a.send(messages[2], 3, 1)]);
      expect(await b.recv(0, 2)).toEqual(messages[1]);
      expect(await b.recv(0, 1)).toEqual(messages[0]);
      expect(await b.recv(0, 1)).toEqual(messages[2]);
    });

    it('delivers a receive posted before the message, an empty message, and a large one sent without a copy', async () => {
      const [a, b] = [world.groups[2], world.groups[1]];
      const large = randomValues(EAGER_SEND_BYTES / 4 + 1001, 9);
      const early = b.recv(2, 5);
      const sent = a.send(large, 1, 5);
      const got = await early;
      expect(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(large.buffer))).toBe(
        true,
      );
      await sent; // resolved only once the peer has the message
      await a.send(new Float32Array(0), 1);
      expect((await b.recv(2)).length).toBe(0);
    });

    it.each(['fp16', 'bf16'] as const)(
      'in %s: half the bytes, received as the rounded fp32 values',
      async (dtype) => {
        const [a, b] = [world.groups[0], world.groups[3]];
        for (const n of [7, EAGER_SEND_BYTES / 2 + 3]) {
          const values = randomValues(n, 4);
          const before = a.bytesSent['send'] ?? 0;
          const got = b.recv(0, 9);
          await a.send(values, 3, 9, { dtype });
          expect(await got).toEqual(roundToWire(dtype, values.slice()));
          expect((a.bytesSent['send'] ?? 0) - before).toBe(n * 2);
        }
      },
    );
  });
});

describe('tcp', () => {
  it('binds a wildcard port, reports the port bound, and carries a collective', async () => {
    const w = await makeWorld(2, { tcp: true });
    try {
      for (const e of w.endpoints) expect(e).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
      const bufs = [new Float32Array([1, 2, 3]), new Float32Array([10, 20, 30])];
      await Promise.all(w.groups.map((g, r) => g.allReduce(bufs[r], { op: 'avg' })));
      expect(bufs[1]).toEqual(new Float32Array([5.5, 11, 16.5]));
    } finally {
      await w.close();
    }
  });
});

describe('failure', () => {
  it('a collective times out naming the op, its sequence number and the silent peer', async () => {
    const w = await makeWorld(3, { timeoutMs: 100 });
    try {
      await Promise.all([w.groups[0].barrier(), w.groups[1].barrier(), w.groups[2].barrier()]);
      // Rank 2 never calls: rank 0 waits for its predecessor in the ring, rank 2.
      const pending = [
        w.groups[0].allReduce(new Float32Array(8)),
        w.groups[1].allReduce(new Float32Array(8)),
      ];
      const err = await pending[0].catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CommTimeoutError);
      expect((err as Error).message).toBe(
        'allReduce #1 (group world) timed out after 0.1 s waiting for rank 2',
      );
      await expect(pending[1]).rejects.toThrow(/allReduce #1 \(group world\) timed out/);
    } finally {
      await w.close();
    }
  });

  it('abort rejects a pending collective at once, and every later one', async () => {
    const w = await makeWorld(2, { timeoutMs: 60_000 });
    try {
      const pending = w.groups[0].allReduce(new Float32Array(1000));
      const reason = new Error('rank 1 exited with code 3');
      const t0 = performance.now();
      setTimeout(() => w.groups[0].abort(reason), 20);
      const err = await pending.catch((e: unknown) => e);
      expect(performance.now() - t0).toBeLessThan(1000);
      expect(err).toBeInstanceOf(CommAbortedError);
      expect((err as Error).message).toBe('allReduce #0 (group world) aborted: rank 1 exited with code 3');
      expect((err as Error).cause).toBe(reason);
      await expect(w.groups[0].barrier()).rejects.toThrow(/barrier #1 \(group world\) aborted/);
      const child = w.groups[1].newGroup([0, 1]);
      w.groups[1].abort(reason);
      await expect(child.recv(0)).rejects.toBeInstanceOf(CommAbortedError);
    } finally {
      await w.close();
    }
  });
});
