/**
 * kd-launch as a package, as a user gets it: `npm pack`, `npm install` of the tarball into an empty project, and
 * there, with plain `node` (no tsx): `import { launch } from 'kd-launch'` runs a 2-worker job on the user's CSV file
 * and the user's tfjs model directory, then one on a model the user builds in TypeScript (compiled on load), and
 * `kd-launch/model-dir` loads the exported models. The install takes the dependencies from npm's cache (the
 * repository's own install put them there) or the registry.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { saveModel } from '../src/models/save.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-pack-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function sh(command: string, args: string[], cwd: string, timeout = 240_000): string {
  const r = spawnSync(command, args, { cwd, encoding: 'utf8', timeout, env: { ...process.env, CI: 'true' } });
  expect(r.status, `${command} ${args.join(' ')}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r.stdout;
}

describe('the package', () => {
  it('installs from its tarball into an empty project, where plain node trains a user model directory and a model built in TypeScript on a user CSV', async () => {
    sh('npm', ['pack', '--pack-destination', tmp, '--silent'], ROOT);
    const tarball = readdirSync(tmp).find((f) => f.endsWith('.tgz'));
    expect(tarball).toBeDefined();
    const app = join(tmp, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    sh('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', join(tmp, tarball as string)], app);

    // The user's files: a CSV of two classes and a tfjs model saved by model.save.
    const rows = Array.from(
      { length: 200 },
      (_, i) => `${(i % 2) * 2 + Math.sin(i)},${Math.cos(i)},${i % 2}`,
    );
    writeFileSync(join(app, 'data.csv'), `a,b,y\n${rows.join('\n')}\n`);
    await tf.setBackend('cpu');
    const model = tf.sequential({
      layers: [
        // Seeded: with tfjs's random initial weights, 20 steps reached 67.5 % in one run of the suite.
        tf.layers.dense({
          inputShape: [2],
          units: 8,
          activation: 'relu',
          kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
        }),
        tf.layers.dense({ units: 2, kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
      ],
    });
    await saveModel(model, join(app, 'my-model'));
    model.dispose();
    writeFileSync(
      join(app, 'model.ts'),
      `import * as tf from '@tensorflow/tfjs';
export function build(options: { hidden: number }): tf.LayersModel {
  return tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [2], units: options.hidden, activation: 'relu' }),
      tf.layers.dense({ units: 2, activation: 'softmax' }),
    ],
  });
}
`,
    );

    writeFileSync(
      join(app, 'train.mjs'),
      `import { launch } from 'kd-launch';
import { loadModel } from 'kd-launch/model-dir';
import * as tf from '@tensorflow/tfjs';
const job = {
  name: 'packed', backend: 'cpu', model: { path: './my-model' },
  data: { format: 'csv', path: './data.csv', label: 'y' },
  optimizer: { type: 'Adam', params: { lr: 0.01 } }, train_micro_batch_size_per_gpu: 8, steps: 20,
  output_dir: './out',
};
const { reports } = await launch(job, { nproc: 2 }).result;
const summary = reports.map((r) => r.data).find((d) => d.kind === 'summary');
const trained = await loadModel('./out');
const y = trained.predict(tf.tensor2d([[0, 1]]));
const built = { ...job, model: { module: './model.ts', export: 'build', options: { hidden: 8 } }, output_dir: './built' };
await launch(built, { nproc: 2 }).result;
const layers = (await loadModel('./built')).layers.map((l) => l.getClassName());
console.log(JSON.stringify({ world: summary.world, steps: summary.steps, accuracy: summary.test_accuracy, out: y.shape, layers }));
`,
    );
    const out = sh(process.execPath, ['train.mjs'], app, 120_000).trim().split('\n').at(-1) ?? '';
    const result = JSON.parse(out) as {
      world: number;
      steps: number;
      accuracy: number;
      out: number[];
      layers: string[];
    };
    expect(result).toMatchObject({ world: 2, steps: 20, out: [1, 2], layers: ['Dense', 'Dense'] });
    expect(result.accuracy).toBeGreaterThan(0.7);
    // Plain node: the installed package runs compiled, and carries no TypeScript sources.
    expect(readdirSync(join(app, 'node_modules', 'kd-launch'))).not.toContain('src');
  }, 360_000);
});
