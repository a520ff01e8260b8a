/**
 * tfjs' quantized weight format on known values and through the CLI: `kd-launch export --quantize uint8` writes a
 * directory `tf.loadLayersModel` reads, a quarter of the bytes, whose weights are within half a step of the
 * model's, whose zeros (a pruned model's) stay exactly zero, and whose predictions are the model's.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { selectBackend } from '../../src/backend/select.ts';
import { tf } from '../../src/backend/tf.ts';
import type { ModelSpec } from '../../src/config/schema.ts';
import { buildNet, toLayersModel } from '../../src/models/build.ts';
import { saveNetModel } from '../../src/models/net-dir.ts';
import { loadModel } from '../../src/models/save.ts';
import { quantizeTfjsWeight } from '../../src/models/tfjs-quantized.ts';

await selectBackend('auto');
const CLI = fileURLToPath(new URL('../../bin/kd-launch.js', import.meta.url));
let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-tfjs-q-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("tfjs' quantized weights", () => {
  it('uint8: the range widened to hold 0, nudged so that 0 is exact', () => {
    const { ints, scale, min } = quantizeTfjsWeight(Float32Array.from([-1, 0, 0.5, 3]), 'uint8');
    expect(scale).toBe(Math.fround(4 / 255));
    // zero point round(63.75) = 64: −1 → 0, 0 → 64, 0.5 → 32 + 64, 3 → 191 + 64.
    expect(Array.from(ints)).toEqual([0, 64, 96, 255]);
    expect(64 * scale + min).toBe(0);
    const { ints: wide } = quantizeTfjsWeight(Float32Array.from([0.25, 0.5]), 'uint16');
    expect(wide).toBeInstanceOf(Uint16Array);
    expect(wide[1]).toBe(65535);
  });

  it('kd-launch export --quantize uint8: tf.loadLayersModel reads it; zeros stay zero; the same predictions', async () => {
    const spec: ModelSpec = { type: 'mlp', layers: [30, 24, 5], activation: 'relu', dropout: 0 };
    const values = buildNet(spec).init(5);
    for (let i = 0; i < values[0].length; i += 3) values[0][i] = 0;
    values[1].fill(0.05);
    const src = join(tmp, 'mlp');
    await saveNetModel(src, spec, values);
    const out = join(tmp, 'out');
    const r = spawnSync(process.execPath, [CLI, 'export', src, out, '--quantize', 'uint8'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/tfjs-uint8: tfjs model with uint8 weights \(\d+ bytes\)/);
    const quantized = await loadModel(join(out, 'tfjs-uint8'));
    const float = toLayersModel(spec, values);
    const q = quantized.getWeights().map((w) => w.dataSync() as Float32Array);
    q.forEach((w, t) => {
      const original = values[t];
      let lo = 0;
      let hi = 0;
      for (const v of original) {
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
      const step = (hi - lo) / 255;
      for (let i = 0; i < w.length; i++) {
        expect(Math.abs(w[i] - original[i])).toBeLessThanOrEqual(step / 2 + 1e-7);
        if (original[i] === 0) expect(w[i]).toBe(0);
      }
    });
    const x = tf.randomUniform([64, 30], 0, 1, 'float32', 9);
    const a = tf.argMax(float.predict(x) as tf.Tensor, -1).dataSync();
    const b = tf.argMax(quantized.predict(x) as tf.Tensor, -1).dataSync();
    expect(Array.from(a).filter((v, i) => v === b[i]).length).toBeGreaterThanOrEqual(62);
    x.dispose();
    float.dispose();
    quantized.dispose();
    // One byte per weight where fp32 takes four (model.json, the same topology, aside).
    const bin = (dir: string) => statSync(join(dir, 'weights.bin')).size;
    expect(bin(join(out, 'tfjs-uint8')) * 4).toBe(bin(src));
  });
});
