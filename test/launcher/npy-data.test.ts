/**
 * NumPy data of the user's own in a training job, over real worker processes: an .npz the test writes (three
 * classes of points around three centres, each sample a 2 × 2 float32 array, labels int64, stored as np.savez
 * does, so the workers read their batches from the file) named relative to a job file trains an MLP to a stated
 * accuracy at world 2; x and y of different lengths, and a model that does not fit the samples, are refused before
 * any worker starts, naming the file.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import { Rng } from '../../src/base/rng.ts';
import { ConfigError } from '../../src/config/errors.ts';
import type { RunSummary } from '../../src/trainer/summary.ts';
import { npy, npz } from '../fixtures/npy.ts';
import { reportsOf, summaryOf } from './compare.ts';

let dir: string;
/** 600 samples: class c is normal noise (σ = 1) around centre 4·e_c in 4 dimensions, as a 2 × 2 array. */
const N = 600;
const { x, y } = (() => {
  const rng = new Rng(7);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  const y = Array.from({ length: N }, (_, i) => i % 3);
  const x = y.flatMap((c) => [0, 1, 2, 3].map((d) => (d === c ? 4 : 0) + gauss()));
  return { x, y };
})();

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kd-npy-job-'));
  const xs = npy({ descr: '<f4', shape: [N, 2, 2], values: x });
  writeFileSync(join(dir, 'points.npz'), npz({ x: xs, y: npy({ descr: '<i8', shape: [N], values: y }) }));
  writeFileSync(
    join(dir, 'short.npz'),
    npz({ x: xs, y: npy({ descr: '<i8', shape: [N - 1], values: y.slice(1) }) }),
  );
});
/** n 12×12 grey images (a bright bar across, class 0, or down, class 1, on noise) in NHWC, scaled to [0, 1]. */
function bars(n: number, seed: number): { x: number[]; y: number[] } {
  const rng = new Rng(seed);
  const y = Array.from({ length: n }, (_, i) => i % 2);
  const x = y.flatMap((c) => {
    const at = 2 + Math.floor(rng.next() * 8);
    return Array.from({ length: 144 }, (_, p) => {
      const bar = c === 0 ? Math.floor(p / 12) === at : p % 12 === at;
      return Math.min(255, Math.floor(rng.next() * 80) + (bar ? 170 : 0)) / 255;
    });
  });
  return { x, y };
}

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function job(data: Record<string, unknown>): Record<string, unknown> {
  return {
    name: 'npy-data-test',
    backend: 'cpu',
    seed: 1,
    model: { type: 'mlp', layers: [4, 16, 3] },
    data: { format: 'npy', ...data },
    optimizer: { type: 'Adam', params: { lr: 0.01 } },
    train_micro_batch_size_per_gpu: 16,
    steps: 60,
    steps_per_print: 1000,
  };
}

describe('a job on NumPy arrays of the user’s own', () => {
  it('an .npz named relative to the job file trains an MLP to over 95% on held-out samples at world 2', async () => {
    const file = join(dir, 'job.yaml');
    writeFileSync(
      file,
      [
        'name: npy-data-test',
        'backend: cpu',
        'seed: 1',
        'model: {type: mlp, layers: [4, 16, 3]}',
        'data: {format: npy, path: points.npz, test_fraction: 0.25}',
        'optimizer: {type: Adam, params: {lr: 0.01}}',
        'train_micro_batch_size_per_gpu: 16',
        'steps: 60',
        'steps_per_print: 1000',
        '',
      ].join('\n'),
    );
    const s = (await reportsOf(file, 2)).find((d) => (d as { kind?: string }).kind === 'summary') as
      | RunSummary
      | undefined;
    expect(s?.world).toBe(2);
    expect(s?.test_accuracy).toBeGreaterThan(0.95);
  });

  it('float64 images and uint8 labels as train and test pairs of .npy files train a CNN to over 90% at world 2', async () => {
    const files: Record<string, string> = {};
    for (const [split, n, seed] of [
      ['train', 200, 11],
      ['test', 100, 12],
    ] as const) {
      const set = bars(n, seed);
      files[`${split}-x`] = join(dir, `bars-${split}-x.npy`);
      files[`${split}-y`] = join(dir, `bars-${split}-y.npy`);
      writeFileSync(files[`${split}-x`], npy({ descr: '<f8', shape: [n, 12, 12, 1], values: set.x }));
      writeFileSync(files[`${split}-y`], npy({ descr: '|u1', shape: [n], values: set.y }));
    }
    const s = await summaryOf(
      {
        ...job({
          train: { x: files['train-x'], y: files['train-y'] },
          test: { x: files['test-x'], y: files['test-y'] },
        }),
        model: { type: 'cnn', input: [12, 12, 1], conv: [{ filters: 4, kernel: 3 }], classes: 2 },
        steps: 80,
      },
      2,
    );
    expect(s.test_accuracy).toBeGreaterThan(0.9);
  });

  it('refuses x and y of different lengths, and a model that does not fit, before any worker starts', () => {
    const short = join(dir, 'short.npz');
    expect(() => launch(job({ path: short }), { nproc: 2 })).toThrow(
      new ConfigError(short, [{ path: '', line: undefined, message: `x has ${N} samples, y has ${N - 1}` }]),
    );
    expect(() =>
      launch(
        { ...job({ path: join(dir, 'points.npz') }), model: { type: 'mlp', layers: [2, 8, 3] } },
        { nproc: 2 },
      ),
    ).toThrow(
      /model\.layers: the MLP takes 2 inputs but .*points\.npz samples have 4 values \(2×2\): make the first size 4/,
    );
  });
});
