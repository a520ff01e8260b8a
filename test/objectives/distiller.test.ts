import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DistillationInput, DistillationSpec } from '../../src/config/distillation.ts';
import { forwardBlocks, type Net, type NetOutput } from '../../src/engine/net.ts';
import { softmaxCrossEntropy } from '../../src/objectives/cross-entropy.ts';
import { CachedTeacher, cacheTeacherLogits } from '../../src/objectives/distill/cache.ts';
import { DistillationObjective } from '../../src/objectives/distill/distiller.ts';
import {
  attentionCeLoss,
  fspLoss,
  hiddenMseLoss,
  kdCeLoss,
  nstLoss,
  probabilityShift,
} from '../../src/objectives/distill/losses.ts';
import { applyProjection } from '../../src/objectives/distill/projection.ts';
import { flswTemperature } from '../../src/objectives/distill/schedulers.ts';
import {
  type Adaptor,
  blockTapAdaptor,
  LiveTeacher,
  NetTeacher,
  type Teacher,
  type TeacherSource,
  tapAdaptor,
} from '../../src/objectives/distill/teacher.ts';
import type { ObjectiveBatch } from '../../src/objectives/objective.ts';
import { perBlock, sampleInputs, seqNet } from './nets.ts';

const D_IN = 2;
const LEN = 3;
const CLASSES = 4;
const SAMPLES = 10;
const student = seqNet([3], D_IN, CLASSES, LEN);
const teacherNet = seqNet([4, 4], D_IN, CLASSES, LEN);
const data = sampleInputs(SAMPLES, LEN, D_IN, 11);
const labelsOf = (idx: Int32Array) => Int32Array.from(idx, (i) => i % CLASSES);

function batchOf(idx: number[], step = 0, task?: number): ObjectiveBatch {
  const indices = Int32Array.from(idx);
  const per = LEN * D_IN;
  const x = new Float32Array(indices.length * per);
  indices.forEach((s, i) => {
    x.set(data.subarray(s * per, (s + 1) * per), i * per);
  });
  // the last position of sample 2 is padding: all zeros
  if (idx.includes(2)) x.fill(0, idx.indexOf(2) * per + (LEN - 1) * D_IN, (idx.indexOf(2) + 1) * per);
  return {
    inputs: tf.tensor3d(x, [indices.length, LEN, D_IN]),
    labels: tf.tensor1d(labelsOf(indices), 'int32'),
    indices,
    step,
    ...(task === undefined ? {} : { task }),
  };
}

/** The student's adaptor, plus a padding mask: positions whose features are all zero. */
const maskedAdaptor: Adaptor = {
  ...blockTapAdaptor(student),
  mask: (inputs) => tf.cast(tf.notEqual(tf.sum(tf.abs(inputs), -1), 0), 'float32'),
};

const matchSpec: DistillationInput = {
  temperature: 2,
  hard_label_weight: 0.3,
  intermediate_matches: [
    { layer_T: 1, layer_S: 0, feature: 'hidden', loss: 'hidden_mse', weight: 1, proj: ['linear', 3, 4] },
    { layer_T: 1, layer_S: 0, feature: 'attention', loss: 'attention_ce', weight: 0.5 },
    { layer_T: [0, 1], layer_S: [0, 0], feature: 'hidden', loss: 'fsp', weight: 0.2, proj: ['tanh', 3, 4] },
    { layer_T: [0, 1], layer_S: [0, 0], feature: 'hidden', loss: 'nst', weight: 0.2 },
  ],
};

/** A careless teacher that holds its weights as trainable variables: a gradient could reach them if anything ran it. */
class VariableTeacher implements Teacher {
  readonly vars: tf.Variable[][];
  constructor(
    readonly net: Net,
    seed: number,
  ) {
    this.vars = perBlock(net, net.init(seed), (w, shape) => tf.variable(tf.tensor(w, shape), true));
  }
  run(inputs: tf.Tensor): NetOutput {
    return forwardBlocks(this.net, this.vars, inputs, { training: false, seed: 0 });
  }
}

const tensors = (net: Net, seed: number) => perBlock(net, net.init(seed), (w, shape) => tf.tensor(w, shape));
const forward = (params: readonly (readonly tf.Tensor[])[], x: tf.Tensor) =>
  forwardBlocks(student, params, x, { training: true, seed: 0 });
const scalar = (t: tf.Tensor) => t.dataSync()[0];
const dispose = (p: Record<string, tf.Tensor>) => {
  for (const t of Object.values(p)) t.dispose();
};

let dir: string;
beforeAll(async () => {
  await tf.setBackend('cpu');
  dir = mkdtempSync(join(tmpdir(), 'kd-distill-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('DistillationObjective (general)', () => {
  it('lists the student taps its matches read and the projections as its parameters', () => {
    const obj = new DistillationObjective({
      spec: DistillationSpec.parse(matchSpec),
      teachers: [
        new LiveTeacher(new NetTeacher(teacherNet, teacherNet.init(1)), blockTapAdaptor(teacherNet)),
      ],
      student: maskedAdaptor,
      totalSteps: 10,
    });
    expect([...obj.taps].sort()).toEqual(['att0/attention', 'att0/hidden']);
    expect(obj.params).toEqual([
      { name: 'proj0/kernel', shape: [3, 4] },
      { name: 'proj0/bias', shape: [4] },
      { name: 'proj2/kernel', shape: [3, 4] },
      { name: 'proj2/bias', shape: [4] },
    ]);
    const a = obj.initParams(7);
    const b = obj.initParams(7);
    expect(a.map((x) => x.length)).toEqual([12, 4, 12, 4]);
    expect(a).toEqual(b);
    expect(a[0]).not.toEqual(a[2]);
    expect(a[0]).not.toEqual(obj.initParams(8)[0]);
    expect(Array.from(a[1])).toEqual([0, 0, 0, 0]);
    const limit = Math.sqrt(6 / (3 + 4));
    expect(a[0].every((v) => Math.abs(v) <= limit)).toBe(true);
  });

  it('is kd_weight·τ²·CE + hard_weight·CE(labels) + Σ weight·match, with projections and the padding mask', async () => {
    const spec = DistillationSpec.parse(matchSpec);
    const teacher = new NetTeacher(teacherNet, teacherNet.init(1));
    const obj = new DistillationObjective({
      spec,
      teachers: [new LiveTeacher(teacher, blockTapAdaptor(teacherNet))],
      student: maskedAdaptor,
      totalSteps: 10,
    });
    const batch = batchOf([0, 2, 5]);
    const prepared = await obj.prepare(batch);
    expect(Object.keys(prepared).sort()).toEqual(['attention/1', 'hidden/0', 'hidden/1', 'logits', 'mask']);
    expect(prepared.mask.arraySync()).toEqual([
      [1, 1, 1],
      [1, 1, 0],
      [1, 1, 1],
    ]);
    const sp = tensors(student, 3);
    const proj = obj.initParams(7).map((w, i) => tf.tensor(w, [...obj.params[i].shape]));
    const out = forward(sp, batch.inputs);
    const got = scalar(obj.loss(out, proj, batch, prepared));

    const t = teacher.run(batch.inputs);
    const m = prepared.mask;
    const hS = out.taps['att0/hidden'];
    const p0 = applyProjection('linear', proj[0], proj[1], hS);
    const p2 = applyProjection('tanh', proj[2], proj[3], hS);
    const expected =
      scalar(kdCeLoss(out.logits, t.logits, 2)) +
      0.3 * scalar(softmaxCrossEntropy(out.logits, batch.labels)) +
      scalar(hiddenMseLoss(p0, t.taps['att1/hidden'], m)) +
      0.5 * scalar(attentionCeLoss(out.taps['att0/attention'], t.taps['att1/attention'], m)) +
      0.2 * scalar(fspLoss([p2, p2], [t.taps['att0/hidden'], t.taps['att1/hidden']], m)) +
      0.2 * scalar(nstLoss([hS, hS], [t.taps['att0/hidden'], t.taps['att1/hidden']], m));
    expect(got).toBeCloseTo(expected, 5);
    expect(got).toBeGreaterThan(0);
    dispose(prepared);
  });

  it('reads a layer by its name as by its number', async () => {
    // seqNet's blocks: att0, att1, head (teacher); att0, head (student).
    const byName: DistillationInput = {
      ...matchSpec,
      intermediate_matches: [
        { layer_T: 'att1', layer_S: 'att0', feature: 'hidden', loss: 'hidden_mse', proj: ['linear', 3, 4] },
        { layer_T: 'att1', layer_S: 0, feature: 'attention', loss: 'attention_ce', weight: 0.5 },
        { layer_T: ['att0', 1], layer_S: ['att0', 'att0'], feature: 'hidden', loss: 'nst', weight: 0.2 },
      ],
    };
    const byNumber: DistillationInput = {
      ...matchSpec,
      intermediate_matches: [
        { layer_T: 1, layer_S: 0, feature: 'hidden', loss: 'hidden_mse', proj: ['linear', 3, 4] },
        { layer_T: 1, layer_S: 0, feature: 'attention', loss: 'attention_ce', weight: 0.5 },
        { layer_T: [0, 1], layer_S: [0, 0], feature: 'hidden', loss: 'nst', weight: 0.2 },
      ],
    };
    const teacher = new NetTeacher(teacherNet, teacherNet.init(1));
    const lossOf = async (spec: DistillationInput) => {
      const obj = new DistillationObjective({
        spec: DistillationSpec.parse(spec),
        teachers: [new LiveTeacher(teacher, blockTapAdaptor(teacherNet))],
        student: maskedAdaptor,
        totalSteps: 10,
      });
      const batch = batchOf([0, 2, 5]);
      const prepared = await obj.prepare(batch);
      const proj = obj.initParams(7).map((w, i) => tf.tensor(w, [...obj.params[i].shape]));
      const loss = scalar(obj.loss(forward(tensors(student, 3), batch.inputs), proj, batch, prepared));
      dispose(prepared);
      return loss;
    };
    expect(await lossOf(byName)).toBe(await lossOf(byNumber));
    expect(
      () =>
        new DistillationObjective({
          spec: DistillationSpec.parse({
            intermediate_matches: [{ layer_T: 0, layer_S: 'dense_9', feature: 'hidden', loss: 'hidden_mse' }],
          }),
          teachers: [new LiveTeacher(teacher, blockTapAdaptor(teacherNet))],
          student: blockTapAdaptor(student),
          totalSteps: 10,
        }),
    ).toThrow(/the seq-test model has no hidden layer 'dense_9' \(its hidden layers: att0, head\)/);
  });

  it('sends gradients to the student and the projections, never to the teacher', async () => {
    const teacher = new VariableTeacher(teacherNet, 1);
    const obj = new DistillationObjective({
      spec: DistillationSpec.parse(matchSpec),
      teachers: [new LiveTeacher(teacher, blockTapAdaptor(teacherNet))],
      student: maskedAdaptor,
      totalSteps: 10,
    });
    const batch = batchOf([0, 2, 5, 7]);
    const prepared = await obj.prepare(batch);
    const sv = perBlock(student, student.init(3), (w, shape) => tf.variable(tf.tensor(w, shape)));
    const pv = obj.initParams(7).map((w, i) => tf.variable(tf.tensor(w, [...obj.params[i].shape])));
    const teacherVars = teacher.vars.flat();
    const { grads } = tf.variableGrads(
      () => obj.loss(forward(sv, batch.inputs), pv, batch, prepared),
      [...sv.flat(), ...pv, ...teacherVars],
    );
    for (const v of [...sv.flat(), ...pv]) {
      expect(grads[v.name], v.name).toBeDefined();
      expect(scalar(tf.norm(grads[v.name])), v.name).toBeGreaterThan(0);
    }
    for (const v of teacherVars) expect(grads[v.name]).toBeUndefined();
    dispose(prepared);
  });

  it('leaves behind only what prepare returns, and nothing once that and the loss are disposed', async () => {
    const teacher = new NetTeacher(teacherNet, teacherNet.init(1));
    const obj = new DistillationObjective({
      spec: DistillationSpec.parse({ ...matchSpec, temperature_scheduler: ['cwsm', 1] }),
      teachers: [new LiveTeacher(teacher, blockTapAdaptor(teacherNet))],
      student: maskedAdaptor,
      totalSteps: 10,
    });
    const batch = batchOf([0, 2, 5]);
    const sp = tensors(student, 3);
    const proj = obj.initParams(7).map((w, i) => tf.tensor(w, [...obj.params[i].shape]));
    const before = tf.memory().numTensors;
    const prepared = await obj.prepare(batch);
    expect(tf.memory().numTensors).toBe(before + new Set(Object.values(prepared)).size);
    const loss = tf.tidy(() => obj.loss(forward(sp, batch.inputs), proj, batch, prepared));
    loss.dispose();
    dispose(prepared);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('applies probability_shift before the temperature scheduler, as TextBrewer', async () => {
    const spec = DistillationSpec.parse({ probability_shift: true, temperature_scheduler: ['flsw', 1, 1] });
    const teacher = new NetTeacher(teacherNet, teacherNet.init(1));
    const obj = new DistillationObjective({
      spec,
      teachers: [new LiveTeacher(teacher, blockTapAdaptor(teacherNet))],
      student: blockTapAdaptor(student),
      totalSteps: 10,
    });
    const batch = batchOf([1, 3, 4, 6, 8]);
    const prepared = await obj.prepare(batch);
    const out = forward(tensors(student, 3), batch.inputs);
    const shifted = probabilityShift(prepared.logits, batch.labels);
    const tau = flswTemperature(out.logits, shifted, 4, 1, 1);
    expect(scalar(obj.loss(out, [], batch, prepared))).toBeCloseTo(
      scalar(kdCeLoss(out.logits, shifted, tau)),
      6,
    );
    // the shift changes the target where the teacher is wrong
    expect(scalar(obj.loss(out, [], batch, prepared))).not.toBeCloseTo(
      scalar(kdCeLoss(out.logits, prepared.logits, tau)),
      6,
    );
  });

  it('weights the KD and hard-label terms by their schedulers at the batch step', async () => {
    const spec = DistillationSpec.parse({
      hard_label_weight: 2,
      hard_label_weight_scheduler: 'linear_growth',
      kd_loss_weight_scheduler: 'linear_decay',
    });
    const obj = new DistillationObjective({
      spec,
      teachers: [
        new LiveTeacher(new NetTeacher(teacherNet, teacherNet.init(1)), blockTapAdaptor(teacherNet)),
      ],
      student: blockTapAdaptor(student),
      totalSteps: 20,
    });
    for (const step of [0, 5, 20]) {
      const batch = { ...batchOf([0, 1, 3]), step };
      const prepared = await obj.prepare(batch);
      const o = forward(tensors(student, 3), batch.inputs);
      const kd = scalar(kdCeLoss(o.logits, prepared.logits, 4));
      const ce = scalar(softmaxCrossEntropy(o.logits, batch.labels));
      const expected = (1 - step / 20) * kd + 2 * (step / 20) * ce;
      expect(scalar(obj.loss(o, [], batch, prepared))).toBeCloseTo(expected, 5);
    }
  });

  it('keeps the loss connected to the student when every weight is 0 at a step (zero gradient, not none)', async () => {
    const obj = new DistillationObjective({
      spec: DistillationSpec.parse({ kd_loss_weight_scheduler: 'linear_growth' }),
      teachers: [
        new LiveTeacher(new NetTeacher(teacherNet, teacherNet.init(1)), blockTapAdaptor(teacherNet)),
      ],
      student: blockTapAdaptor(student),
      totalSteps: 10,
    });
    const batch = batchOf([0, 1]);
    const prepared = await obj.prepare(batch);
    const sv = perBlock(student, student.init(3), (w, shape) => tf.variable(tf.tensor(w, shape)));
    const { value, grads } = tf.variableGrads(
      () => obj.loss(forward(sv, batch.inputs), [], batch, prepared),
      sv.flat(),
    );
    expect(scalar(value)).toBe(0);
    for (const v of sv.flat()) expect(scalar(tf.max(tf.abs(grads[v.name])))).toBe(0);
  });

  it('refuses what it cannot do, naming it', () => {
    const live = new LiveTeacher(new NetTeacher(teacherNet, teacherNet.init(1)), blockTapAdaptor(teacherNet));
    const base = { student: blockTapAdaptor(student), totalSteps: 10 };
    const bad = (s: DistillationInput) => () =>
      new DistillationObjective({ ...base, spec: DistillationSpec.parse(s), teachers: [live] });
    expect(
      bad({ intermediate_matches: [{ layer_T: 0, layer_S: 5, feature: 'hidden', loss: 'hidden_mse' }] }),
    ).toThrow(/the seq-test model has no hidden layer 5 \(its hidden layers: 0…1\)/);
    expect(
      () => new DistillationObjective({ ...base, spec: DistillationSpec.parse({}), teachers: [] }),
    ).toThrow(/at least one teacher/);
    expect(
      () => new DistillationObjective({ ...base, spec: DistillationSpec.parse({}), teachers: [live, live] }),
    ).toThrow(/multi_teacher\?/);
    // the head exposes no taps
    const adaptor = blockTapAdaptor(student);
    expect(() => adaptor.hidden({ logits: tf.zeros([1, 4]), taps: {} }, 1)).toThrow(
      /the seq-test model exposes no tap 'head\/hidden' for hidden layer 1 \(taps: none\)/,
    );
    // TextBrewer's numbering through named taps: attention layer 0 is the second block here
    const named = tapAdaptor({ hidden: ['att0/hidden'], attention: ['att1/attention'] }, 'teacher');
    const t = new NetTeacher(teacherNet, teacherNet.init(1)).run(batchOf([0]).inputs);
    expect(named.attention(t, 0)).toBe(t.taps['att1/attention']);
    expect(named.taps('attention', 0)).toEqual(['att1/attention']);
    expect(() => named.hidden(t, 1)).toThrow(/the teacher has no hidden layer 1 \(its hidden layers: 0…0\)/);
  });
});

describe('multi-teacher and multi-task', () => {
  const teacherA = new NetTeacher(teacherNet, teacherNet.init(1));
  const teacherB = new NetTeacher(teacherNet, teacherNet.init(2));
  const sources = () => [teacherA, teacherB].map((t) => new LiveTeacher(t, blockTapAdaptor(teacherNet)));

  it("multi_teacher: the soft target is the teachers' logits averaged, or weighted", async () => {
    const batch = batchOf([0, 1, 2]);
    const la = teacherA.run(batch.inputs).logits;
    const lb = teacherB.run(batch.inputs).logits;
    for (const [weights, wa] of [[undefined, 0.5] as const, [[3, 1], 0.75] as const]) {
      const obj = new DistillationObjective({
        spec: DistillationSpec.parse({}),
        teachers: sources(),
        student: blockTapAdaptor(student),
        totalSteps: 10,
        mode: 'multi_teacher',
        ...(weights ? { teacherWeights: weights } : {}),
      });
      const prepared = await obj.prepare(batch);
      const expected = tf.add(tf.mul(la, wa), tf.mul(lb, 1 - wa));
      expect(scalar(tf.max(tf.abs(tf.sub(prepared.logits, expected))))).toBeLessThan(1e-6);
      dispose(prepared);
    }
    expect(
      () =>
        new DistillationObjective({
          spec: DistillationSpec.parse(matchSpec),
          teachers: sources(),
          student: blockTapAdaptor(student),
          totalSteps: 10,
          mode: 'multi_teacher',
        }),
    ).toThrow(/general or multi_task/);
  });

  it("multi_task: the batch's task picks its teacher", async () => {
    const obj = new DistillationObjective({
      spec: DistillationSpec.parse({}),
      teachers: sources(),
      student: blockTapAdaptor(student),
      totalSteps: 10,
      mode: 'multi_task',
    });
    for (const [task, teacher] of [
      [0, teacherA],
      [1, teacherB],
    ] as const) {
      const batch = batchOf([3, 4], 0, task);
      const prepared = await obj.prepare(batch);
      expect(prepared.logits.arraySync()).toEqual(teacher.run(batch.inputs).logits.arraySync());
    }
    await expect(obj.prepare(batchOf([3]))).rejects.toThrow(/task undefined has no teacher/);
    await expect(obj.prepare(batchOf([3], 0, 2))).rejects.toThrow(/task 2 has no teacher/);
  });
});

describe('cached teacher logits', () => {
  const teacher = new NetTeacher(teacherNet, teacherNet.init(1));
  const samples = {
    count: SAMPLES,
    inputs: (idx: Int32Array) => batchOf(Array.from(idx)).inputs,
  };

  it("give the live teacher's loss exactly (fp32, every class), by sample index", async () => {
    const path = join(dir, 'teacher.bin');
    await cacheTeacherLogits(path, teacher, blockTapAdaptor(teacherNet), samples, { batchSize: 4 });
    const cached = CachedTeacher.open(path);
    expect([cached.count, cached.classes, cached.topK, cached.dtype]).toEqual([
      SAMPLES,
      CLASSES,
      CLASSES,
      'fp32',
    ]);
    const spec = DistillationSpec.parse({ temperature: 3, hard_label_weight: 0.5, kd_loss_type: 'ce' });
    const make = (source: TeacherSource) =>
      new DistillationObjective({
        spec,
        teachers: [source],
        student: blockTapAdaptor(student),
        totalSteps: 10,
      });
    const live = make(new LiveTeacher(teacher, blockTapAdaptor(teacherNet)));
    const fromCache = make(cached);
    const batch = batchOf([7, 2, 9, 0]);
    const out = forward(tensors(student, 3), batch.inputs);
    const pl = await live.prepare(batch);
    const pc = await fromCache.prepare(batch);
    expect(pc.logits.arraySync()).toEqual(pl.logits.arraySync());
    const a = scalar(live.loss(out, [], batch, pl));
    const b = scalar(fromCache.loss(out, [], batch, pc));
    expect(Math.abs(a - b)).toBeLessThanOrEqual(1e-6);
  });

  it('train the student to the same weights as the live teacher over 10 steps (to 1e-6)', async () => {
    const path = join(dir, 'teacher-train.bin');
    await cacheTeacherLogits(path, teacher, blockTapAdaptor(teacherNet), samples);
    const spec = DistillationSpec.parse({
      temperature_scheduler: { type: 'flsw', beta: 1, gamma: 2 },
      hard_label_weight: 0.2,
      kd_loss_weight_scheduler: 'linear_decay',
    });
    const train = async (source: TeacherSource) => {
      const obj = new DistillationObjective({
        spec,
        teachers: [source],
        student: blockTapAdaptor(student),
        totalSteps: 10,
      });
      const vars = perBlock(student, student.init(5), (w, shape) => tf.variable(tf.tensor(w, shape)));
      const opt = tf.train.sgd(0.5);
      for (let step = 0; step < 10; step++) {
        const batch = batchOf(
          [(3 * step) % SAMPLES, (3 * step + 1) % SAMPLES, (3 * step + 5) % SAMPLES],
          step,
        );
        const prepared = await obj.prepare(batch);
        const { value, grads } = tf.variableGrads(
          () => obj.loss(forward(vars, batch.inputs), [], batch, prepared),
          vars.flat(),
        );
        opt.applyGradients(grads);
        value.dispose();
        dispose(grads);
        dispose(prepared);
      }
      return vars.flat().map((v) => Array.from(v.dataSync()));
    };
    const live = await train(new LiveTeacher(teacher, blockTapAdaptor(teacherNet)));
    const cached = await train(CachedTeacher.open(path));
    const initial = student.init(5).map((w) => Array.from(w));
    expect(live.flat()).not.toEqual(initial.flat());
    const diff = Math.max(...live.flat().map((v, i) => Math.abs(v - cached.flat()[i])));
    expect(diff).toBeLessThanOrEqual(1e-6);
  });

  it('store top-k logits in fp16: the k largest restored (fp16-rounded), the rest at their mean', async () => {
    const path = join(dir, 'teacher-top2.bin');
    await cacheTeacherLogits(path, teacher, blockTapAdaptor(teacherNet), samples, { topK: 2, dtype: 'fp16' });
    const bytes = readFileSync(path);
    // header + values (10·2 fp16) + indices (10·2 u16) + tails (10 fp16)
    expect(bytes.length).toBe(32 + 40 + 40 + 20);
    const cached = new CachedTeacher(bytes);
    const idx = Int32Array.from([4, 1]);
    const got = cached.logits(idx).arraySync();
    const exact = teacher.run(batchOf([4, 1]).inputs).logits.arraySync() as number[][];
    exact.forEach((row, r) => {
      const order = row.map((_, c) => c).sort((a, b) => row[b] - row[a]);
      const restMean = (row[order[2]] + row[order[3]]) / 2;
      for (const c of order.slice(0, 2))
        expect(Math.abs(got[r][c] - row[c])).toBeLessThan(Math.abs(row[c]) * 1e-3 + 1e-4);
      for (const c of order.slice(2))
        expect(Math.abs(got[r][c] - restMean)).toBeLessThan(Math.abs(restMean) * 1e-3 + 1e-4);
    });
    expect(() => cached.logits(Int32Array.from([SAMPLES]))).toThrow(/outside the 10 cached samples/);
  });

  it('refuse a file that is not one, or is cut short, and hold no features', async () => {
    const path = join(dir, 'teacher-bad.bin');
    await cacheTeacherLogits(path, teacher, blockTapAdaptor(teacherNet), samples);
    const good = readFileSync(path);
    writeFileSync(path, good.subarray(0, good.length - 4));
    expect(() => CachedTeacher.open(path)).toThrow(/truncated/);
    const wrong = Buffer.from(good);
    wrong.write('NOTACACHE', 0, 'latin1');
    expect(() => new CachedTeacher(wrong)).toThrow(/bad magic/);
    expect(() =>
      new CachedTeacher(good).outputs(tf.zeros([1]), Int32Array.from([0]), [{ feature: 'hidden', layer: 0 }]),
    ).toThrow(/logits only/);
  });
});
