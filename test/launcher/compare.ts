/**
 * What the launcher suites share: a run's summary, comparing trained weights, killing a worker in the middle of a
 * checkpoint save, and a small MNIST job that must be refused.
 */
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { JobFailedError } from '../../launcher/errors.ts';
import { launch } from '../../launcher/launch.ts';
import { ConfigError } from '../../src/config/errors.ts';
import type { RunSummary } from '../../src/trainer/summary.ts';

/**
 * The message `launch` refuses a small MNIST job with (an MLP 784-16-10, 5 steps) written to `dir`/`name`.yaml
 * with `lines` after its 6 common lines (so a line of `lines` is line 7 on): a ConfigError, before any worker.
 */
export function refusalOf(dir: string, name: string, lines: readonly string[]): string {
  const file = join(dir, `${name}.yaml`);
  const common = [
    `name: ${name}`,
    'data: {dataset: mnist}',
    'train_micro_batch_size_per_gpu: 16',
    'optimizer: {type: Adam, params: {lr: 0.001}}',
    'steps: 5',
    'model: {type: mlp, layers: [784, 16, 10]}',
  ];
  writeFileSync(file, [...common, ...lines, ''].join('\n'));
  try {
    launch(file, { nproc: 2 });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error(`${file} was not refused`);
}

/** Every report of a launch of `job` on `nproc` workers, in arrival order. */
export async function reportsOf(job: Record<string, unknown> | string, nproc: number): Promise<unknown[]> {
  const { reports } = await launch(job, { nproc }).result;
  return reports.map((r) => r.data);
}

/** The summary rank 0 reports at the end of a training job launched on `nproc` workers. */
export async function summaryOf(job: Record<string, unknown>, nproc: number): Promise<RunSummary> {
  const s = (await reportsOf(job, nproc)).find((d) => (d as { kind?: string }).kind === 'summary');
  if (!s) throw new Error('no summary report');
  return s as RunSummary;
}

/**
 * Worst elementwise difference relative to the tensor's largest magnitude, over all tensors: the float error of
 * summing the same gradients in another order (per-rank means, then the all-reduce average, vs one mean) is
 * relative to the sizes involved, not to each element (a bias that starts at 0 has no scale of its own).
 */
export function maxRelDiff(a: readonly Float32Array[], b: readonly Float32Array[]): number {
  expect(a.map((t) => t.length)).toEqual(b.map((t) => t.length));
  let worst = 0;
  a.forEach((ta, i) => {
    const tb = b[i];
    let scale = 0;
    for (const v of tb) scale = Math.max(scale, Math.abs(v));
    // An all-zero tensor (a bias at its start) has no scale: its differences count as they are, never as 0/0.
    const by = scale > 0 ? scale : 1;
    for (let j = 0; j < ta.length; j++) worst = Math.max(worst, Math.abs(ta[j] - tb[j]) / by);
  });
  return worst;
}

/** Bit-for-bit equality of every tensor (toEqual would accept -0 for 0 and is slow on big arrays). */
export function expectSameBits(a: readonly Float32Array[], b: readonly Float32Array[]): void {
  expect(a.length).toBe(b.length);
  a.forEach((t, i) => {
    expect(
      Buffer.from(t.buffer, t.byteOffset, t.byteLength).equals(
        Buffer.from(b[i].buffer, b[i].byteOffset, b[i].byteLength),
      ),
    ).toBe(true);
  });
}

/**
 * Launches `job` with checkpoints slowed down (each rank sleeps 1.5 s between writing its file under a temporary
 * name and renaming it) and SIGKILLs `rank` while its file of checkpoint `step` exists under that temporary name
 * only: mid-save. Expects the job to fail on that kill.
 */
export async function killMidSave(
  job: Record<string, unknown>,
  o: { nproc: number; rank: number; checkpointDir: string; step: number },
): Promise<void> {
  process.env['KD_TEST_CHECKPOINT_WRITE_DELAY_MS'] = '1500';
  let killed = false;
  try {
    const handle = launch(job, { nproc: o.nproc });
    const pids = new Map<number, number>();
    const stepDir = join(o.checkpointDir, `step-${o.step}`);
    const poll = setInterval(() => {
      if (killed || !pids.has(o.rank) || !existsSync(stepDir)) return;
      if (readdirSync(stepDir).some((f) => f.startsWith(`rank-${o.rank}.bin.tmp-`))) {
        killed = true;
        process.kill(pids.get(o.rank)!, 'SIGKILL');
      }
    }, 20);
    for await (const e of handle.events) if (e.type === 'worker-started') pids.set(e.rank, e.pid);
    clearInterval(poll);
    const err = await handle.result.catch((x: unknown) => x);
    expect(killed).toBe(true);
    expect(err).toBeInstanceOf(JobFailedError);
    expect((err as JobFailedError).failure?.signal).toBe('SIGKILL');
  } finally {
    delete process.env['KD_TEST_CHECKPOINT_WRITE_DELAY_MS'];
  }
}
