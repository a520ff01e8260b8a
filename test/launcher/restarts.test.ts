/**
 * Elastic restarts (`--max-restarts`): a worker killed with -9 at three random steps, and the job still ends on the
 * bits of an uninterrupted run — the launcher starts every worker again, and training resumes from the newest
 * checkpoint that verifies, passing over one the kill left half-written. At ZeRO 0, ZeRO 2 and pipelined.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobFailedError } from '../../launcher/errors.ts';
import type { LaunchEvent } from '../../launcher/events.ts';
import { launch } from '../../launcher/launch.ts';
import { Rng } from '../../src/base/rng.ts';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-restarts-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

type Job = Record<string, unknown>;
const STEPS = 36;

/** Steps of some tens of milliseconds (cpu backend), so that a kill lands mid-run; dropout, so RNG state matters. */
function job(over: Job): Job {
  return {
    name: 'restart-test',
    backend: 'cpu',
    seed: 3,
    model: { type: 'mlp', layers: [784, 256, 256, 10], dropout: 0.2 },
    data: { dataset: 'mnist', shuffle: true },
    optimizer: { type: 'Adam', params: { lr: 0.001, weight_decay: 0 } },
    train_micro_batch_size_per_gpu: 32,
    steps: STEPS,
    steps_per_print: 1000,
    ...over,
  };
}

/** sha256 of every file the export wrote, by name. */
function exportHashes(dir: string): Record<string, string> {
  return Object.fromEntries(
    readdirSync(dir)
      .sort()
      .map((f) => [
        f,
        createHash('sha256')
          .update(readFileSync(join(dir, f)))
          .digest('hex'),
      ]),
  );
}

/**
 * Runs `j` with up to 3 restarts, SIGKILLing a random worker once rank 0 reports each of three random steps;
 * returns the events seen.
 */
async function runWithKills(j: Job, nproc: number, seed: number): Promise<LaunchEvent[]> {
  const rng = new Rng(seed);
  const targets = [0, 1, 2].map((k) => 3 + k * 11 + rng.nextInt(10)).sort((a, b) => a - b);
  const handle = launch(j, { nproc, maxRestarts: 3 });
  const events: LaunchEvent[] = [];
  const pids = new Map<number, number>();
  for await (const e of handle.events) {
    events.push(e);
    if (e.type === 'worker-started') pids.set(e.rank, e.pid);
    if (e.type === 'progress' && e.rank === 0 && targets.length > 0 && e.step >= targets[0]) {
      targets.shift();
      const victim = rng.nextInt(nproc);
      process.kill(pids.get(victim) as number, 'SIGKILL');
      pids.clear(); // the next round's workers report themselves anew
    }
  }
  await handle.result;
  expect(targets).toEqual([]);
  return events;
}

describe('--max-restarts', () => {
  const cases: { name: string; over: Job; nproc: number }[] = [
    { name: 'ZeRO 0', over: {}, nproc: 2 },
    { name: 'ZeRO 2', over: { zero_optimization: { stage: 2 } }, nproc: 2 },
    {
      name: 'pipelined (2 stages)',
      over: {
        pipeline: { stages: 2, micro_batches: 2, schedule: '1f1b' },
        train_micro_batch_size_per_gpu: 16,
      },
      nproc: 2,
    },
  ];
  cases.forEach(({ name, over, nproc }, i) => {
    it(`${name}: kill -9 of a random worker at three random steps; the export is byte-identical to an uninterrupted run`, async () => {
      const straight = join(tmp, `straight-${i}`);
      await launch(job({ ...over, output_dir: straight }), { nproc }).result;

      const out = join(tmp, `restarted-${i}`);
      const ckpt = join(tmp, `ckpt-${i}`);
      const events = await runWithKills(
        job({ ...over, output_dir: out, checkpoint: { dir: ckpt, every_steps: 4, keep: 2 } }),
        nproc,
        1000 + i,
      );
      const restarts = events.filter((e) => e.type === 'restart');
      expect(restarts.map((e) => e.type === 'restart' && e.round)).toEqual([1, 2, 3]);
      for (const r of restarts) if (r.type === 'restart') expect(r.reason).toMatch(/was killed by SIGKILL/);
      // Every restarted round resumed from a checkpoint (or, killed before the first one, started over).
      const resumed = events.filter(
        (e) => e.type === 'log' && /resumed from .*step-\d+ at step \d+/.test(e.line),
      );
      expect(resumed.length).toBeGreaterThan(0);
      expect(exportHashes(out)).toEqual(exportHashes(straight));
    });
  });

  it('a failure with no restart left ends the job, saying so', async () => {
    const handle = launch(job({ steps: 400 }), { nproc: 2, maxRestarts: 1 });
    let kills = 0;
    for await (const e of handle.events)
      if (e.type === 'worker-started' && e.rank === 1 && kills < 2) {
        kills++;
        process.kill(e.pid, 'SIGKILL');
      }
    const err = await handle.result.catch((x: unknown) => x);
    expect(err).toBeInstanceOf(JobFailedError);
    expect((err as Error).message).toMatch(
      /rank 1 \(node 0\) was killed by SIGKILL.*; no restart left \(--max-restarts 1\)/,
    );
  });
});
