/**
 * A job that cannot train is refused by launch() itself, synchronously, before any process starts: checks of the
 * model and batch sizes against the dataset, and the schema's own errors, each naming the field to change.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { type LaunchOptions, launch } from '../../launcher/launch.ts';
import { formatPlan } from '../../launcher/plan.ts';
import { ConfigError } from '../../src/config/errors.ts';
import { commitCheckpoint, writeRankCheckpoint } from '../../src/engine/checkpoint.ts';

const CLI = fileURLToPath(new URL('../../bin/kd-launch.js', import.meta.url));

const base = {
  name: 'checks',
  model: { type: 'mlp', layers: [784, 32, 10] },
  data: { dataset: 'mnist' },
  optimizer: { type: 'Adam', params: { lr: 0.001 } },
  train_micro_batch_size_per_gpu: 32,
  steps: 10,
};

const cnn = {
  type: 'cnn',
  input: [28, 28, 1],
  conv: [
    { filters: 8, kernel: 3 },
    { filters: 16, kernel: 3 },
  ],
  dense: [32],
  classes: 10,
};

/** The ConfigError launch() throws for `job`; fails (after stopping what it started) when it throws none. */
function configError(
  job: string | Record<string, unknown>,
  options: LaunchOptions = { nproc: 2 },
): ConfigError {
  let handle: ReturnType<typeof launch> | undefined;
  try {
    handle = launch(job, options);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  handle.abort('test: expected a ConfigError');
  throw new Error('launch() accepted the job');
}

/** The one problem of `job`: its field and its message. */
function oneIssue(job: Record<string, unknown>, options?: LaunchOptions) {
  const err = configError(job, options);
  expect(err.issues, err.message).toHaveLength(1);
  expect(err.message.split('\n')).toHaveLength(1);
  return err.issues[0];
}

const dir = mkdtempSync(join(tmpdir(), 'kd-config-checks-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('checks against the dataset, before any worker starts', () => {
  it('accepts a consistent MLP and CNN job (dry run)', () => {
    expect(launch(base, { nproc: 2, dryRun: true }).plan.world).toBe(2);
    expect(launch({ ...base, model: cnn }, { nproc: 2, dryRun: true }).plan.program).toBe('train');
  });

  it('an MLP whose output size is not the number of classes', () => {
    const issue = oneIssue({ ...base, model: { type: 'mlp', layers: [784, 32, 12] } });
    expect(issue.path).toBe('model.layers');
    expect(issue.message).toBe('the model has 12 outputs but mnist has 10 classes: make the last size 10');
  });

  it('an MLP whose input size is not 784 for mnist', () => {
    const issue = oneIssue({ ...base, model: { type: 'mlp', layers: [100, 32, 10] } });
    expect(issue.path).toBe('model.layers');
    expect(issue.message).toMatch(/takes 100 inputs but mnist samples have 784 values \(28×28×1\)/);
  });

  it('a CNN with the wrong classes, input shape or too many pools', () => {
    expect(oneIssue({ ...base, model: { ...cnn, classes: 2 } })).toMatchObject({
      path: 'model.classes',
      message: expect.stringMatching(/2 outputs but mnist has 10 classes/),
    });
    expect(oneIssue({ ...base, model: { ...cnn, input: [28, 28, 3] } })).toMatchObject({
      path: 'model.input',
      message: expect.stringMatching(/28×28×3 = 2352 values .* have 784: use \[28, 28, 1\]/),
    });
    const deep = { ...cnn, conv: Array.from({ length: 5 }, () => ({ filters: 4, kernel: 3 })) };
    expect(oneIssue({ ...base, model: deep })).toMatchObject({
      path: 'model.conv.4',
      message: expect.stringMatching(/conv block 4 leaves no pixels/),
    });
  });

  it('a train_batch_size larger than the training set, with the arithmetic', () => {
    const given = oneIssue({ ...base, train_micro_batch_size_per_gpu: 4000, train_batch_size: 8000 });
    expect(given.path).toBe('train_batch_size');
    expect(given.message).toBe(
      "train_batch_size 8000 (train_micro_batch_size_per_gpu 4000 × gradient_accumulation_steps 1 × data-parallel size 2) is larger than the 7996 samples of mnist's training set",
    );
    // Derived from the micro-batch: the field to change is the one given.
    const derived = oneIssue({
      ...base,
      train_micro_batch_size_per_gpu: 2000,
      gradient_accumulation_steps: 4,
    });
    expect(derived.path).toBe('train_micro_batch_size_per_gpu');
    expect(derived.message).toMatch(
      /^train_batch_size 16000 \(.*2000 × .* 4 × .* 2\) is larger than the 7996/,
    );
    // The same per-rank batch is fine on one worker.
    expect(
      launch({ ...base, train_micro_batch_size_per_gpu: 4000 }, { nproc: 1, dryRun: true }).plan.batch,
    ).toMatchObject({
      trainBatchSize: 4000,
    });
  });

  it('an intermediate match naming a layer the student or the teacher does not have, by number or by name', () => {
    const job = {
      ...base,
      stages: [
        { name: 'teacher', model: { type: 'mlp', layers: [784, 64, 10] } },
        {
          name: 'student',
          teachers: [{ stage: 'teacher' }],
          distillation: {
            intermediate_matches: [
              {
                layer_T: 'dense7',
                layer_S: 0,
                feature: 'hidden',
                loss: 'hidden_mse',
                proj: ['linear', 32, 64],
              },
              { layer_T: 0, layer_S: 4, feature: 'hidden', loss: 'hidden_mse', proj: ['linear', 32, 64] },
            ],
          },
        },
      ],
    };
    const err = configError(job);
    expect(err.issues.map((i) => `${i.path}: ${i.message}`)).toEqual([
      expect.stringMatching(
        /^stages\.1\.distillation\.intermediate_matches\.0\.layer_T: .*teacher 0: the mlp model has no hidden layer 'dense7' \(its hidden layers: /,
      ),
      expect.stringMatching(
        /^stages\.1\.distillation\.intermediate_matches\.1\.layer_S: .*the student: the mlp model has no hidden layer 4 \(its hidden layers: 0…1\)/,
      ),
    ]);
  });

  it('reports every problem at once, and names the line in a job file', () => {
    const file = join(dir, 'two-problems.yaml');
    writeFileSync(
      file,
      [
        'model:',
        '  type: mlp',
        '  layers: [100, 32, 12]',
        'data: { dataset: mnist }',
        'optimizer: { type: SGD, params: { lr: 0.1 } }',
        'train_micro_batch_size_per_gpu: 32',
        'steps: 10',
        '',
      ].join('\n'),
    );
    const err = configError(file);
    expect(err.issues.map((i) => [i.path, i.line])).toEqual([
      ['model.layers', 3],
      ['model.layers', 3],
    ]);
    expect(err.message).toMatch(/two-problems\.yaml:3:\d+: model\.layers: the MLP takes 100 inputs/);
  });
});

/**
 * A checkpoint of the training job as its header says (the launcher reads nothing else): written at `world` with
 * `trainBatchSize` and `stepsPerEpoch`, as `dir/step-N` with `latest` naming it.
 */
async function headerOnlyCheckpoint(
  name: string,
  o: { world: number; trainBatchSize: number; stepsPerEpoch: number; step?: number },
): Promise<string> {
  const ckpt = join(dir, name);
  const step = o.step ?? 40;
  for (let rank = 0; rank < o.world; rank++) {
    await writeRankCheckpoint(ckpt, {
      step,
      rank,
      world: o.world,
      range: { start: 0, end: 0 },
      slots: [],
      params: new Float32Array(0),
      optimizer: { type: 'SGD', state: {} },
      meta: { train_batch_size: o.trainBatchSize, steps_per_epoch: o.stepsPerEpoch },
    });
  }
  await commitCheckpoint(ckpt, step, 1);
  return ckpt;
}

describe('resuming at another world size keeps the checkpoint global batch, planned before any worker starts', () => {
  // base: micro-batch 32, no train_batch_size; the checkpoint: 64 at world 2 (⌊7996 / 64⌋ = 124 steps per epoch).
  const resuming = async (name: string) => {
    const ckpt = await headerOnlyCheckpoint(name, { world: 2, trainBatchSize: 64, stepsPerEpoch: 124 });
    return { ...base, checkpoint: { dir: ckpt, every_steps: 10 }, resume: 'auto' };
  };
  const planOf = (job: Record<string, unknown>, nproc: number) => launch(job, { nproc, dryRun: true }).plan;

  it('keeps the micro-batch where it divides, else the accumulation, and says so in the plan', async () => {
    const job = await resuming('ckpt-64');
    const resumed = { name: 'step-40', trainBatchSize: 64, world: 2 };
    const one = planOf(job, 1);
    expect(one.batch).toEqual({
      trainBatchSize: 64,
      microBatch: 32,
      accumulation: 2,
      dataParallel: 1,
      resumed,
    });
    expect(formatPlan(one)).toContain(
      'resume     resuming step-40 (train_batch_size 64, written at world 2): at data-parallel size 1 that is micro-batch 32 × accumulation 2',
    );
    // 64 / (32 × 4) is no whole accumulation: the accumulation (1) is kept and the micro-batch derived.
    expect(planOf(job, 4).batch).toEqual({
      trainBatchSize: 64,
      microBatch: 16,
      accumulation: 1,
      dataParallel: 4,
      resumed,
    });
    // At the world that wrote it the job's own plan is the checkpoint's: nothing to say.
    const same = planOf(job, 2);
    expect(same.batch).toEqual({ trainBatchSize: 64, microBatch: 32, accumulation: 1, dataParallel: 2 });
    expect(formatPlan(same)).not.toContain('resume ');
    // A path to the step directory resumes the same way.
    const byPath = { ...job, resume: join(job.checkpoint.dir, 'step-40') };
    expect(planOf(byPath, 4).batch).toMatchObject({ microBatch: 16, accumulation: 1 });
    // So does a job stage, from its own directory under checkpoint.dir.
    await headerOnlyCheckpoint(join('ckpt-stages', 'only'), {
      world: 2,
      trainBatchSize: 64,
      stepsPerEpoch: 124,
    });
    const staged = {
      ...job,
      checkpoint: { dir: join(dir, 'ckpt-stages'), every_steps: 10 },
      stages: [{ name: 'only' }],
    };
    expect(planOf(staged, 4).batch).toEqual({
      trainBatchSize: 64,
      microBatch: 16,
      accumulation: 1,
      dataParallel: 4,
      resumed,
    });
  });

  it('a world where neither the micro-batch nor the accumulation divides the global batch: the arithmetic', async () => {
    const job = await resuming('ckpt-64-indivisible');
    expect(oneIssue(job, { nproc: 3 })).toEqual({
      path: 'train_micro_batch_size_per_gpu',
      line: undefined,
      message:
        'resuming step-40 (train_batch_size 64, written at world 2): 64 is not divisible by the data-parallel size 3; resume at a world size that divides it',
    });
    const odd = { ...job, train_micro_batch_size_per_gpu: 24, gradient_accumulation_steps: 3 };
    expect(oneIssue(odd, { nproc: 1 }).message).toBe(
      'resuming step-40 (train_batch_size 64, written at world 2): at data-parallel size 1 each rank takes 64 samples a step, divisible neither by train_micro_batch_size_per_gpu 24 nor by gradient_accumulation_steps 3; give a train_micro_batch_size_per_gpu dividing 64',
    );
  });

  it('a pinned train_batch_size other than the checkpoint one is refused in one line', async () => {
    const job = await resuming('ckpt-64-pinned');
    const issue = oneIssue({ ...job, train_batch_size: 128 }, { nproc: 4 });
    expect(issue.path).toBe('train_batch_size');
    expect(issue.message).toBe(
      'train_batch_size 128, but resuming step-40 (train_batch_size 64, written at world 2): the data order would not continue; leave train_batch_size out (or make it 64) to resume, or give resume: never to start over',
    );
    // Pinned to the checkpoint's: the job's own arithmetic.
    expect(planOf({ ...job, train_batch_size: 64, train_micro_batch_size_per_gpu: 16 }, 4).batch).toEqual({
      trainBatchSize: 64,
      microBatch: 16,
      accumulation: 1,
      dataParallel: 4,
    });
  });

  it('resume: auto with no checkpoint yet plans the job as it is', () => {
    const job = { ...base, checkpoint: { dir: join(dir, 'ckpt-none'), every_steps: 10 }, resume: 'auto' };
    expect(planOf(job, 4).batch).toEqual({
      trainBatchSize: 128,
      microBatch: 32,
      accumulation: 1,
      dataParallel: 4,
    });
  });

  it('an epoch that data.drop_last: false pads into one step more than the checkpoint had is refused', async () => {
    // Written at world 1 with 6 a step: ⌊7996 / 6⌋ = 1332 steps. At world 3 the 7996 samples pad to 7998: 1333.
    const ckpt = await headerOnlyCheckpoint('ckpt-padded', {
      world: 1,
      trainBatchSize: 6,
      stepsPerEpoch: 1332,
    });
    const job = {
      ...base,
      data: { dataset: 'mnist', drop_last: false },
      train_micro_batch_size_per_gpu: 2,
      checkpoint: { dir: ckpt, every_steps: 10 },
      resume: 'auto',
    };
    expect(oneIssue(job, { nproc: 3 })).toMatchObject({
      path: 'resume',
      message:
        'resuming step-40, written with 1332 steps per epoch: at data-parallel size 3 the 7996 training samples (data.drop_last: false pads them to 7998) make 1333 steps of 6; the data order would not continue',
    });
    // Without the padding the same global batch makes the checkpoint's 1332 steps.
    expect(planOf({ ...job, data: { dataset: 'mnist' } }, 3).batch).toMatchObject({ trainBatchSize: 6 });
  });
});

describe('hostile job files, refused in one line before any worker starts', () => {
  it('a billion laughs, a file past the size bound, and thousands of unknown keys', () => {
    const laughs = join(dir, 'laughs.yaml');
    const rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (const [i, name] of ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'].entries()) {
      const prev = 'abcdefgh'[i];
      rows.push(`${name}: &${name} [${Array(9).fill(`*${prev}`).join(',')}]`);
    }
    writeFileSync(laughs, `${rows.join('\n')}\n`);
    expect(configError(laughs).message).toBe(
      `${laughs}: YAML: Excessive alias count indicates a resource exhaustion attack`,
    );
    const big = join(dir, 'big.yaml');
    writeFileSync(big, `name: x\n#${'x'.repeat(300_000)}\n`);
    expect(configError(big).message).toMatch(/big\.yaml: 300\d{3} bytes: a job file is at most 262144 bytes/);
    const many = join(dir, 'many.yaml');
    writeFileSync(
      many,
      `${Object.entries(base)
        .map(([k, v]) => `${k}: ${JSON.stringify(v)}`)
        .join('\n')}\n${Array.from({ length: 3000 }, (_, i) => `k${i}: ${i}`).join('\n')}\n`,
    );
    const err = configError(many);
    expect(err.message.split('\n')).toHaveLength(1);
    expect(err.message).toMatch(
      /unknown fields 'k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7' and 2992 more$/,
    );
  });
});

describe("the schema's own errors, through launch()", () => {
  it('a negative learning rate', () => {
    const issue = oneIssue({ ...base, optimizer: { type: 'Adam', params: { lr: -0.001 } } });
    expect(issue).toMatchObject({ path: 'optimizer.params.lr', message: 'the learning rate must be > 0' });
  });

  it('an unknown optimizer lists the known ones', () => {
    const issue = oneIssue({ ...base, optimizer: { type: 'Adagrad', params: { lr: 0.01 } } });
    expect(issue).toMatchObject({
      path: 'optimizer.type',
      message: 'unknown optimizer type "Adagrad" (known: SGD, Adam, AdamW, Lamb)',
    });
  });

  it('an unknown model type lists the known ones', () => {
    expect(oneIssue({ ...base, model: { type: 'rnn' } }).message).toBe(
      'unknown model type "rnn" (known: mlp, cnn, transformer, tfjs, module)',
    );
  });

  it('inconsistent batch arithmetic shows the arithmetic', () => {
    const issue = oneIssue({
      ...base,
      train_batch_size: 100,
      train_micro_batch_size_per_gpu: 32,
      gradient_accumulation_steps: 1,
    });
    expect(issue).toMatchObject({
      path: 'train_batch_size',
      message:
        'train_batch_size 100 != train_micro_batch_size_per_gpu 32 × gradient_accumulation_steps 1 × data-parallel size 2 = 64',
    });
  });
});

describe('kd-launch CLI', () => {
  it('a model that does not fit the dataset: exit code 2, one line on stderr, nothing started', () => {
    const file = join(dir, 'twelve-classes.yaml');
    writeFileSync(
      file,
      [
        'model: { type: mlp, layers: [784, 64, 12] }',
        'data: { dataset: mnist }',
        'optimizer: { type: Adam, params: { lr: 0.001 } }',
        'train_micro_batch_size_per_gpu: 32',
        'steps: 10',
        '',
      ].join('\n'),
    );
    const r = spawnSync(process.execPath, [CLI, '--nproc', '2', file], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^kd-launch: .*twelve-classes\.yaml:1:\d+: model\.layers: the model has 12 outputs but mnist has 10 classes/,
    );
    expect(r.stdout).not.toMatch(/rendezvous|joined/);
  });
});
