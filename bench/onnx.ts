/**
 * model.onnx files in onnxruntime-node, on the CPU: the median latency of one sample (batch 1) and the throughput
 * at batch 256, beside the same run's floor, a graph that only copies its input (Identity): what a call costs
 * before any layer runs.
 *
 *   npx tsx bench/onnx.ts runs/mnist-compress/distilled/seed-1/model.onnx runs/mnist-compress/half/seed-1/model.onnx
 *   npx tsx bench/onnx.ts --shape 28,28,1 runs/mnist-compress/{teacher,cnn-half}/model.onnx
 *   (--shape: one sample's input shape, default 784; every model given takes it)
 */
import { readFileSync, statSync } from 'node:fs';
import { Rng } from '../src/base/rng.ts';
import { DataType, encodeModel } from '../src/models/onnx/onnx-proto.ts';
import { loadOnnxRuntime, type OnnxRuntime, onnxLatencyMs } from '../src/models/onnx/runtime.ts';

const BATCH = 256;
const BATCH_RUNS = 100;

/** Samples per second at `BATCH`: the median of `BATCH_RUNS` timed runs after as many untimed. */
async function throughput(
  ort: OnnxRuntime,
  model: Uint8Array,
  x: Float32Array,
  shape: readonly number[],
): Promise<number> {
  const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'] });
  try {
    const feed = { [session.inputNames[0]]: new ort.Tensor('float32', x, [BATCH, ...shape]) };
    const times: number[] = [];
    for (let i = 0; i < 2 * BATCH_RUNS; i++) {
      const t0 = performance.now();
      await session.run(feed);
      if (i >= BATCH_RUNS) times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    return BATCH / (times[Math.floor(times.length / 2)] / 1000);
  } finally {
    await session.release();
  }
}

/** A graph that returns its input: the floor of a call. */
function identityModel(shape: readonly number[]): Uint8Array {
  return encodeModel(
    {
      name: 'identity',
      nodes: [{ opType: 'Identity', name: 'copy', inputs: ['input'], outputs: ['output'] }],
      initializers: [],
      inputs: [{ name: 'input', elemType: DataType.float, shape: ['N', ...shape] }],
      outputs: [{ name: 'output', elemType: DataType.float, shape: ['N', ...shape] }],
    },
    'bench',
  );
}

const { runtime: ort, why } = await loadOnnxRuntime();
if (!ort) throw new Error(why ?? 'onnxruntime-node is not installed');
const at = process.argv.indexOf('--shape');
const shape = (at >= 0 ? process.argv[at + 1] : '784').split(',').map(Number);
if (shape.some((d) => !Number.isInteger(d) || d < 1))
  throw new Error(`--shape ${shape.join(',')}: give sizes like 28,28,1`);
const features = shape.reduce((a, b) => a * b, 1);
const files = process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && all[i - 1] !== '--shape');
const rng = new Rng(7);
const x = Float32Array.from({ length: BATCH * features }, () => rng.next());
const rows: string[][] = [['model', 'bytes', 'batch 1 p50 ms', `batch ${BATCH} samples/s`]];
const models: [string, Uint8Array][] = [
  ['(floor: Identity)', identityModel(shape)],
  ...files.map((f): [string, Uint8Array] => [f, readFileSync(f)]),
];
// Three rounds over the models, each figure the median of its rounds: one model measured alone first also paid for
// warming up the process (the floor read 0.061 ms first, 0.021 ms last), and a sub-0.1 ms timing moves by half
// between two runs.
const ROUNDS = 3;
const latencies = models.map(() => [] as number[]);
const rates = models.map(() => [] as number[]);
for (let round = 0; round < ROUNDS; round++) {
  for (const [m, [, bytes]] of models.entries()) {
    latencies[m].push(await onnxLatencyMs(ort, bytes, x, shape, 300));
    rates[m].push(await throughput(ort, bytes, x, shape));
  }
}
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
for (const [m, [name, bytes]] of models.entries()) {
  const size = name.startsWith('(') ? bytes.byteLength : statSync(name).size;
  rows.push([
    name,
    size.toLocaleString('en-US'),
    median(latencies[m]).toFixed(4),
    Math.round(median(rates[m])).toLocaleString('en-US'),
  ]);
}
const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
for (const r of rows)
  console.log(r.map((v, c) => (c === 0 ? v.padEnd(widths[c]) : v.padStart(widths[c]))).join('  '));
console.log(`onnxruntime-node ${ort.env.versions.common}, one session per model, CPU execution provider`);
