/**
 * The launcher's child process that plans a job with a model built in code (`model: {module}`): `launch()` plans
 * at once, while a module's export is awaited, so this process builds the job's models (a layers model saved under
 * the job's `.kd-launch/models/`, a Net built for the checks), then plans the job as the launcher plans any other,
 * and answers on its fd 3 with the plan or the error. Started by launch(), never by users.
 */
import { readFileSync, writeSync } from 'node:fs';
import { ConfigError } from '../src/config/errors.ts';
import { isStageModelRef, type StageModel } from '../src/config/job-stages.ts';
import { fieldPosition } from '../src/config/load.ts';
import type { ParsedJob } from '../src/config/schema.ts';
import { buildModels, builtModelsDir, saveByContent } from '../src/models/model-module.ts';
import { LaunchError } from './errors.ts';
import { type JobToPlan, type PlanReply, planJob } from './launch.ts';

/** The model fields (`model`, `stages.N.model`) whose module gave a layers model, now a model directory. */
function placedModels(before: ParsedJob, after: ParsedJob): string[] {
  const fields: { at: string; was?: StageModel | undefined; is?: StageModel | undefined }[] = [
    { at: 'model', was: before.model, is: after.model },
  ];
  before.stages?.forEach((s, i) => {
    fields.push({ at: `stages.${i}.model`, was: s.model, is: after.stages?.[i]?.model });
  });
  const typeOf = (m: StageModel | undefined) => (isStageModelRef(m) ? undefined : m?.type);
  return fields.filter((f) => typeOf(f.was) === 'module' && typeOf(f.is) === 'tfjs').map((f) => f.at);
}

/** The checks of a model directory name its `path`; a layers model built in code is the user's `export`. */
function inUserFields(err: ConfigError, placed: readonly string[], file: string | undefined): ConfigError {
  return new ConfigError(
    err.file,
    err.issues.map((i) => {
      const at = placed.find((p) => i.path === `${p}.path`);
      if (at === undefined) return i;
      const path = `${at}.export`;
      return { ...i, path, ...fieldPosition(file, path) };
    }),
  );
}

async function plan(toPlan: JobToPlan): Promise<PlanReply> {
  let placed: string[] = [];
  try {
    const job = await buildModels(toPlan.job, {
      place: (model) => saveByContent(model, builtModelsDir(toPlan.jobDir)),
      source: toPlan.file ?? '<job>',
      file: toPlan.file,
    });
    placed = placedModels(toPlan.job, job);
    return { prepared: planJob({ ...toPlan, job }) };
  } catch (err) {
    if (err instanceof ConfigError) {
      const { file, issues } = inUserFields(err, placed, toPlan.file);
      return { configError: { file, issues: [...issues] } };
    }
    if (err instanceof LaunchError) return { launchError: err.message };
    return { error: err instanceof Error ? (err.stack ?? err.message) : String(err) };
  }
}

const reply = await plan(JSON.parse(readFileSync(0, 'utf8')) as JobToPlan);
writeSync(3, JSON.stringify(reply));
// A user's module may leave timers or handles open: this process's work is done.
process.exit(0);
