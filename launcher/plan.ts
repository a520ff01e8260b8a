import { availableParallelism } from 'node:os';
import { type BatchPlan, resumeNote } from '../src/config/batch.ts';
import type { MemoryReport } from '../src/engine/zero.ts';
import { describeParts, gib } from './memory-text.ts';
import type { RunOutputs } from './output-paths.ts';
import type { ResourcePlan } from './resources.ts';
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
  /** Multi-stage jobs: one line per stage (model, objective, length, seeds), run in this order. */
  stages?: string[];
  /** Training jobs: model states per rank at every ZeRO stage, estimated from the model's size. */
  memory?: { stage: number; parameters: number; perStage: MemoryReport[] };
  /** Training jobs: each worker's estimated peak and what this node has for them (launcher/resources.ts). */
  resources?: ResourcePlan;
  /** Pipelined training jobs: the rank layout and the stage partition, as `formatLayout` prints them. */
  pipeline?: string;
  /** With --max-restarts: how often the job may start over, and from where. */
  restarts?: string;
  /** Where the run writes (not for benchmarks). */
  outputs?: RunOutputs;
  /** Training on the wasm/cpu backends without the BLAS kernels: what it costs and how to get them. */
  fastPath?: string;
  /** A job that resumes from a checkpoint at its last step: nothing is left to train, and nothing starts. */
  finished?: { checkpoint: string; step: number; totalSteps: number };
  /** CPU workers whose threads outnumber this node's cores: they will time-share them (a warning, not an error). */
  oversubscribed?: Oversubscribed;
}

type Oversubscribed = { threadsPerWorker: number; cores: number };

/** The plan with `oversubscribed` set where this node's CPU workers and their BLAS threads exceed its cores. */
export function withCoreCheck(plan: Plan, threadsPerWorker: number, cores = availableParallelism()): Plan {
  if (plan.device !== 'cpu' || plan.nprocPerNode * threadsPerWorker <= cores) return plan;
  return { ...plan, oversubscribed: { threadsPerWorker, cores } };
}

function formatOversubscribed(workers: number, { threadsPerWorker, cores }: Oversubscribed): string {
  const threads = threadsPerWorker > 1 ? ` × ${threadsPerWorker} BLAS threads` : '';
  return `warning    ${workers} CPU workers${threads} on this node's ${cores} cores: they will time-share the cores, and every step will be slower than with ${cores} or fewer`;
}

/** Where the run's files go: the run directory, then what the job places elsewhere or leaves out. */
function formatOutputs(o: RunOutputs, program: Plan['program'], staged: boolean): string[] {
  const lines = [`run dir    ${o.runDir}${program === 'train' ? ' (metrics.jsonl, tb/, report.html)' : ''}`];
  if (program === 'train')
    lines.push(
      o.model === undefined
        ? 'model      not saved (save: false)'
        : `model      ${o.model}${staged ? ' (one directory per stage and seed)' : ''}`,
    );
  if (o.checkpoints) lines.push(`checkpoint ${o.checkpoints}`);
  if (o.trace) lines.push(`trace      ${o.trace}`);
  return lines;
}

const MiB = (bytes: number) => `${(bytes / 2 ** 20).toFixed(2)} MiB`;

export function formatPlan(plan: Plan): string {
  const lines = [
    `job        ${plan.jobName}${plan.jobFile ? ` (${plan.jobFile})` : ''}: ${plan.program}`,
    `nodes      ${plan.nnodes} × ${plan.nprocPerNode} ${plan.device === 'gpu' ? 'GPU' : 'CPU'} workers = world ${plan.world}; this is node ${plan.nodeRank}`,
    ...(plan.oversubscribed ? [formatOversubscribed(plan.nprocPerNode, plan.oversubscribed)] : []),
    `master     ${plan.master}`,
    `backend    ${plan.backend}`,
  ];
  if (plan.batch) {
    const b = plan.batch;
    lines.push(
      `batch      train_batch_size ${b.trainBatchSize} = micro ${b.microBatch} × accumulation ${b.accumulation} × data-parallel ${b.dataParallel}`,
    );
    const note = resumeNote(b);
    if (note) lines.push(`resume     ${note}`);
  }
  if (plan.schedule) lines.push(`schedule   ${plan.schedule}`);
  if (plan.restarts) lines.push(`restarts   ${plan.restarts}`);
  if (plan.outputs) lines.push(...formatOutputs(plan.outputs, plan.program, plan.stages !== undefined));
  if (plan.fastPath) lines.push(`warning    ${plan.fastPath}`);
  if (plan.finished) {
    const f = plan.finished;
    lines.push(
      `finished   nothing to train: ${f.checkpoint} is at step ${f.step} of ${f.totalSteps}${plan.outputs?.model ? `; the model is in ${plan.outputs.model}` : ''}. To train again: resume: never (or --set resume=never), or another --run-dir`,
    );
  }
  plan.stages?.forEach((line, i) => {
    lines.push(`${i === 0 ? 'stages    ' : '          '} ${i + 1}. ${line}`);
  });
  if (plan.memory) {
    const m = plan.memory;
    lines.push(
      `memory     per rank, ${m.parameters} parameters over ${plan.world} ranks (fp32; * = this job's zero_optimization.stage)`,
    );
    const rows = [['stage', 'params', 'grads', 'optimizer', 'gathered', 'total']];
    m.perStage.forEach((r, stage) => {
      rows.push([
        `${stage}${stage === m.stage ? '*' : ''}`,
        MiB(r.params),
        MiB(r.grads),
        MiB(r.optimizer),
        MiB(r.gatheredPeak),
        MiB(r.params + r.grads + r.optimizer + r.gatheredPeak),
      ]);
    });
    const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
    for (const r of rows) lines.push(`           ${r.map((v, c) => v.padStart(widths[c])).join('  ')}`);
  }
  if (plan.resources) {
    const r = plan.resources;
    lines.push(
      `workers    ~${gib(r.perWorker.total)} each (${describeParts(r.perWorker)}) × ${r.workers} on this node = ${gib(r.perWorker.total * r.workers)} of ${gib(r.node.available)} available (${r.node.source})`,
    );
  }
  if (plan.pipeline) lines.push(plan.pipeline);
  lines.push('ranks      rank  node  local');
  for (const r of plan.ranks) {
    lines.push(
      `           ${String(r.rank).padStart(4)}  ${String(r.node).padStart(4)}  ${String(r.localRank).padStart(5)}`,
    );
  }
  return lines.join('\n');
}
