/**
 * prepare() with an objective of the user's own, over real worker processes: label-smoothed cross-entropy at
 * smoothing 0 trains exactly as the default objective (cross-entropy) does, and at smoothing 0.5 differently.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { loadNetModel } from '../../src/models/net-dir.ts';
import { reportsOf } from './compare.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SCRIPT = join(ROOT, 'test', 'fixtures', 'prepare-objective.worker.ts');
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Runs the fixture in a job directory of its own (its `save('out')` lands there); the losses and weights. */
async function run(smoothing: number | undefined) {
  const dir = mkdtempSync(join(ROOT, 'test', 'fixtures', '.prepare-'));
  dirs.push(dir);
  const file = join(dir, 'job.json');
  writeFileSync(file, JSON.stringify({ name: 'prepare-objective', script: SCRIPT, args: { smoothing } }));
  const [report] = (await reportsOf(file, 2)) as { losses: number[] }[];
  return { losses: report.losses, weights: loadNetModel(join(dir, 'out')).values };
}

describe('prepare() with an objective of your own', () => {
  it('is the objective the steps minimise', async () => {
    const plain = await run(undefined);
    const zero = await run(0);
    const half = await run(0.5);
    expect(plain.losses).toHaveLength(5);
    // Smoothing 0 is cross-entropy: the same losses and the same weights, bit for bit.
    expect(zero.losses).toEqual(plain.losses);
    expect(zero.weights.map((w) => Array.from(w))).toEqual(plain.weights.map((w) => Array.from(w)));
    // Smoothing 0.5 is another loss: another value at the first step (same weights, softer targets), other weights.
    expect(half.losses[0]).not.toBe(plain.losses[0]);
    expect(half.weights[0]).not.toEqual(plain.weights[0]);
  });
});
