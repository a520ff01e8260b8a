/**
 * A job's models built in code, in the workers (src/models/model-module.ts): every rank builds a Net from its module
 * (its initial values are seeded); a layers model, whose initialisers are not, is saved by rank 0 alone, and every
 * rank trains that directory, whose name (a hash of the contents) rank 0 broadcasts. The launcher has saved the
 * layers models of a training job already; `prepare()` options come here first.
 */
import { basename, join } from 'node:path';
import type { ParsedJob } from '../config/schema.ts';
import { buildModels, builtModelsDir, saveByContent } from '../models/model-module.ts';
import type { WorkerContext } from './context.ts';

/** Bytes of a saved model's directory name: 16 hex digits. */
const NAME_BYTES = 8;

/** `job` with its models built in code built on every rank of `ctx.pg` (collective); `source` names it in errors. */
export function buildJobModels(ctx: WorkerContext, job: ParsedJob, source: string): Promise<ParsedJob> {
  const dir = builtModelsDir(ctx.jobDir);
  return buildModels(job, {
    source,
    place: async (model) => {
      const name = new Float32Array(NAME_BYTES);
      if (ctx.rank === 0) name.set(Buffer.from(basename(await saveByContent(model, dir)), 'hex'));
      await ctx.pg.broadcast(name, 0);
      return join(dir, Buffer.from(Uint8Array.from(name)).toString('hex'));
    },
  });
}
