/**
 * Training over real worker processes: data parallelism, gradient accumulation, checkpoints, resume (at the same
 * and at another world size), a worker killed mid-save, and export. Small jobs (MLP 784-32-10 on MNIST, 10 steps, the cpu backend), so each launch
 * costs mostly its ~2–3 s of startup.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobFailedError } from '../../launcher/errors.ts';
import { launch } from '../../launcher/launch.ts';
import { gatherBatch } from '../../src/data/labeled-set.ts';
import { loadMnist } from '../../src/data/mnist.ts';
import { readRankCheckpoint } from '../../src/engine/checkpoint.ts';
import { loadOnnxRuntime, runOnnx } from '../../src/models/onnx/runtime.ts';
import { modelDirHandler } from '../../src/models/save.ts';
import type { RunSummary } from '../../src/trainer/summary.ts';
import { expectSameBits, killMidSave, maxRelDiff } from './compare.ts';
import { useReferenceKernels } from './reference-kernels.ts';

const CLI = fileURLToPath(new URL('../../bin/kd-launch.js', import.meta.url));
let tmp: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  tmp = mkdtempSync(join(tmpdir(), 'kd-train-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

type Job = Record<string, unknown>;

const OPTIMIZERS: Record<string, Job> = {
  SGD: { type: 'SGD', params: { lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 1e-4 } },
  // Adam without weight decay: its L2 decay goes through the gradient (g + wd·p), and where that sum cancels to
  // ~eps, Adam's m/(√v + eps) turns the fp32 noise of summing the batch in another order into an lr-sized
  // difference (measured: one element of 25,088 at 1.2e-5 of the tensor's scale, all others ≤ 2e-6; without
  // the decay everything is ≤ 1.5e-7). AdamW covers weight decay, decoupled from the gradient.
  Adam: { type: 'Adam', params: { lr: 0.002, weight_decay: 0 } },
  AdamW: { type: 'AdamW', params: { lr: 0.002, weight_decay: 0.01 } },
  Lamb: { type: 'Lamb', params: { lr: 0.01, weight_decay: 0.01 } },
};

function baseJob(over: Job): Job {
  return {
    name: 'train-test',
    backend: 'cpu',
    seed: 11,
    model: { type: 'mlp', layers: [784, 32, 10], dropout: 0 },
    // shuffle: true is fine for the equivalences: the sampler's permutation depends on (seed, epoch) only, and
    // rank r takes positions r, r+world, …, so step s of world 2 × micro b covers positions [2sb, 2sb+2b) of the
    // permutation, exactly the positions world 1 × micro 2b (or 1 × b × accumulation 2) takes at step s.
    // (shuffle: false would train on one digit at a time: the split is sorted by digit.)
    data: { dataset: 'mnist', shuffle: true },
    optimizer: OPTIMIZERS['Adam'],
    steps: 10,
    steps_per_print: 1000,
    ...over,
  };
}

async function run(job: Job, nproc: number): Promise<RunSummary> {
  const { reports } = await launch(job, { nproc }).result;
  const summary = reports.find((r) => (r.data as { kind?: string }).kind === 'summary');
  if (!summary) throw new Error('no summary report');
  return summary.data as RunSummary;
}

async function weightsOf(dir: string): Promise<Float32Array[]> {
  const model = await tf.loadLayersModel(modelDirHandler(dir));
  const out = model.getWeights().map((w) => w.dataSync().slice() as Float32Array);
  model.dispose();
  return out;
}

const baselines = new Map<string, Promise<Float32Array[]>>();
/** World 1, micro-batch 16, 10 steps with `opt`: the reference the other layouts must reproduce. */
function baseline(opt: string): Promise<Float32Array[]> {
  let p = baselines.get(opt);
  if (!p) {
    const out = join(tmp, `base-${opt}`);
    p = run(
      baseJob({ optimizer: OPTIMIZERS[opt], train_micro_batch_size_per_gpu: 16, output_dir: out }),
      1,
    ).then(() => weightsOf(out));
    baselines.set(opt, p);
  }
  return p;
}

describe('data parallelism and accumulation train the same weights', () => {
  // Every case compares GEMMs of different row counts (see reference-kernels.ts).
  useReferenceKernels();
  for (const opt of Object.keys(OPTIMIZERS)) {
    it(`${opt}: world 2 × micro-batch 8 equals world 1 × micro-batch 16 after 10 steps (1e-5)`, async () => {
      const out = join(tmp, `dp-${opt}`);
      await run(
        baseJob({ optimizer: OPTIMIZERS[opt], train_micro_batch_size_per_gpu: 8, output_dir: out }),
        2,
      );
      const diff = maxRelDiff(await weightsOf(out), await baseline(opt));
      expect(diff).toBeLessThan(1e-5);
    });
  }

  it('gradient accumulation 4 × micro-batch 4 equals one step of 16 (world 1, SGD momentum)', async () => {
    const out = join(tmp, 'accum');
    await run(
      baseJob({
        optimizer: OPTIMIZERS['SGD'],
        train_micro_batch_size_per_gpu: 4,
        gradient_accumulation_steps: 4,
        output_dir: out,
      }),
      1,
    );
    expect(maxRelDiff(await weightsOf(out), await baseline('SGD'))).toBeLessThan(1e-5);
  });
});

/**
 * The resume tests use dropout (masks seeded per (seed, step, rank, micro-batch)) and a cosine schedule, so that
 * the step, the schedule position and the RNG all have to continue exactly. `total_num_steps` is given: the
 * schedule's default is the job's `steps`, and the run stopped at 7 has `steps: 7`.
 */
function resumeJob(over: Job): Job {
  return baseJob({
    model: { type: 'mlp', layers: [784, 32, 10], dropout: 0.25 },
    train_micro_batch_size_per_gpu: 8,
    scheduler: {
      type: 'WarmupCosineLR',
      params: { warmup_num_steps: 3, warmup_type: 'linear', total_num_steps: 10 },
    },
    ...over,
  });
}

let uninterrupted: Promise<Float32Array[]> | undefined;
function uninterruptedRun(): Promise<Float32Array[]> {
  const out = join(tmp, 'full');
  uninterrupted ??= run(resumeJob({ output_dir: out }), 2).then(() => weightsOf(out));
  return uninterrupted;
}

describe('checkpoints', () => {
  it('stopped after step 7 and resumed to 10 equals an uninterrupted 10-step run bit for bit', async () => {
    const ckpt = join(tmp, 'ckpt-stop');
    const first = await run(
      // resume: auto with no checkpoint yet starts fresh.
      resumeJob({ steps: 7, checkpoint: { dir: ckpt, every_steps: 7 }, resume: 'auto' }),
      2,
    );
    expect(first.steps).toBe(7);
    expect(readFileSync(join(ckpt, 'latest'), 'utf8').trim()).toBe('step-7');
    const header = readRankCheckpoint(join(ckpt, 'step-7'), 1);
    expect(header.step).toBe(7);
    expect(header.meta['sampler']).toMatchObject({ epoch: 0, position: 7 });
    expect(header.optimizer.state['t']).toBe(7);

    const out = join(tmp, 'resumed');
    await run(resumeJob({ checkpoint: { dir: ckpt, every_steps: 7 }, resume: ckpt, output_dir: out }), 2);
    const resumed = await weightsOf(out);
    const full = await uninterruptedRun();
    expectSameBits(resumed, full);
    // Nothing moved in between: the run really did train past step 7.
    const at7 = readRankCheckpoint(join(ckpt, 'step-7'), 0).params;
    expect(at7.subarray(0, resumed[0].length)).not.toEqual(resumed[0]);
  });

  it('kill -9 of a worker while it writes a checkpoint: the previous one loads, and resuming ends where an uninterrupted run does', async () => {
    const ckpt = join(tmp, 'ckpt-kill');
    const job = resumeJob({ checkpoint: { dir: ckpt, every_steps: 3, keep: 2 } });
    await killMidSave(job, { nproc: 2, rank: 1, checkpointDir: ckpt, step: 6 });
    expect(readFileSync(join(ckpt, 'latest'), 'utf8').trim()).toBe('step-3');
    expect(existsSync(join(ckpt, 'step-6', 'rank-1.bin'))).toBe(false);
    for (const r of [0, 1]) expect(readRankCheckpoint(join(ckpt, 'step-3'), r).step).toBe(3);

    const out = join(tmp, 'after-kill');
    const summary = await run({ ...job, resume: 'auto', output_dir: out }, 2);
    const resumed = await weightsOf(out);
    const full = await uninterruptedRun();
    expectSameBits(resumed, full);
    // The re-run saved steps 6, 9 and 10 over the debris; keep 2 leaves the newest two.
    expect(readFileSync(join(ckpt, 'latest'), 'utf8').trim()).toBe('step-10');
    expect(readdirSync(ckpt).sort()).toEqual(['latest', 'step-10', 'step-9']);
    expect(readdirSync(join(ckpt, 'step-10')).sort()).toEqual(['rank-0.bin', 'rank-1.bin']);

    // Export: the last checkpoint as one tfjs model directory, scoring what the run reported.
    const exported = join(tmp, 'exported');
    const cli = spawnSync(process.execPath, [CLI, 'export', ckpt, exported, '--onnx'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(cli.status, cli.stderr).toBe(0);
    expect(cli.stdout).toMatch(/step 10, 25450 parameters/);
    expect(cli.stdout).toMatch(
      /model\.onnx \(\d+ bytes\) run in onnxruntime-node [\d.]+ on 16 inputs: max \|onnx − tfjs\| /,
    );
    const model = await tf.loadLayersModel(modelDirHandler(exported));
    expect(await weightsOf(exported)).toEqual(full);
    const { test } = loadMnist();
    const all = Int32Array.from({ length: test.length }, (_, i) => i);
    const { inputs, labels } = gatherBatch(test, all, 0, test.length);
    const predicted = tf.tidy(() =>
      tf.argMax(model.predict(tf.tensor2d(inputs, [test.length, 784])) as tf.Tensor, -1).dataSync(),
    );
    const correct = labels.filter((l, i) => predicted[i] === l).length;
    expect(correct / test.length).toBeCloseTo(summary.test_accuracy, 12);
    model.dispose();

    // The ONNX file on the whole test set: the same top-1 as the tfjs model.
    const ort = (await loadOnnxRuntime()).runtime!;
    const onnx = await runOnnx(ort, readFileSync(join(exported, 'model.onnx')), inputs, [test.length, 784]);
    const onnxTop1 = tf.tidy(() => tf.argMax(tf.tensor2d(onnx.values, [test.length, 10]), -1).dataSync());
    expect(onnxTop1.filter((c, i) => c === predicted[i]).length / test.length).toBeGreaterThanOrEqual(0.995);

    // A model directory exports as a checkpoint does.
    const again = spawnSync(process.execPath, [CLI, 'export', exported, join(tmp, 'again'), '--onnx'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/^exported \S+exported \(25450 parameters\)/);
    expect(readFileSync(join(tmp, 'again', 'model.onnx'))).toEqual(
      readFileSync(join(exported, 'model.onnx')),
    );
  });

  it('a corrupt checkpoint stops the job with an error naming the file; a missing one is refused before any worker starts', async () => {
    const src = join(tmp, 'ckpt-stop', 'step-7');
    const bad = join(tmp, 'ckpt-bad', 'step-7');
    cpSync(src, bad, { recursive: true });
    const file = join(bad, 'rank-1.bin');
    const bytes = readFileSync(file);
    bytes[bytes.length - 5] ^= 0xff;
    writeFileSync(file, bytes);
    const err = (await launch(resumeJob({ resume: bad }), { nproc: 2 }).result.catch(
      (x: unknown) => x,
    )) as JobFailedError;
    expect(err).toBeInstanceOf(JobFailedError);
    // Every rank reads every rank's file (a resume may change the world size): whichever fails first names it.
    expect(err.failure?.stderrTail.join('\n')).toContain(`checkpoint ${file} is corrupt`);

    // A resume path that does not exist is known before any worker starts: refused there.
    const missing = join(tmp, 'no-such-ckpt');
    expect(() => launch(resumeJob({ resume: missing }), { nproc: 1 })).toThrow(
      `<job>: resume: no checkpoint at ${missing}: it does not exist`,
    );
  });

  it('resume auto passes over a corrupt newest checkpoint to the one before, says why, and ends as an uninterrupted run', async () => {
    // Checkpoints at steps 3, 6 and 9 (keep 3); step 9's rank-0 file damaged in its header.
    const ckpt = join(tmp, 'ckpt-fallback');
    const spec = { dir: ckpt, every_steps: 3, keep: 3 };
    await run(resumeJob({ steps: 9, checkpoint: spec }), 2);
    const file = join(ckpt, 'step-9', 'rank-0.bin');
    const bytes = readFileSync(file);
    bytes.write('"step":8', bytes.indexOf('"step":9'), 'latin1');
    writeFileSync(file, bytes);
    // Without resume, existing checkpoints are never trained over from step 0: refused before any worker starts.
    expect(() => launch(resumeJob({ checkpoint: spec }), { nproc: 2 })).toThrow(
      /checkpoint\.dir: .*ckpt-fallback already holds checkpoints \(newest step-9\): give resume: auto to continue from it, resume: never to start over it/,
    );
    const out = join(tmp, 'after-fallback');
    const handle = launch(resumeJob({ checkpoint: spec, resume: 'auto', output_dir: out }), { nproc: 2 });
    const logs: string[] = [];
    for await (const e of handle.events) if (e.type === 'log') logs.push(e.line);
    await handle.result;
    expect(logs.some((l) => l.includes(`warning: passed over: checkpoint ${file} is corrupt`))).toBe(true);
    expectSameBits(await weightsOf(out), await uninterruptedRun());
  });
});

/**
 * A job that gives only its micro-batch resumes at another world size with the checkpoint's global batch and data
 * position. Without dropout: its masks are drawn per (seed, step, replica, micro-batch), so another world draws
 * others (the data order still continues). Adam with a cosine schedule: the optimizer's state and the schedule's
 * position must continue too. The same job file throughout: no train_batch_size, resume: auto.
 */
describe('resume at another world size', () => {
  useReferenceKernels();
  const job = (ckpt: string, out: string): Job =>
    baseJob({
      train_micro_batch_size_per_gpu: 8,
      scheduler: {
        type: 'WarmupCosineLR',
        params: { warmup_num_steps: 3, warmup_type: 'linear', total_num_steps: 10 },
      },
      checkpoint: { dir: ckpt, every_steps: 5, keep: 2 },
      resume: 'auto',
      output_dir: out,
    });

  let world2: Promise<Float32Array[]> | undefined;
  /** World 2 × micro-batch 8 (train_batch_size 16), uninterrupted, with checkpoints at steps 5 and 10. */
  function world2Run(): Promise<Float32Array[]> {
    const out = join(tmp, 'world2-out');
    world2 ??= run(job(join(tmp, 'world2-ckpt'), out), 2).then(() => weightsOf(out));
    return world2;
  }

  /** A checkpoint directory whose newest checkpoint is the world-2 run's step 5. */
  async function atStep5(name: string): Promise<string> {
    await world2Run();
    const ckpt = join(tmp, name);
    cpSync(join(tmp, 'world2-ckpt', 'step-5'), join(ckpt, 'step-5'), { recursive: true });
    writeFileSync(join(ckpt, 'latest'), 'step-5\n');
    return ckpt;
  }

  for (const [world, micro, accumulation] of [
    [1, 8, 2],
    [4, 4, 1],
  ]) {
    it(`world 2 → ${world}: the job resumes at micro-batch ${micro} × accumulation ${accumulation} and ends as the uninterrupted world-2 run (1e-5)`, async () => {
      const ckpt = await atStep5(`resume-world${world}`);
      const out = join(tmp, `resume-world${world}-out`);
      const handle = launch(job(ckpt, out), { nproc: world });
      expect(handle.plan.batch).toMatchObject({ trainBatchSize: 16, microBatch: micro, accumulation });
      const logs: string[] = [];
      for await (const e of handle.events) if (e.type === 'log') logs.push(e.line);
      const summary = (await handle.result).reports.find(
        (r) => (r.data as { kind?: string }).kind === 'summary',
      )?.data as RunSummary;
      expect(logs.some((l) => l.includes(`resumed from ${join(ckpt, 'step-5')} at step 5`))).toBe(true);
      expect(summary).toMatchObject({ world, train_batch_size: 16, steps: 10 });
      expect(maxRelDiff(await weightsOf(out), await world2Run())).toBeLessThan(1e-5);
    });
  }

  it('a pinned train_batch_size other than the checkpoint one is refused before any worker starts', async () => {
    const ckpt = await atStep5('resume-pinned');
    expect(() => launch({ ...job(ckpt, join(tmp, 'unused')), train_batch_size: 32 }, { nproc: 4 })).toThrow(
      /train_batch_size: train_batch_size 32, but resuming step-5 \(train_batch_size 16, written at world 2\): the data order would not continue/,
    );
  });
});
