/**
 * ZeRO over real worker processes: stages 1–3 against stage 0 for Adam, AdamW and LAMB at world 2 and 3 (clipping
 * on, accumulation 2); every rank's measured memory against total / N; and resuming a checkpoint on another world
 * size, at every stage, against continuing at the old one.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportModel } from '../../launcher/export.ts';
import { launch } from '../../launcher/launch.ts';
import { consolidate, readAllRanks } from '../../src/engine/checkpoint.ts';
import type { MemoryReport } from '../../src/engine/zero.ts';
import { modelDirHandler } from '../../src/models/save.ts';
import type { RunSummary } from '../../src/trainer/summary.ts';

const FIXTURE = fileURLToPath(new URL('../fixtures/zero.yaml', import.meta.url));

interface ZeroReport {
  kind: 'zero';
  optimizer: string;
  stage: number;
  /** Stage 3 gathered block by block (`stage3_max_reuse_distance: 0`) rather than whole. */
  blockwise: boolean;
  rank: number;
  memory: MemoryReport;
  parameters: number;
  shard: number;
  largestPair: number;
  params: number[];
  slots: [number, number][];
}

/** ‖a − b‖ / ‖b‖ per tensor (element-wise relative error is meaningless for Adam near zero gradients). */
function worstTensorError(a: number[], b: number[], slots: [number, number][]): number {
  let worst = 0;
  for (const [offset, size] of slots) {
    let diff = 0;
    let norm = 0;
    for (let i = offset; i < offset + size; i++) {
      diff += (a[i] - b[i]) ** 2;
      norm += b[i] ** 2;
    }
    worst = Math.max(worst, Math.sqrt(diff / norm));
  }
  return worst;
}

describe.each([2, 3])('ZeRO stages over %i worker processes', (world) => {
  let reports: ZeroReport[];
  beforeAll(async () => {
    const result = await launch(FIXTURE, { nproc: world }).result;
    reports = result.reports.map((r) => r.data as ZeroReport).filter((d) => d.kind === 'zero');
  }, 180_000);

  it.each(['Adam', 'AdamW', 'Lamb'])(
    '%s: stages 1, 2 and 3 (gathered whole and block by block) end where stage 0 ends (1e-5 relative)',
    (opt) => {
      const of = (stage: number, blockwise = false) => {
        const r = reports.find(
          (x) => x.optimizer === opt && x.stage === stage && x.blockwise === blockwise && x.rank === 0,
        );
        if (!r) throw new Error(`no report for ${opt} stage ${stage}`);
        return r;
      };
      const ref = of(0);
      for (const [stage, blockwise] of [
        [1, false],
        [2, false],
        [3, false],
        [3, true],
      ] as const) {
        expect(
          worstTensorError(of(stage, blockwise).params, ref.params, ref.slots),
          `stage ${stage}${blockwise ? ' block by block' : ''}`,
        ).toBeLessThanOrEqual(1e-5);
      }
    },
  );

  it('each rank measures total / N (plus one alignment pad) for what its stage shards', () => {
    const pad = 16 * 4;
    for (const r of reports.filter((x) => x.optimizer === 'Adam')) {
      const total = r.parameters * 4;
      const perRank = total / world + pad;
      const m = r.memory;
      const where = `rank ${r.rank} stage ${r.stage}`;
      // Adam keeps two buffers (m and v) per owned element.
      if (r.stage >= 1) expect(m.optimizer, where).toBeLessThanOrEqual(2 * perRank);
      else expect(m.optimizer, where).toBe(2 * total);
      if (r.stage >= 2) expect(m.grads, where).toBeLessThanOrEqual(perRank);
      else expect(m.grads, where).toBeGreaterThanOrEqual(total);
      if (r.stage === 3) {
        expect(m.params, where).toBeLessThanOrEqual(perRank);
        if (!r.blockwise) expect(m.gatheredPeak, where).toBe(total);
        else {
          expect(m.gatheredPeak, where).toBeGreaterThan(0);
          // The block computing and the next one, prefetched.
          expect(m.gatheredPeak, where).toBeLessThanOrEqual(r.largestPair * 4);
        }
      } else expect(m.params, where).toBeGreaterThanOrEqual(total);
    }
    expect(reports.filter((x) => x.optimizer === 'Adam').length).toBe(5 * world);
  });
});

describe('resuming a ZeRO checkpoint on another world size', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'kd-zero-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  const job = (stage: number, dir: string, resume?: string) => ({
    name: 'zero-resume',
    backend: 'cpu',
    seed: 5,
    model: { type: 'mlp', layers: [784, 16, 10], dropout: 0 },
    data: { dataset: 'mnist' },
    // 12 divides by 1, 2 and 3 ranks; each world's sampler then has 666 steps per epoch.
    train_batch_size: 12,
    gradient_accumulation_steps: 1,
    optimizer: { type: 'AdamW', params: { lr: 0.003, weight_decay: 0.01 } },
    gradient_clipping: 1,
    zero_optimization: { stage },
    steps: 6,
    steps_per_print: 1000,
    checkpoint: { dir, every_steps: 5 },
    ...(resume ? { resume } : {}),
  });

  async function finalLoss(j: Record<string, unknown>, nproc: number): Promise<number> {
    const { reports } = await launch(j, { nproc }).result;
    const s = reports.map((r) => r.data as RunSummary).find((d) => d.kind === 'summary');
    if (!s) throw new Error('no summary');
    return s.final_loss;
  }

  it.each([0, 1, 2, 3])(
    'stage %i: saved at 2 ranks, exported as one model, resumed at 3 (and at 1 for stages 0 and 3) with the loss of continuing at 2 (1e-5)',
    async (stage) => {
      const dir = join(tmp, `stage-${stage}`);
      // 6 steps at world 2, with a checkpoint after step 5: its last loss is the continuing run's step 6.
      const continued = await finalLoss(job(stage, dir), 2);
      // Export consolidates the ranks' shards into one tfjs model, whatever the stage.
      const exported = await exportModel(join(dir, 'step-5'), join(tmp, `export-${stage}`));
      const model = await tf.loadLayersModel(modelDirHandler(exported.outDir));
      const weights = model.getWeights().map((w) => w.dataSync() as Float32Array);
      const full = consolidate(readAllRanks(join(dir, 'step-5'))).params;
      expect(Float32Array.from(weights.flatMap((w) => Array.from(w)))).toEqual(full);
      model.dispose();
      // World 1 for the stages whose shards are all or nothing; 3 for every stage (uneven shards).
      for (const nproc of stage === 0 || stage === 3 ? [3, 1] : [3]) {
        const resumed = await finalLoss(
          job(stage, join(tmp, `out-${stage}-${nproc}`), join(dir, 'step-5')),
          nproc,
        );
        expect(Math.abs(resumed - continued) / continued, `world ${nproc}`).toBeLessThanOrEqual(1e-5);
      }
    },
    120_000,
  );
});
