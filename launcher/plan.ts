import type { BatchPlan } from '../src/config/batch.ts';
import type { Program } from './worker-spec.ts';

/** Where every rank runs and what it runs: what `--dry-run` prints and what the agents carry out. */
export interface Plan {
  jobFile: string | undefined;
  jobName: string;
  program: Program['kind'];
  device: 'cpu' | 'gpu';
  backend: string;
  nnodes: number;
  nodeRank: number;
  nprocPerNode: number;
  world: number;
  master: string;
  ranks: { rank: number; node: number; localRank: number }[];
  batch: BatchPlan | undefined;
  schedule: string | undefined;
}

export function formatPlan(plan: Plan): string {
  const lines = [
    `job        ${plan.jobName}${plan.jobFile ? ` (${plan.jobFile})` : ''}: ${plan.program}`,
    `nodes      ${plan.nnodes} × ${plan.nprocPerNode} ${plan.device === 'gpu' ? 'GPU' : 'CPU'} workers = world ${plan.world}; this is node ${plan.nodeRank}`,
    `master     ${plan.master}`,
    `backend    ${plan.backend}`,
  ];
  if (plan.batch) {
    const b = plan.batch;
    lines.push(
      `batch      train_batch_size ${b.trainBatchSize} = micro ${b.microBatch} × accumulation ${b.accumulation} × data-parallel ${b.dataParallel}`,
    );
  }
  if (plan.schedule) lines.push(`schedule   ${plan.schedule}`);
  lines.push('ranks      rank  node  local');
  for (const r of plan.ranks) {
    lines.push(
      `           ${String(r.rank).padStart(4)}  ${String(r.node).padStart(4)}  ${String(r.localRank).padStart(5)}`,
    );
  }
  return lines.join('\n');
}
