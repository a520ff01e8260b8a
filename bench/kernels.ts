/**
 * The fast CPU path measured against its own limit, in one run:
 *   - every GEMM of an MLP 784-1024-1024-10 training step at batch 128 (forward and backward), as a tfjs
 *     BatchMatMul kernel (stock and BLAS) beside OpenBLAS sgemm called directly on the same shape;
 *   - that MLP's forward + backward + SGD step in samples/s, stock kernels vs BLAS kernels, per backend;
 *   - one BLAS training step against the time of its GEMMs alone, and where the rest of the step goes;
 *   - a small MNIST-shaped CNN's training step on wasm: stock kernels (which cannot train it alone: they lack
 *     Conv2DBackpropFilter, supplied then on the TypeScript GEMM, as without the binding) vs BLAS kernels.
 *
 *   npx tsx bench/kernels.ts [--json]     (--json: one JSON object per line and nothing else)
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { blasInfo, installBlasKernels, uninstallBlasKernels } from '../src/backend/blas/index.ts';
import { type BlasBinding, loadBlasBinding } from '../src/backend/blas/native.ts';
import { blasSeconds, type GemmShape, mlpGemms, secondsPerCall } from './gemm-limit.ts';

const JSON_ONLY = process.argv.includes('--json');
const BATCH = 128;
const LAYERS = [784, 1024, 1024, 10];
function emit(record: Record<string, unknown>, text: string): void {
  console.log(JSON_ONLY ? JSON.stringify(record) : text);
}

const gflops = (shape: GemmShape, seconds: number) => (2 * shape.m * shape.n * shape.k) / seconds / 1e9;
const round = (x: number, digits = 1) => Number(x.toFixed(digits));

/**
 * Seconds per BatchMatMul kernel call on the current backend. The right operand is a different tensor on each
 * call, as in training (the stock wasm kernel caches a packed copy per right-operand tensor).
 */
function kernelSeconds({ m, n, k, transA, transB }: GemmShape): number {
  const a = tf.fill(transA ? [k, m] : [m, k], 0.5);
  const bs = Array.from({ length: 4 }, () => tf.fill(transB ? [n, k] : [k, n], 0.25));
  const attrs = { transposeA: transA, transposeB: transB };
  const seconds = secondsPerCall((i) => {
    const out = tf.engine().runKernel('BatchMatMul', { a, b: bs[i % bs.length] }, attrs) as tf.Tensor;
    out.dispose();
  });
  tf.dispose([a, ...bs]);
  return seconds;
}

async function benchGemms(binding: BlasBinding): Promise<number> {
  let blasTotal = 0;
  for (const shape of mlpGemms(LAYERS, BATCH)) {
    const blas = blasSeconds(binding, shape);
    blasTotal += blas;
    for (const backend of ['wasm', 'cpu']) {
      await tf.setBackend(backend);
      // The stock cpu kernel takes about a second per product: measure it on one shape only.
      const measureStock = backend === 'wasm' || shape.role === 'forward 2';
      uninstallBlasKernels(backend);
      const stock = measureStock ? kernelSeconds(shape) : undefined;
      installBlasKernels(backend);
      const kernel = kernelSeconds(shape);
      const record = {
        kernel: 'BatchMatMul',
        m: shape.m,
        n: shape.n,
        k: shape.k,
        transA: shape.transA,
        transB: shape.transB,
        gflops: round(gflops(shape, kernel)),
        blas_gflops: round(gflops(shape, blas)),
        ratio: round(blas / kernel, 2),
        stock_gflops: stock === undefined ? null : round(gflops(shape, stock), 2),
        backend,
        role: shape.role,
      };
      const stockText = stock === undefined ? '' : `, stock ${record.stock_gflops}`;
      emit(
        record,
        `${backend.padEnd(4)} ${shape.role.padEnd(9)} m=${shape.m} n=${shape.n} k=${shape.k} ` +
          `transA=${shape.transA} transB=${shape.transB}: ${record.gflops} GFLOP/s = ${record.ratio}× ` +
          `OpenBLAS direct (${record.blas_gflops})${stockText}`,
      );
    }
  }
  return blasTotal;
}

/** One SGD step of softmax cross-entropy on random labels, as the engine runs it (tf.variableGrads). */
function trainingStep(
  model: tf.Sequential,
  x: tf.Tensor,
  classes: number,
): { step: () => void; dispose: () => void } {
  const batch = x.shape[0];
  const y = tf.oneHot(tf.randomUniform([batch], 0, classes, 'int32'), classes);
  const optimizer = tf.train.sgd(0.01);
  const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const step = () =>
    tf.tidy(() => {
      const { grads } = tf.variableGrads(
        () => tf.losses.softmaxCrossEntropy(y, model.apply(x, { training: true }) as tf.Tensor) as tf.Scalar,
        variables,
      );
      optimizer.applyGradients(grads);
    });
  return {
    step,
    dispose: () => {
      tf.dispose([x, y]);
      model.dispose();
    },
  };
}

/** The MLP as the engine builds it (a tf.sequential of dense layers). */
function mlpStep(): { step: () => void; dispose: () => void } {
  const model = tf.sequential();
  for (let l = 1; l < LAYERS.length; l++) {
    const last = l === LAYERS.length - 1;
    model.add(
      tf.layers.dense({
        units: LAYERS[l],
        inputShape: [LAYERS[l - 1]],
        activation: last ? 'linear' : 'relu',
      }),
    );
  }
  return trainingStep(model, tf.randomUniform([BATCH, LAYERS[0]]), LAYERS[LAYERS.length - 1]);
}

async function benchTraining(gemmSeconds: number): Promise<void> {
  for (const backend of ['wasm', 'cpu']) {
    await tf.setBackend(backend);
    const samplesPerS: Record<string, number> = {};
    for (const kernels of ['stock', 'blas']) {
      if (kernels === 'stock') uninstallBlasKernels(backend);
      else installBlasKernels(backend);
      const { step, dispose } = mlpStep();
      const seconds = secondsPerCall(step, backend === 'cpu' && kernels === 'stock' ? 1 : 3);
      dispose();
      samplesPerS[kernels] = BATCH / seconds;
      if (kernels === 'blas') {
        const record = {
          bench: 'mlp-step',
          backend,
          step_ms: round(seconds * 1000, 2),
          gemm_ms: round(gemmSeconds * 1000, 2),
          step_over_gemm: round(seconds / gemmSeconds, 2),
        };
        emit(
          record,
          `${backend}: one BLAS training step ${record.step_ms} ms, its GEMMs alone (OpenBLAS direct) ` +
            `${record.gemm_ms} ms: ${record.step_over_gemm}×`,
        );
      }
    }
    const record = {
      bench: 'mlp-train',
      model: LAYERS.join('-'),
      batch: BATCH,
      backend,
      stock_samples_per_s: round(samplesPerS.stock),
      blas_samples_per_s: round(samplesPerS.blas),
      speedup: round(samplesPerS.blas / samplesPerS.stock),
    };
    emit(
      record,
      `${backend}: MLP ${record.model} batch ${BATCH} forward+backward+SGD: stock ${record.stock_samples_per_s} ` +
        `samples/s, BLAS ${record.blas_samples_per_s} samples/s (${record.speedup}×)`,
    );
  }
}

/** conv 3×3×32 (relu) → maxPool 2 → conv 3×3×64 (relu) → maxPool 2 → dense 128 (relu) → dense 10, batch 64. */
function cnnStep(): { step: () => void; dispose: () => void } {
  const model = tf.sequential();
  const conv = { kernelSize: 3, activation: 'relu', padding: 'same' } as const;
  model.add(tf.layers.conv2d({ inputShape: [28, 28, 1], filters: 32, ...conv }));
  model.add(tf.layers.maxPooling2d({ poolSize: 2 }));
  model.add(tf.layers.conv2d({ filters: 64, ...conv }));
  model.add(tf.layers.maxPooling2d({ poolSize: 2 }));
  model.add(tf.layers.flatten());
  model.add(tf.layers.dense({ units: 128, activation: 'relu' }));
  model.add(tf.layers.dense({ units: 10 }));
  return trainingStep(model, tf.randomUniform([64, 28, 28, 1]), 10);
}

async function benchCnn(): Promise<void> {
  await tf.setBackend('wasm');
  const samplesPerS: Record<string, number> = {};
  for (const kernels of ['stock', 'blas']) {
    uninstallBlasKernels('wasm');
    // KD_BLAS=off is the path of a machine without the binding: stock kernels plus the missing one.
    process.env.KD_BLAS = kernels === 'stock' ? 'off' : 'on';
    installBlasKernels('wasm');
    const { step, dispose } = cnnStep();
    samplesPerS[kernels] = 64 / secondsPerCall(step);
    dispose();
  }
  const record = {
    bench: 'cnn-train',
    backend: 'wasm',
    batch: 64,
    stock_samples_per_s: round(samplesPerS.stock),
    blas_samples_per_s: round(samplesPerS.blas),
    speedup: round(samplesPerS.blas / samplesPerS.stock),
  };
  emit(
    record,
    `wasm: CNN (2 conv, 2 maxPool, 2 dense) batch 64 forward+backward+SGD: stock ${record.stock_samples_per_s} ` +
      `samples/s, BLAS ${record.blas_samples_per_s} samples/s (${record.speedup}×)`,
  );
}

/** Where the time of one BLAS training step on wasm goes, by kernel. */
async function profileStep(): Promise<void> {
  await tf.setBackend('wasm');
  installBlasKernels('wasm');
  const { step, dispose } = mlpStep();
  step();
  const profile = await tf.profile(step);
  dispose();
  const byKernel = new Map<string, number>();
  for (const k of profile.kernels) byKernel.set(k.name, (byKernel.get(k.name) ?? 0) + Number(k.kernelTimeMs));
  const total = [...byKernel.values()].reduce((s, ms) => s + ms, 0);
  const top = [...byKernel].sort((a, b) => b[1] - a[1]).slice(0, 6);
  const kernels = top.map(([name, ms]) => ({ name, ms: round(ms, 2), share: round(ms / total, 3) }));
  emit(
    { bench: 'mlp-step-profile', backend: 'wasm', total_ms: round(total, 2), kernels },
    `wasm BLAS step by kernel (${round(total, 1)} ms in kernels): ` +
      kernels.map((k) => `${k.name} ${k.ms} ms (${round(k.share * 100)}%)`).join(', '),
  );
}

async function main(): Promise<void> {
  const { binding, reason } = loadBlasBinding();
  if (binding === undefined) {
    emit({ bench: 'kernels', skipped: reason }, `bench:kernels skipped: ${reason}`);
    return;
  }
  await tf.ready();
  tf.env().set('PROD', true); // no NaN checks or debug bookkeeping in timings
  await tf.setBackend('wasm');
  installBlasKernels('wasm');
  installBlasKernels('cpu');
  const info = blasInfo();
  emit(
    { bench: 'kernels', library: info.library, threads: info.threads },
    `${info.library}, ${info.threads} thread(s)`,
  );
  const gemmSeconds = await benchGemms(binding);
  await benchTraining(gemmSeconds);
  await profileStep();
  await benchCnn();
}

await main();
