/**
 * A pipelined training job (or job stage) checked against its model and world before any worker starts, and described for
 * `--dry-run`: the rank layout (stage × data-parallel replica) and each stage's blocks.
 */
import { ConfigError, type ConfigIssue } from '../src/config/errors.ts';
import { fieldPosition } from '../src/config/load.ts';
import type { JobBase, ParsedJob } from '../src/config/schema.ts';
import { buildNet } from '../src/models/build.ts';
import { formatLayout, pipelineLayout } from '../src/pipeline/layout.ts';
import { PartitionError, partitionNet } from '../src/pipeline/partition.ts';

/** What refuses a pipelined job (or job stage) outright: paths relative to that job's keys. */
export function pipelineIssues(job: JobBase): Omit<ConfigIssue, 'line'>[] {
  const p = job.pipeline;
  if (!p || !job.model) return [];
  const issues: Omit<ConfigIssue, 'line'>[] = [];
  if (job.zero_optimization.stage === 3) {
    issues.push({
      path: 'zero_optimization.stage',
      message:
        'ZeRO stage 3 does not combine with pipeline parallelism (as in DeepSpeed): use stage 0, 1 or 2 inside the pipeline stages',
    });
  }
  if ((job.distillation?.intermediate_matches.length ?? 0) > 0) {
    issues.push({
      path: 'distillation.intermediate_matches',
      message:
        'a pipelined student computes its loss on the last pipeline stage, which holds only its own blocks: use soft labels (logits) alone, or train without pipeline',
    });
  }
  try {
    partitionNet(buildNet(job.model), p.stages, p.partition);
  } catch (err) {
    if (!(err instanceof PartitionError)) throw err;
    issues.push({
      path: Array.isArray(p.partition) ? 'pipeline.partition' : 'pipeline.stages',
      message: err.message,
    });
  }
  return issues;
}

/** The layout text of a job with `pipeline:`, undefined for other jobs; throws a ConfigError naming the fields. */
export function pipelinePlan(job: ParsedJob, world: number, file: string | undefined): string | undefined {
  const p = job.pipeline;
  if (!p || !job.model) return undefined;
  const issues = pipelineIssues(job);
  if (issues.length > 0) {
    throw new ConfigError(
      file ?? '<job>',
      issues.map((i) => ({ ...i, ...fieldPosition(file, i.path) })),
    );
  }
  const net = buildNet(job.model);
  return formatLayout(pipelineLayout(world, p.stages), {
    ranges: partitionNet(net, p.stages, p.partition),
    blockNames: net.blocks.map((b) => b.name),
    schedule: p.schedule,
    microBatches: p.micro_batches,
  });
}
