/**
 * Models built in code (`model: {module, export, options}`) over real worker processes: a tf.LayersModel, built
 * with tfjs' unseeded initialisers, trains at world 2 from one saved copy of its weights and exports to the user's
 * layers; an async export is awaited; a Net trains at world 2 as at world 1 on the doubled micro-batch, exports as a
 * kd-launch model directory naming its module and teaches a later stage of its job; prepare() trains a module's
 * layers model from rank 0's weights; and a module or an export that gives no model is refused in one line before
 * any worker starts.
 */
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import { validateJob } from '../../src/config/load.ts';
import { buildModels, builtModelsDir, saveByContent } from '../../src/models/model-module.ts';
import { KD_MODEL_JSON, loadNetModel } from '../../src/models/net-dir.ts';
import { loadModel, MODEL_JSON } from '../../src/models/save.ts';
import type { JobStageRow } from '../../src/trainer/job-stages.ts';
import type { RunSummary } from '../../src/trainer/summary.ts';
import { maxRelDiff, reportsOf } from './compare.ts';
import { useReferenceKernels } from './reference-kernels.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
let tmp: string;

/** The user's model module: tfjs layers models for MNIST digits, and exports that give none. */
const MODEL_TS = `import * as tf from '@tensorflow/tfjs';

export function build(options: { hidden?: number; classes?: number }): tf.Sequential {
  return tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [784], units: options.hidden ?? 16, activation: 'relu' }),
      tf.layers.dropout({ rate: 0.1 }),
      tf.layers.dense({ units: options.classes ?? 10, activation: 'softmax' }),
    ],
  });
}

export async function later(options: { hidden?: number }): Promise<tf.Sequential> {
  await tf.ready();
  return build(options);
}

export function noisy(): tf.Sequential {
  return tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [784], units: 8 }),
      tf.layers.gaussianNoise({ stddev: 0.1, name: 'noise' }),
      tf.layers.dense({ units: 10 }),
    ],
  });
}

export function count(): number {
  return 5;
}

export function broken(): never {
  throw new Error('the weights file is missing');
}
`;

/** A Net of the user's own: two dense blocks, initial values from a seeded stream (mulberry32). */
const NET_TS = `import * as tf from '@tensorflow/tfjs';
import type { Block, Net } from 'kd-launch';

function uniform(seed: number, n: number, limit: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * limit;
  });
}

function dense(name: string, inputs: number, units: number, relu: boolean): Block {
  return {
    name,
    params: [
      { name: 'kernel', shape: [inputs, units] },
      { name: 'bias', shape: [units] },
    ],
    forward: ([w, b], x) => {
      const z = tf.add(tf.matMul(x as tf.Tensor2D, w as tf.Tensor2D), b);
      const y = relu ? tf.relu(z) : z;
      return { y, taps: { hidden: y } };
    },
  };
}

export default function net(options: { hidden: number }): Net {
  const h = options.hidden;
  return {
    kind: 'user-net',
    inputShape: [784],
    inputDtype: 'float32',
    blocks: [dense('hidden', 784, h, true), dense('logits', h, 10, false)],
    init: (seed) => [
      uniform(seed, 784 * h, Math.sqrt(6 / (784 + h))),
      new Float32Array(h),
      uniform(seed + 1, h * 10, Math.sqrt(6 / (h + 10))),
      new Float32Array(10),
    ],
  };
}
`;

beforeAll(async () => {
  await tf.setBackend('cpu');
  tmp = mkdtempSync(join(tmpdir(), 'kd-module-'));
  // A user's project: its modules import @tensorflow/tfjs and kd-launch from its node_modules.
  mkdirSync(join(tmp, 'node_modules'));
  symlinkSync(join(ROOT, 'node_modules', '@tensorflow'), join(tmp, 'node_modules', '@tensorflow'));
  symlinkSync(ROOT, join(tmp, 'node_modules', 'kd-launch'));
  writeFileSync(join(tmp, 'model.ts'), MODEL_TS);
  writeFileSync(join(tmp, 'net.ts'), NET_TS);
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/**
 * A job file in its own directory beside copies of the modules (its `.kd-launch/models/` its own): `model:` on line 3,
 * then the common keys, each replaced by a line of `more` that gives it, then the rest of `more`.
 */
function jobFile(name: string, model: string, more: string[] = []): string {
  const dir = join(tmp, name);
  mkdirSync(dir);
  for (const f of ['model.ts', 'net.ts']) writeFileSync(join(dir, f), readFileSync(join(tmp, f)));
  const lines = new Map(
    [
      `name: ${name}`,
      'backend: cpu',
      `model: ${model}`,
      'data: {dataset: mnist}',
      'optimizer: {type: SGD, params: {lr: 0.05, momentum: 0.9}}',
      'train_micro_batch_size_per_gpu: 8',
      'steps: 8',
      'steps_per_print: 1000',
      'seed: 3',
      ...more,
    ].map((line) => [line.split(':')[0], line]),
  );
  const file = join(dir, 'job.yaml');
  writeFileSync(file, [...lines.values()].join('\n'));
  return file;
}

/** The summary rank 0 reports at the end of the job in `file`. */
async function summaryOfFile(file: string, nproc: number): Promise<RunSummary> {
  const reports = (await reportsOf(file, nproc)) as { kind?: string }[];
  return reports.find((r) => r.kind === 'summary') as RunSummary;
}

/** The one-line ConfigError launch() throws for the job in `file`, before any worker starts. */
function refusal(file: string): string {
  try {
    launch(file, { nproc: 2 });
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error(`${file} was launched`);
}

describe('a model built in code', () => {
  // The Net's case compares GEMMs of different row counts (see reference-kernels.ts).
  useReferenceKernels();

  it('a tf.LayersModel trains at world 2 from one saved copy of its weights, exported to its own layers', async () => {
    const file = jobFile('layers', '{module: ./model.ts, export: build, options: {hidden: 12}}', [
      'output_dir: out',
    ]);
    const s = await summaryOfFile(file, 2);
    expect(s.world).toBe(2);
    expect(s.parameters).toBe(784 * 12 + 12 + 12 * 10 + 10);
    // The launcher saved the model once; both ranks started from that directory.
    const saved = readdirSync(builtModelsDir(join(tmp, 'layers')));
    expect(saved).toHaveLength(1);
    const start = await loadModel(join(builtModelsDir(join(tmp, 'layers')), saved[0]));
    const out = join(tmp, 'layers', 'out');
    const trained = await loadModel(out);
    expect(trained.layers.map((l) => l.getClassName())).toEqual(['Dense', 'Dropout', 'Dense']);
    expect(trained.layers.map((l) => l.name)).toEqual(start.layers.map((l) => l.name));
    const weights = (m: tf.LayersModel) => m.getWeights().map((w) => w.dataSync() as Float32Array);
    expect(maxRelDiff(weights(trained), weights(start))).toBeGreaterThan(1e-3);
    // Its softmax is kept: the export predicts probabilities.
    const p = trained.predict(tf.zeros([2, 784])) as tf.Tensor;
    expect(Array.from(p.sum(1).dataSync()).map((v) => Number(v.toFixed(5)))).toEqual([1, 1]);
    for (const m of [start, trained]) m.dispose();
  });

  it('an async export is awaited', () => {
    const file = jobFile('async', '{module: ./model.ts, export: later, options: {hidden: 6}}');
    const { plan } = launch(file, { nproc: 2, dryRun: true });
    expect(plan.memory?.parameters).toBe(784 * 6 + 6 + 6 * 10 + 10);
    expect(readdirSync(builtModelsDir(join(tmp, 'async')))).toHaveLength(1);
  });

  it('a Net trains at world 2 as at world 1 on the doubled micro-batch (1e-5), exported as a model directory naming its module', async () => {
    const model = '{module: ../net.ts, options: {hidden: 16}}';
    const one = jobFile('net-1', model, ['output_dir: out', 'train_micro_batch_size_per_gpu: 16']);
    const two = jobFile('net-2', model, ['output_dir: out']);
    await summaryOfFile(one, 1);
    const s = await summaryOfFile(two, 2);
    expect(s.parameters).toBe(784 * 16 + 16 + 16 * 10 + 10);
    const out = join(tmp, 'net-2', 'out');
    const meta = JSON.parse(readFileSync(join(out, KD_MODEL_JSON), 'utf8')) as { model: unknown };
    const spec = {
      type: 'module',
      module: join(tmp, 'net.ts'),
      export: 'default',
      options: { hidden: 16 },
    };
    expect(meta.model).toEqual(spec);
    expect(readdirSync(out)).not.toContain(MODEL_JSON);
    // Read back where its module is built, as a teacher of a later stage is.
    await buildModels(validateJob({ model: spec, script: 'none' }), {
      place: (m) => saveByContent(m, tmp),
      source: 'test',
    });
    const w2 = loadNetModel(out).values;
    const w1 = loadNetModel(join(tmp, 'net-1', 'out')).values;
    expect(maxRelDiff(w2, w1)).toBeLessThan(1e-5);
    const { net } = loadNetModel(out);
    expect(maxRelDiff(w2, net.init(3))).toBeGreaterThan(1e-3);
    // Another job does not build it.
    const taught = jobFile('taught', '{type: mlp, layers: [784, 16, 10]}', [
      `teachers: [{model_dir: ${out}}]`,
      'distillation: {temperature: 2}',
    ]);
    expect(refusal(taught)).toBe(
      `${taught}:10:24: teachers.0.model_dir: ${out} holds a Net built in code (${spec.module}), which teaches in the job that trained it only (a {stage: NAME} teacher)`,
    );
  });

  it('a Net teaches a later stage of its own job', async () => {
    const file = jobFile('staged', '{module: ../net.ts, options: {hidden: 16}}', [
      'output_dir: out',
      'stages: [{name: teacher, steps: 4}, {name: student, model: {type: mlp, layers: [784, 8, 10]}, steps: 4, teachers: [{stage: teacher}], distillation: {temperature: 2}}]',
    ]);
    const reports = (await reportsOf(file, 2)) as { kind?: string; rows?: JobStageRow[] }[];
    const rows = reports.find((r) => r.kind === 'stages')?.rows ?? [];
    expect(rows.map((r) => [r.stage, r.model, r.objective, r.teachers])).toEqual([
      ['teacher', 'module', 'cross_entropy', ''],
      ['student', 'mlp', 'distillation', 'stage teacher'],
    ]);
  });

  it("in prepare(), a tf.LayersModel trains from rank 0's weights", async () => {
    const dir = join(tmp, 'prepare');
    mkdirSync(dir);
    writeFileSync(join(dir, 'model.ts'), MODEL_TS);
    // An ES module project (the others here are CommonJS folders), as a script importing kd-launch is.
    writeFileSync(join(dir, 'package.json'), '{"type": "module"}');
    writeFileSync(
      join(dir, 'train.ts'),
      `import { prepare } from 'kd-launch';
export async function main(ctx) {
  const run = await prepare(ctx, {
    backend: 'cpu', model: { module: './model.ts', export: 'build' }, data: { dataset: 'mnist' },
    optimizer: { type: 'Adam', params: { lr: 0.005 } }, train_micro_batch_size_per_gpu: 8, steps: 4,
  });
  for (const batch of run.batches(0)) {
    await run.step(batch);
    if (run.globalStep === 4) break;
  }
  await run.save('out');
  run.dispose();
}
`,
    );
    const file = join(dir, 'job.yaml');
    writeFileSync(file, 'name: prepare-module\nscript: ./train.ts\n');
    await reportsOf(file, 2);
    expect(readdirSync(builtModelsDir(dir))).toHaveLength(1);
    const trained = await loadModel(join(dir, 'out'));
    expect(trained.layers.map((l) => l.getClassName())).toEqual(['Dense', 'Dropout', 'Dense']);
    trained.dispose();
  });

  it('is refused in one line before any worker starts when it gives no model kd-launch can train', () => {
    const cases: [string, string, (dir: string) => string][] = [
      ['missing', '{module: ./missing.ts}', (d) => `model.module: no such file: ${join(d, 'missing.ts')}`],
      [
        'no-export',
        '{module: ./model.ts, export: bild}',
        (d) =>
          `model.export: ${join(d, 'model.ts')} has no export 'bild' (it exports broken, build, count, later, noisy)`,
      ],
      [
        'number',
        '{module: ./model.ts, export: count}',
        (d) =>
          `model.export: count() of ${join(d, 'model.ts')} returned a number, not a tf.LayersModel or a Net (kind, inputShape, inputDtype, blocks, init)`,
      ],
      [
        'throws',
        '{module: ./model.ts, export: broken}',
        (d) => `model.export: broken() of ${join(d, 'model.ts')} threw: the weights file is missing`,
      ],
      [
        'classes',
        '{module: ./model.ts, export: build, options: {classes: 5}}',
        () =>
          "model.export: the model has 5 outputs but mnist has 10 classes: make the last layer's units 10",
      ],
    ];
    for (const [name, model, message] of cases) {
      const file = jobFile(name, model);
      // Line 3 is `model: {…}`; the column is where the named key's value starts.
      const key = message('').split(':')[0].split('.')[1];
      const column = 'model: '.length + model.indexOf(`${key}: `) + `${key}: `.length + 1;
      expect(refusal(file)).toBe(`${file}:3:${column}: ${message(join(tmp, name))}`);
    }
    const noisy = jobFile('noisy', '{module: ./model.ts, export: noisy}');
    expect(refusal(noisy)).toMatch(
      /^[^\n]*:3:37: model\.export: noisy\(\) of .*returned a model kd-launch cannot train: layer 'noise' \(GaussianNoise\) is not a layer kd-launch runs/,
    );
  });
});
