/**
 * The 2-D layout of a pipeline-parallel job: world = P stages × D data-parallel replicas.
 *
 *   rank = stage × D + replica
 *
 * This is Megatron-LM's order (its pipeline groups are ranks {i, i + world/P, …}: the pipeline axis is the
 * outermost) and DeepSpeed's PipeDataParallelTopology (axes [pipe, data], data varying fastest). It keeps each
 * stage's data-parallel group on consecutive ranks, hence on one node when D divides the processes per node:
 * the gradient all-reduce, which moves every parameter of the stage, stays on the fast local link, and only the
 * activations, much smaller, cross nodes between stages.
 */
import type { StageRange } from './partition.ts';
import { idealBubble } from './schedule.ts';

export interface PipelineLayout {
  readonly stages: number;
  readonly replicas: number;
  readonly world: number;
  /** Per stage: the ranks holding it, in replica order (its data-parallel group). */
  readonly dataParallelGroups: readonly (readonly number[])[];
  /** Per replica: the ranks of one pipeline, in stage order (activations flow along it). */
  readonly pipelines: readonly (readonly number[])[];
}

export class LayoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LayoutError';
  }
}

export function rankOf(layout: Pick<PipelineLayout, 'replicas'>, stage: number, replica: number): number {
  return stage * layout.replicas + replica;
}

export function stageOf(layout: Pick<PipelineLayout, 'replicas'>, rank: number): number {
  return Math.floor(rank / layout.replicas);
}

export function replicaOf(layout: Pick<PipelineLayout, 'replicas'>, rank: number): number {
  return rank % layout.replicas;
}

export function pipelineLayout(world: number, stages: number): PipelineLayout {
  if (!Number.isInteger(stages) || stages < 1)
    throw new LayoutError(`pipeline.stages must be a positive integer, got ${stages}`);
  if (!Number.isInteger(world) || world < 1)
    throw new LayoutError(`the world size must be positive, got ${world}`);
  if (world % stages !== 0)
    throw new LayoutError(
      `a world of ${world} workers cannot hold ${stages} pipeline stages: the world must be stages × data-parallel replicas (a multiple of ${stages})`,
    );
  const replicas = world / stages;
  const ids = (n: number) => Array.from({ length: n }, (_, i) => i);
  return {
    stages,
    replicas,
    world,
    dataParallelGroups: ids(stages).map((s) => ids(replicas).map((d) => s * replicas + d)),
    pipelines: ids(replicas).map((d) => ids(stages).map((s) => s * replicas + d)),
  };
}

/** Everything `formatLayout` can show beside the rank table. */
export interface LayoutDescription {
  /** The stages' block ranges and sizes, from `partitionNet`. */
  readonly ranges?: readonly StageRange[];
  /** Block names, to show each stage's first and last. */
  readonly blockNames?: readonly string[];
  readonly schedule?: string;
  readonly microBatches?: number;
}

function pad(rows: string[][]): string[] {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((v, c) => (c === r.length - 1 ? v : v.padEnd(widths[c]))).join('  '));
}

/**
 * The layout as `--dry-run` prints it: one row per stage (its blocks, parameters and data-parallel group), then
 * the pipelines.
 */
export function formatLayout(layout: PipelineLayout, d: LayoutDescription = {}): string {
  const head = [
    `pipeline   ${layout.stages} stages × ${layout.replicas} data-parallel = world ${layout.world}`,
  ];
  if (d.schedule !== undefined || d.microBatches !== undefined) {
    const parts = [d.schedule, d.microBatches !== undefined ? `${d.microBatches} micro-batches` : undefined];
    let line = `schedule   ${parts.filter((p) => p !== undefined).join(', ')}`;
    if (d.microBatches !== undefined) {
      line += `; ideal bubble ${(100 * idealBubble(layout.stages, d.microBatches)).toFixed(1)}%`;
    }
    head.push(line);
  }
  const rows: string[][] = [['stage', 'blocks', 'params', 'ranks (data-parallel group)']];
  for (let s = 0; s < layout.stages; s++) {
    const r = d.ranges?.[s];
    let blocks = '';
    if (r) {
      blocks = r.to - r.from === 1 ? `${r.from}` : `${r.from}-${r.to - 1}`;
      const first = d.blockNames?.[r.from];
      const last = d.blockNames?.[r.to - 1];
      if (first !== undefined) blocks += first === last ? ` (${first})` : ` (${first}…${last})`;
    }
    rows.push([
      String(s),
      blocks,
      r ? r.params.toLocaleString('en-US') : '',
      layout.dataParallelGroups[s].join(' '),
    ]);
  }
  const table = pad(rows).map((l) => `           ${l}`.trimEnd());
  const pipes = layout.pipelines.map((p, d) => `replica ${d}: ${p.join(' → ')}`);
  return [...head, ...table, `pipelines  ${pipes.join('; ')}`].join('\n');
}
