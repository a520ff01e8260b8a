/**
 * onnxruntime-node, an optional dependency: what checks an exported file by running it (the export compares its
 * outputs with the tfjs model's), and what a user deploys it with. Loaded on first use, so nothing else pays
 * for it; absent (a platform it has no binary for), the export still writes the file and says it was not run.
 */
export type OnnxRuntime = typeof import('onnxruntime-node');

let loaded: Promise<{ runtime?: OnnxRuntime; why?: string }> | undefined;

/** onnxruntime-node, or why it is not there. */
export function loadOnnxRuntime(): Promise<{ runtime?: OnnxRuntime; why?: string }> {
  loaded ??= import('onnxruntime-node').then(
    (m) => ({ runtime: (m.default ?? m) as OnnxRuntime }),
    (err: unknown) => ({ why: `onnxruntime-node did not load: ${(err as Error).message.split('\n')[0]}` }),
  );
  return loaded;
}

/** Runs a model file's one input → one output on `x` (float32, `shape`), on the CPU. */
export async function runOnnx(
  ort: OnnxRuntime,
  model: Uint8Array,
  x: Float32Array,
  shape: readonly number[],
): Promise<{ values: Float32Array; shape: number[] }> {
  const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'] });
  try {
    const [input] = session.inputNames;
    const [output] = session.outputNames;
    const result = await session.run({ [input]: new ort.Tensor('float32', x, [...shape]) });
    const y = result[output];
    return { values: y.data as Float32Array, shape: [...y.dims] };
  } finally {
    await session.release();
  }
}

/**
 * The median time of one inference of one sample (batch 1) in `model`, over `runs` runs after as many untimed
 * ones, in milliseconds: the latency a served model answers a request with. Samples are taken in turn from `x`
 * (`count` of one-sample `shape`).
 */
export async function onnxLatencyMs(
  ort: OnnxRuntime,
  model: Uint8Array,
  x: Float32Array,
  sampleShape: readonly number[],
  runs = 200,
): Promise<number> {
  const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'] });
  try {
    const [input] = session.inputNames;
    const size = sampleShape.reduce((a, b) => a * b, 1);
    const count = Math.max(1, Math.floor(x.length / size));
    const feed = (i: number) => ({
      [input]: new ort.Tensor('float32', x.subarray((i % count) * size, ((i % count) + 1) * size), [
        1,
        ...sampleShape,
      ]),
    });
    const times: number[] = [];
    for (let i = 0; i < 2 * runs; i++) {
      const t0 = performance.now();
      await session.run(feed(i));
      if (i >= runs) times.push(performance.now() - t0);
    }
    times.sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)];
  } finally {
    await session.release();
  }
}
