/**
 * Quantization as a user runs it, over 2 worker processes: a trained stage, its post-training int8 quantization
 * and a 4-bit quantization-aware fine-tuning. The quantized models are written as integers (a quarter of the
 * bytes) that read back as exactly the fake-quantized weights; bad sections are refused before any worker starts.
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/backend/tf.ts';
import { loadMnist } from '../../src/data/mnist.ts';
import { dequantizeWeights, quantizeWeights } from '../../src/engine/quantization.ts';
import { toLayersModel } from '../../src/models/build.ts';
import { dirBytes, loadNetModel } from '../../src/models/net-dir.ts';
import { MODEL_ONNX, onnxQuantizationOf, referenceOutput } from '../../src/models/onnx/export.ts';
import { loadOnnxRuntime, runOnnx } from '../../src/models/onnx/runtime.ts';
import type { JobStagesReport } from '../../src/trainer/job-stages.ts';
import { refusalOf, reportsOf } from './compare.ts';

const ort = (await loadOnnxRuntime()).runtime;

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-quant-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('quantization in a job', () => {
  it('int8 PTQ of a trained stage and 4-bit QAT: integers on disk, a quarter of the bytes, the accuracy kept', async () => {
    const out = join(tmp, 'out');
    const reports = await reportsOf(
      {
        name: 'quant',
        data: { dataset: 'mnist' },
        train_micro_batch_size_per_gpu: 32,
        optimizer: { type: 'Adam', params: { lr: 0.003 } },
        steps: 60,
        output_dir: out,
        onnx: true,
        model: { type: 'mlp', layers: [784, 32, 10] },
        stages: [
          { name: 'fp32' },
          {
            name: 'ptq8',
            model: { stage: 'fp32' },
            quantization: { mode: 'ptq', calibration: { batches: 4 } },
          },
          { name: 'k16', model: { stage: 'fp32' }, clustering: { clusters: 16 }, steps: 10 },
          { name: 'r8', model: { stage: 'fp32' }, low_rank: { rank: 8 }, steps: 10 },
          {
            name: 'qat4',
            model: { stage: 'fp32' },
            quantization: { mode: 'qat', bits: 4, granularity: 'per_tensor' },
            steps: 10,
            optimizer: { type: 'Adam', params: { lr: 0.0005 } },
          },
        ],
      },
      2,
    );
    const report = reports.find((d) => (d as { kind?: string }).kind === 'stages') as JobStagesReport;
    const [fp32, ptq8, k16, r8, qat4] = report.rows;
    expect(ptq8.steps).toBe(0);
    expect(Math.abs(ptq8.accuracy_mean - fp32.accuracy_mean)).toBeLessThan(0.02);
    expect(qat4.accuracy_mean).toBeGreaterThan(0.5);

    const trained = loadNetModel(join(out, 'fp32'));
    const ptq = loadNetModel(join(out, 'ptq8'));
    // PTQ is exactly the trained kernels through the quantizer; the biases stay float.
    for (const i of [0, 2]) {
      const shape = trained.net.blocks[i / 2].params[0].shape;
      const expected = dequantizeWeights(
        quantizeWeights(trained.values[i], shape, { bits: 8, perChannel: true }),
      );
      expect(Array.from(ptq.values[i])).toEqual(Array.from(expected));
    }
    expect(Array.from(ptq.values[1])).toEqual(Array.from(trained.values[1]));
    expect(ptq.quantization?.weights).toEqual({ bits: 8, perChannel: true });
    expect(ptq.quantization?.activations.map((a) => a !== undefined)).toEqual([true, true]);
    // Integers: 1 byte per kernel weight where fp32 takes 4 (and no model.json: tfjs reads per-tensor uint8 only).
    expect(dirBytes(join(out, 'fp32')) / dirBytes(join(out, 'ptq8'))).toBeGreaterThan(3);
    // The table's size is the model as kd-launch wrote it; model.onnx has its own column.
    const written = ['kd-model.json', 'weights.bin'].map((f) => statSync(join(out, 'ptq8', f)).size);
    expect(ptq8.size_bytes).toBe(written[0] + written[1]);

    // Weight sharing: 16 values per kernel, stored as 4-bit indices and a codebook; the biases stay float.
    const shared = loadNetModel(join(out, 'k16'));
    expect(shared.clusters).toBe(16);
    for (const i of [0, 2]) expect(new Set(shared.values[i]).size).toBeLessThanOrEqual(16);
    expect(statSync(join(out, 'k16', 'weights.bin')).size).toBe(
      (784 * 32) / 2 + (32 * 10) / 2 + (32 + 10) * 4,
    );
    expect(k16.model).toBe('mlp k=16');
    expect(Math.abs(k16.accuracy_mean - fp32.accuracy_mean)).toBeLessThan(0.03);

    // Low-rank: the 784×32 layer as 784×8 · 8×32 (the 32×10 one would not get smaller), fine-tuned.
    const factored = loadNetModel(join(out, 'r8'));
    expect(factored.spec).toMatchObject({ type: 'mlp', layers: [784, 32, 10], ranks: [8, null] });
    expect(r8.parameters).toBe(784 * 8 + 8 * 32 + 32 + 32 * 10 + 10);
    expect(r8.accuracy_mean).toBeGreaterThan(fp32.accuracy_mean - 0.05);

    // QAT's weights are on its 4-bit per-tensor grid: at most 15 distinct values per kernel.
    const qat = loadNetModel(join(out, 'qat4'));
    expect(qat.quantization?.weights).toEqual({ bits: 4, perChannel: false });
    for (const i of [0, 2]) expect(new Set(qat.values[i]).size).toBeLessThanOrEqual(15);

    // model.onnx beside each model: int8 QDQ for the quantized ones, a quarter of the fp32 file, timed.
    for (const row of report.rows) expect(row.onnx_latency_ms).toBeGreaterThan(0);
    expect((fp32.onnx_bytes ?? 0) / (ptq8.onnx_bytes ?? 1)).toBeGreaterThan(3.5);
    expect(ptq8.onnx_bytes).toBe(statSync(join(out, 'ptq8', MODEL_ONNX)).size);
    // On the whole test set the int8 file gives the top-1 kd-launch's quantized model gives (to ≥ 99.5 %).
    const { test } = loadMnist();
    const saved = ptq.quantization;
    if (!saved || !ort) throw new Error('no quantization read back, or no onnxruntime-node');
    const layers = toLayersModel(ptq.spec, ptq.values);
    const x = tf.tensor(test.inputs, [test.length, 784]);
    const expected = referenceOutput(layers, x, onnxQuantizationOf(saved)).dataSync() as Float32Array;
    x.dispose();
    layers.dispose();
    const bytes = readFileSync(join(out, 'ptq8', MODEL_ONNX));
    const got = (await runOnnx(ort, bytes, test.inputs, [test.length, 784])).values;
    const top1 = (v: Float32Array, i: number) => {
      const row = v.subarray(i * 10, i * 10 + 10);
      return row.indexOf(Math.max(...row));
    };
    let same = 0;
    let right = 0;
    for (let i = 0; i < test.length; i++) {
      same += top1(got, i) === top1(expected, i) ? 1 : 0;
      right += top1(got, i) === test.labels[i] ? 1 : 0;
    }
    expect(same / test.length).toBeGreaterThanOrEqual(0.995);
    // And its accuracy is the one the table reports for the stage, within those disagreements.
    expect(Math.abs(right / test.length - ptq8.accuracy_mean)).toBeLessThanOrEqual(0.005);
  });

  const refusal = (name: string, lines: string[]) => refusalOf(tmp, name, lines);

  it('a rank no layer gets smaller with, low_rank of a CNN and of an untrained model are refused with their line', () => {
    expect(
      refusal('r', ['stages:', '  - {name: a}', '  - {name: b, model: {stage: a}, low_rank: {rank: 16}}']),
    ).toMatch(
      /r\.yaml:9:\d+: stages\.1\.low_rank\.rank: stage 'b' rank 16 is larger than the layers can use: no 784×16, 16×10 layer gets smaller as two of rank 16/,
    );
    expect(refusal('rfresh', ['low_rank: {energy: 0.9}'])).toMatch(
      /rfresh\.yaml:7:\d+: low_rank: low_rank needs a trained model to start from/,
    );
    expect(
      refusal('rcnn', [
        'stages:',
        '  - {name: a, model: {type: cnn, input: [28, 28, 1], conv: [{filters: 4, kernel: 3}], classes: 10}}',
        '  - {name: b, model: {stage: a}, low_rank: {rank: 2}}',
      ]),
    ).toMatch(
      /rcnn\.yaml:9:\d+: stages\.1\.low_rank: stage 'b' low_rank factorises an MLP's dense layers; this model is a cnn/,
    );
  });

  it('clusters outside 2…256 and clustering beside pruning are refused with their line', () => {
    expect(
      refusal('k1', [
        'stages:',
        '  - {name: a}',
        '  - {name: b, model: {stage: a}, clustering: {clusters: 1}}',
      ]),
    ).toMatch(/k1\.yaml:9:\d+: stages\.1\.clustering\.clusters: clusters is 2 to 256/);
    expect(
      refusal('kprune', [
        'stages:',
        '  - {name: a}',
        '  - {name: b, model: {stage: a}, clustering: {clusters: 8}, pruning: {sparsity: 0.5}}',
      ]),
    ).toMatch(
      /kprune\.yaml:9:\d+: stages\.1\.clustering: stage 'b' clustering and pruning both set the weights/,
    );
  });

  it('bits other than 4 or 8, an untrained model, and a PTQ that prunes are refused with their line', () => {
    expect(
      refusal('bits', [
        'stages:',
        '  - {name: a}',
        '  - {name: b, model: {stage: a}, quantization: {mode: ptq, bits: 6}}',
      ]),
    ).toMatch(/bits\.yaml:9:\d+: stages\.1\.quantization\.bits: bits is 8 or 4/);
    expect(refusal('fresh', ['quantization: {mode: qat}'])).toMatch(
      /fresh\.yaml:7:\d+: quantization: quantization needs a trained model to start from: model: \{stage: NAME\} \(an earlier stage's\) or \{path: DIR\}/,
    );
    expect(
      refusal('prune', [
        'stages:',
        '  - {name: a}',
        '  - {name: b, model: {stage: a}, quantization: {mode: ptq}, pruning: {sparsity: 0.5}}',
      ]),
    ).toMatch(
      /prune\.yaml:9:\d+: stages\.1\.pruning: stage 'b' post-training quantization trains nothing, so it prunes nothing/,
    );
  });
});
