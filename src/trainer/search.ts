/**
 * A student search (src/config/search.ts): the candidates trained by successive halving on the stage's objective,
 * each trial a whole training run of the workers on the training set less a held-out share, scored by its accuracy
 * on that share. Every rank runs the same trials in the same order and ranks them on the same all-reduced
 * accuracies, so all agree on the winner without another message.
 */
import type { BatchPlan } from '../config/batch.ts';
import type { JobBase, ModelSpec } from '../config/schema.ts';
import type { TeacherSpec } from '../config/teachers.ts';
import type { LoadedData } from '../data/load.ts';
import { splitByFraction } from '../data/split.ts';
import { type Candidate, isSearchable, searchCandidates } from '../models/search-space.ts';
import type { WorkerContext } from './context.ts';
import type { RunLabel } from './records.ts';
import type { SearchTrial } from './search-trials.ts';
import { trainModel } from './train.ts';

export interface SearchOptions {
  /** The stage's run: its model the base shape, its objective and optimizer every trial's. */
  readonly job: JobBase;
  readonly batch: BatchPlan;
  readonly data: LoadedData;
  readonly cacheDir: string;
  readonly runKey: string;
  readonly stageModelDir: (t: Extract<TeacherSpec, { stage: string }>) => string;
  readonly label: RunLabel;
}

export interface SearchResult {
  readonly winner: ModelSpec;
  readonly trials: SearchTrial[];
}

export async function searchStudent(ctx: WorkerContext, o: SearchOptions): Promise<SearchResult> {
  const { job } = o;
  const search = job.search;
  const base = job.model;
  if (!search || !base || !isSearchable(base))
    throw new Error('a search stage needs a search and an mlp or transformer');
  const candidates = searchCandidates(base, search, job.seed);
  if (candidates.length === 0) {
    throw new Error(`no candidate of the search space has at most ${search.max_parameters} parameters`);
  }
  const split = splitByFraction(
    { test_fraction: search.validation_fraction, split_seed: job.seed },
    'the training set',
    o.data.train,
  );
  const data: LoadedData = { ...o.data, train: split.train, test: split.test };
  const log0 = (line: string) => {
    if (ctx.rank === 0) ctx.log(line);
  };
  log0(
    `search: ${candidates.length} candidates of at most ${search.max_parameters} parameters, ${split.train.length} training samples, ${split.test.length} held out to score them`,
  );
  const scores = candidates.map(() => [] as { steps: number; accuracy: number }[]);
  let alive = candidates.map((_, i) => i);
  for (let steps = search.min_steps; ; steps *= search.eta) {
    for (const i of alive) {
      const accuracy = await trial(ctx, o, data, candidates[i], i, steps);
      scores[i].push({ steps, accuracy });
      log0(
        `search: trial ${i + 1} (${candidates[i].name}): ${(accuracy * 100).toFixed(2)} % held out after ${steps} steps`,
      );
    }
    alive = ranked(alive, scores, candidates).slice(0, Math.ceil(alive.length / search.eta));
    if (alive.length <= 1) break;
  }
  const winner = alive[0];
  log0(`search: the winner is trial ${winner + 1}, ${candidates[winner].name}`);
  return {
    winner: candidates[winner].spec,
    trials: candidates.map((c, i) => ({
      name: c.name,
      parameters: c.parameters,
      scores: scores[i],
      winner: i === winner,
    })),
  };
}

/** `alive` best first: by the last rung's accuracy, then fewer parameters, then the order drawn. */
function ranked(
  alive: readonly number[],
  scores: readonly { accuracy: number }[][],
  candidates: readonly Candidate[],
): number[] {
  const last = (i: number) => scores[i][scores[i].length - 1].accuracy;
  return [...alive].sort(
    (a, b) => last(b) - last(a) || candidates[a].parameters - candidates[b].parameters || a - b,
  );
}

/** One trial: the candidate trained `steps` steps from its seed's init, nothing written, scored on held-out data. */
async function trial(
  ctx: WorkerContext,
  o: SearchOptions,
  data: LoadedData,
  candidate: Candidate,
  index: number,
  steps: number,
): Promise<number> {
  const job: JobBase = {
    ...o.job,
    model: candidate.spec,
    search: undefined,
    steps,
    epochs: undefined,
    // Scored once, at the end of the trial.
    eval: { every_steps: 0 },
    onnx: false,
    save: false,
    output_dir: undefined,
    checkpoint: undefined,
    resume: undefined,
  };
  const summary = await trainModel(ctx, {
    job,
    batch: o.batch,
    outputDir: undefined,
    checkpointDir: undefined,
    cacheDir: o.cacheDir,
    runKey: `${o.runKey}-trial-${index + 1}`,
    stageModelDir: o.stageModelDir,
    data,
    label: { ...o.label, stage: `${o.label.stage}/trial-${index + 1}` },
  });
  return summary.test_accuracy;
}
