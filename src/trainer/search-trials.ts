/**
 * A search stage's trials table (src/trainer/search.ts runs the trials): the rows the report carries, and how
 * the text and HTML tables read them. Apart from the search itself so that the renderers load no trainer.
 */

/** One candidate's line of the trials table. */
export interface SearchTrial {
  readonly name: string;
  readonly parameters: number;
  /** Its held-out accuracy after each rung it trained in, and that rung's steps. */
  readonly scores: { readonly steps: number; readonly accuracy: number }[];
  readonly winner: boolean;
}

/** The steps of each rung the trials ran, in order: the columns of the trials table. */
export function rungsOf(trials: readonly SearchTrial[]): number[] {
  return [...new Set(trials.flatMap((t) => t.scores.map((s) => s.steps)))].sort((a, b) => a - b);
}

/** A trial's held-out accuracy after the rung of `steps`; undefined where it was dropped before that rung. */
export function accuracyAfter(trial: SearchTrial, steps: number): number | undefined {
  return trial.scores.find((s) => s.steps === steps)?.accuracy;
}
