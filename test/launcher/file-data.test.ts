/**
 * A data set of the user's own in a training job, over real worker processes: a CSV and a JSON Lines file the test
 * generates (three classes of points around three centres, 4 features) train an MLP, and a folder of PNG images
 * (a bar across or down a 12×12 noisy image) a CNN, to a stated accuracy at world 2; bad data is refused before
 * any worker starts, naming the file and the line.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import { Rng } from '../../src/base/rng.ts';
import { ConfigError } from '../../src/config/errors.ts';
import { summaryOf } from './compare.ts';

let dir: string;
const CLASSES = ['circle', 'square', 'triangle'];
/** 600 samples: class c is normal noise (σ = 1) around centre 4·e_c in 4 dimensions. */
const samples = (() => {
  const rng = new Rng(7);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  return Array.from({ length: 600 }, (_, i) => {
    const c = i % 3;
    return { x: [0, 1, 2, 3].map((d) => (d === c ? 4 : 0) + gauss()), label: CLASSES[c] };
  });
})();

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kd-file-job-'));
  const csv = samples.map((s) => `${s.x.map((v) => v.toFixed(5)).join(',')},${s.label}`);
  writeFileSync(join(dir, 'shapes.csv'), `f0,f1,f2,f3,shape\n${csv.join('\n')}\n`);
  const jsonl = samples.map((s) => JSON.stringify({ x: s.x, shape: s.label }));
  writeFileSync(join(dir, 'shapes.jsonl'), `${jsonl.join('\n')}\n`);
  writeBars(join(dir, 'bars'));
});

/** 100 PNGs per class: a bright bar across (class `across`) or down (`down`) a 12×12 grey image with noise. */
function writeBars(root: string): void {
  const rng = new Rng(11);
  for (const kind of ['across', 'down']) {
    mkdirSync(join(root, kind), { recursive: true });
    for (let n = 0; n < 100; n++) {
      const png = new PNG({ width: 12, height: 12 });
      const at = 2 + Math.floor(rng.next() * 8);
      for (let y = 0; y < 12; y++) {
        for (let x = 0; x < 12; x++) {
          const bar = kind === 'across' ? y === at : x === at;
          const v = Math.min(255, Math.floor(rng.next() * 80) + (bar ? 170 : 0));
          png.data.set([v, v, v, 255], (y * 12 + x) * 4);
        }
      }
      writeFileSync(join(root, kind, `${n}.png`), PNG.sync.write(png));
    }
  }
}
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function job(data: Record<string, unknown>): Record<string, unknown> {
  return {
    name: 'file-data-test',
    backend: 'cpu',
    seed: 1,
    model: { type: 'mlp', layers: [4, 16, 3] },
    data: { label: 'shape', ...data },
    optimizer: { type: 'Adam', params: { lr: 0.01 } },
    train_micro_batch_size_per_gpu: 16,
    steps: 60,
    steps_per_print: 1000,
  };
}

describe('a job on a data set of the user’s own', () => {
  it('CSV and JSON Lines train an MLP to over 95% on held-out samples at world 2', async () => {
    for (const data of [
      { format: 'csv', path: join(dir, 'shapes.csv') },
      { format: 'jsonl', path: join(dir, 'shapes.jsonl'), test_fraction: 0.25 },
    ]) {
      const s = await summaryOf(job(data), 2);
      expect(s.test_accuracy).toBeGreaterThan(0.95);
      expect(s.world).toBe(2);
    }
  });

  it('a folder of PNG images trains a CNN to over 90% at world 2', async () => {
    const s = await summaryOf(
      {
        ...job({}),
        model: { type: 'cnn', input: [12, 12, 1], conv: [{ filters: 4, kernel: 3 }], classes: 2 },
        data: { format: 'images', path: join(dir, 'bars'), channels: 1 },
        steps: 80,
      },
      2,
    );
    expect(s.test_accuracy).toBeGreaterThan(0.9);
  });

  it('refuses bad data, and a model that does not fit it, before any worker starts', () => {
    const bad = join(dir, 'bad.csv');
    writeFileSync(bad, 'f0,f1,f2,f3,shape\n1,2,3,4,circle\n1,2,3,,square\n');
    expect(() => launch(job({ format: 'csv', path: bad }), { nproc: 2 })).toThrow(
      new ConfigError(bad, [{ path: '', line: 3, message: 'feature \'f3\' is "", not a finite number' }]),
    );
    expect(() =>
      launch(
        {
          ...job({ format: 'csv', path: join(dir, 'shapes.csv') }),
          model: { type: 'mlp', layers: [5, 8, 3] },
        },
        { nproc: 2 },
      ),
    ).toThrow(/model\.layers: the MLP takes 5 inputs but .*shapes\.csv samples have 4 values/);
  });
});
