import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/base/rng.ts';
import type { OptimizerSpec } from '../../src/config/schema.ts';
import {
  consolidate,
  latestCheckpoint,
  newestHeader,
  newestVerified,
  type RankState,
  readAllRanks,
  readCheckpointHeader,
  readRankCheckpoint,
  resolveCheckpoint,
  saveCheckpoint,
  writeRankCheckpoint,
} from '../../src/engine/checkpoint.ts';
import { createOptimizer } from '../../src/engine/create-optimizer.ts';
import { layoutSlots } from '../../src/engine/flat-params.ts';
import { fullLayout } from '../../src/engine/optimizer.ts';

const SLOTS = layoutSlots([
  { name: 'w', shape: [6, 5] },
  { name: 'b', shape: [5] },
]);
const N = 35;
const noBarrier = { barrier: async () => {} };
let tmp: string;

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-ckpt-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const specs: OptimizerSpec[] = [
  { type: 'SGD', params: { lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.01 } },
  { type: 'Adam', params: { lr: 0.01, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0.01 } },
  { type: 'AdamW', params: { lr: 0.01, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0.01 } },
  { type: 'Lamb', params: { lr: 0.01, betas: [0.9, 0.999], eps: 1e-6, weight_decay: 0.01 } },
];

function grads(step: number): Float32Array {
  const rng = new Rng(100 + step);
  return Float32Array.from({ length: N }, () => rng.next() - 0.5);
}

function state(step: number, params: Float32Array, opt: ReturnType<typeof createOptimizer>): RankState {
  return {
    step,
    rank: 0,
    world: 1,
    range: { start: 0, end: N },
    slots: SLOTS,
    params,
    optimizer: { type: opt.type, state: opt.state() },
    meta: { model: { type: 'mlp' }, note: 'kept as given' },
  };
}

describe('checkpoint files', () => {
  for (const spec of specs) {
    it(`${spec.type}: saved after 3 steps and restored, 3 more steps equal 6 uninterrupted bit for bit`, async () => {
      const layout = fullLayout(SLOTS);
      const p0 = Float32Array.from({ length: N }, (_, i) => Math.sin(i));
      const full = p0.slice();
      const a = createOptimizer(spec, layout);
      for (let s = 0; s < 6; s++) await a.step(full, grads(s), 0.01);

      const part = p0.slice();
      const b = createOptimizer(spec, layout);
      for (let s = 0; s < 3; s++) await b.step(part, grads(s), 0.01);
      const dir = join(tmp, spec.type);
      await saveCheckpoint(dir, 2, state(3, part, b), noBarrier);

      const back = readRankCheckpoint(resolveCheckpoint(dir), 0);
      expect(back.step).toBe(3);
      expect(back.meta).toEqual({ model: { type: 'mlp' }, note: 'kept as given' });
      expect(back.slots).toEqual(SLOTS);
      const c = createOptimizer(spec, layout);
      c.loadState(back.optimizer.state);
      const resumed = back.params.slice();
      for (let s = 3; s < 6; s++) await c.step(resumed, grads(s), 0.01);
      expect(Buffer.from(resumed.buffer).equals(Buffer.from(full.buffer))).toBe(true);
    });
  }

  it('an optimizer refuses state of another shape, naming the entry', () => {
    const adam = createOptimizer(specs[1], fullLayout(SLOTS));
    expect(() =>
      adam.loadState({ t: 2, exp_avg: new Float32Array(3), exp_avg_sq: new Float32Array(N) }),
    ).toThrow(/exp_avg' has 3 elements/);
    expect(() => adam.loadState({ t: 2 })).toThrow(/exp_avg' is missing/);
  });

  it('latest is written after the rank files, and only the newest `keep` checkpoints stay', async () => {
    const dir = join(tmp, 'prune');
    const opt = createOptimizer(specs[0], fullLayout(SLOTS));
    const p = new Float32Array(N);
    for (const step of [2, 4, 6, 8]) await saveCheckpoint(dir, 2, state(step, p, opt), noBarrier);
    expect(readdirSync(dir).sort()).toEqual(['latest', 'step-6', 'step-8']);
    expect(latestCheckpoint(dir)).toBe(join(dir, 'step-8'));
    // A rank file written without the commit (a crash before the barrier) does not move `latest`.
    await writeRankCheckpoint(dir, state(10, p, opt));
    expect(latestCheckpoint(dir)).toBe(join(dir, 'step-8'));
    expect(readdirSync(join(dir, 'step-10'))).toEqual(['rank-0.bin']);
  });

  it('consolidates the ranks’ owned ranges into the full parameters', async () => {
    const dir = join(tmp, 'shards');
    const full = Float32Array.from({ length: N }, (_, i) => i * 0.5);
    const cut = 12;
    for (const [rank, start, end] of [
      [0, 0, cut],
      [1, cut, N],
    ] as const) {
      await writeRankCheckpoint(dir, {
        step: 1,
        rank,
        world: 2,
        range: { start, end },
        slots: SLOTS,
        params: full.slice(start, end),
        optimizer: { type: 'SGD', state: { t: 1 } },
        meta: {},
      });
    }
    expect(consolidate(readAllRanks(join(dir, 'step-1'))).params).toEqual(full);
  });

  it('a missing, truncated or altered file is an error naming it', async () => {
    const dir = join(tmp, 'bad');
    const opt = createOptimizer(specs[1], fullLayout(SLOTS));
    await saveCheckpoint(dir, 2, state(1, new Float32Array(N).fill(1), opt), noBarrier);
    const step = join(dir, 'step-1');
    const file = join(step, 'rank-0.bin');
    expect(() => readRankCheckpoint(step, 1)).toThrow(
      `checkpoint file ${join(step, 'rank-1.bin')} is missing`,
    );
    const bytes = readFileSync(file);
    const flipped = Buffer.from(bytes);
    flipped[flipped.length - 1] ^= 1;
    writeFileSync(file, flipped);
    expect(() => readRankCheckpoint(step, 0)).toThrow(`checkpoint ${file} is corrupt`);
    writeFileSync(file, bytes.subarray(0, bytes.length - 8));
    expect(() => readRankCheckpoint(step, 0)).toThrow(/is corrupt.*checksum mismatch/);
    writeFileSync(file, 'hello');
    expect(() => readRankCheckpoint(step, 0)).toThrow(/bad magic/);
    expect(() => resolveCheckpoint(join(tmp, 'nothing'))).toThrow(/no checkpoint at .*nothing/);
    writeFileSync(join(dir, 'latest'), 'step-99\n');
    expect(() => resolveCheckpoint(dir)).toThrow(/names .*step-99, which does not exist/);
    expect(existsSync(step)).toBe(true);
  });
});

describe('checkpoints that cannot lie', () => {
  /** Two checkpoints (steps 1 and 2) of a world of 2 under `name`, `latest` at step 2, keep 3. */
  async function two(name: string): Promise<string> {
    const dir = join(tmp, name);
    const opt = createOptimizer(specs[1], fullLayout(SLOTS));
    for (const step of [1, 2]) {
      for (const rank of [0, 1]) {
        const half = rank === 0 ? { start: 0, end: 20 } : { start: 20, end: N };
        await writeRankCheckpoint(dir, {
          ...state(step, new Float32Array(half.end - half.start).fill(step), opt),
          rank,
          world: 2,
          range: half,
          optimizer: {
            type: opt.type,
            state: {
              t: step,
              m: new Float32Array(half.end - half.start),
              v: new Float32Array(half.end - half.start),
            },
          },
        });
      }
      writeFileSync(join(dir, 'latest'), `step-${step}\n`);
    }
    return dir;
  }

  /** Rewrites the first occurrence of `from` with `to` (same length) in a file's bytes. */
  function flip(file: string, from: string, to: string): void {
    const bytes = readFileSync(file);
    const at = bytes.indexOf(from);
    expect(at).toBeGreaterThan(0);
    bytes.write(to, at, 'latin1');
    writeFileSync(file, bytes);
  }

  it('a flipped step or optimizer counter in a header fails the checksum, naming the file', async () => {
    const dir = await two('flips');
    const file = join(dir, 'step-2', 'rank-0.bin');
    flip(file, '"step":2', '"step":1');
    expect(() => readRankCheckpoint(join(dir, 'step-2'), 0)).toThrow(
      `checkpoint ${file} is corrupt or not a kd-launch checkpoint: checksum mismatch`,
    );
    const other = join(dir, 'step-1', 'rank-1.bin');
    flip(other, '"t":1', '"t":7');
    expect(() => readRankCheckpoint(join(dir, 'step-1'), 1)).toThrow(
      /rank-1\.bin is corrupt.*checksum mismatch/,
    );
  });

  it('a step directory holding another step (renamed, or a file copied in) is refused', async () => {
    const dir = await two('renamed');
    const moved = join(dir, 'step-5');
    cpSync(join(dir, 'step-2'), moved, { recursive: true });
    expect(() => readRankCheckpoint(moved, 0)).toThrow(/holds step 2, its directory says 5/);
  });

  it('resume auto: the newest checkpoint that verifies, saying what it passed over and why', async () => {
    // No `latest`: the newest complete step directory.
    const a = await two('no-latest');
    rmSync(join(a, 'latest'));
    const found = newestVerified(a);
    expect(found?.stepDir).toBe(join(a, 'step-2'));
    expect(found?.noLatest).toBe(true);
    expect(found?.state.step).toBe(2);
    // The newest truncated: the one before, with the reason.
    const b = await two('truncated');
    const file = join(b, 'step-2', 'rank-1.bin');
    writeFileSync(file, readFileSync(file).subarray(0, 100));
    const back = newestVerified(b);
    expect(back?.stepDir).toBe(join(b, 'step-1'));
    expect(back?.passedOver).toEqual([expect.stringMatching(/step-2\/rank-1\.bin is corrupt/)]);
    // A rank file missing from the newest: the one before.
    const c = await two('missing-rank');
    rmSync(join(c, 'step-2', 'rank-0.bin'));
    expect(newestVerified(c)?.stepDir).toBe(join(c, 'step-1'));
    // A step directory newer than `latest` is an abandoned run's: never taken, even when `latest` is corrupt.
    const d = await two('abandoned');
    cpSync(join(d, 'step-2'), join(d, 'step-3'), { recursive: true });
    writeFileSync(join(d, 'latest'), 'step-2\n');
    writeFileSync(join(d, 'step-2', 'rank-0.bin'), 'garbage');
    expect(newestVerified(d)?.stepDir).toBe(join(d, 'step-1'));
    // Nothing that verifies: nothing to resume (and every reason listed by the caller).
    const e = await two('none');
    for (const s of [1, 2]) rmSync(join(e, `step-${s}`, 'rank-1.bin'));
    expect(newestVerified(e)).toBeUndefined();
  });

  it("the newest checkpoint's header, read without any payload, for the launcher's plan", async () => {
    const dir = await two('headers');
    expect(readCheckpointHeader(join(dir, 'step-2'))).toEqual({
      stepDir: join(dir, 'step-2'),
      step: 2,
      world: 2,
      meta: { model: { type: 'mlp' }, note: 'kept as given' },
    });
    // What resume auto will try first: `latest`'s, even with a corrupt payload (the load verifies it)…
    const file = join(dir, 'step-2', 'rank-0.bin');
    const bytes = readFileSync(file);
    bytes[bytes.length - 1] ^= 0xff;
    writeFileSync(file, bytes);
    expect(newestHeader(dir)?.step).toBe(2);
    // …and the one before when its header cannot be read or lies about its step.
    flip(file, '"step":2', '"step":1');
    expect(() => readCheckpointHeader(join(dir, 'step-2'))).toThrow(/holds step 1, its directory says 2/);
    expect(newestHeader(dir)?.stepDir).toBe(join(dir, 'step-1'));
    writeFileSync(
      join(dir, 'step-1', 'rank-0.bin'),
      readFileSync(join(dir, 'step-1', 'rank-0.bin')).subarray(0, 40),
    );
    expect(() => readCheckpointHeader(join(dir, 'step-1'))).toThrow(
      /rank-0\.bin is corrupt.*truncated header/,
    );
    expect(newestHeader(dir)).toBeUndefined();
  });
});
