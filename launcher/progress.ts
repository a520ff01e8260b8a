import type { RunLabel, StepRecord } from '../src/trainer/records.ts';

/**
 * One progress bar: a job stage (its seeds, one after the other), the whole job of a single-run training, or a
 * user script's `ctx.progress` (rank 0's).
 */
export interface Bar {
  /** What the bar counts: the stage's name, or `train` / `progress` for a job without stages. */
  readonly name: string;
  /** The seeds of the stage that have started, in order; the last one is running (or the last that ran). */
  readonly seeds: number[];
  step: number;
  total: number;
  epoch: number | undefined;
  epochs: number | undefined;
  loss: number | undefined;
  samplesPerS: number | undefined;
  /** A script's own progress metrics beyond loss and samples_per_s, as it named them. */
  metrics: [string, number][];
  /** The run this bar shows (a stage's seed) ended. */
  done: boolean;
  /** When the bar's first step came, in ms: its elapsed time covers every seed of the stage. */
  readonly startMs: number;
  /** The current run's first step seen and when: the ETA is the run's mean pace since. */
  anchor: { step: number; ms: number };
  nowMs: number;
}

/** The bars of a job in the order they started, updated from the events that carry progress. */
export class ProgressTracker {
  readonly #bars = new Map<string, Bar>();

  get bars(): Bar[] {
    return [...this.#bars.values()];
  }

  /** A training step (rank 0's record); a stage's next seed restarts its bar's count. */
  step(r: StepRecord, nowMs: number): Bar {
    const bar = this.#barOf(r.label?.stage ?? 'train', r.step, nowMs);
    const seed = r.label?.seed;
    if (seed !== undefined && bar.seeds.at(-1) !== seed) {
      if (bar.seeds.length > 0) bar.anchor = { step: r.step, ms: nowMs };
      bar.seeds.push(seed);
    }
    this.#finishOthers(bar);
    Object.assign(bar, {
      step: r.step,
      total: r.total_steps,
      epoch: r.epoch,
      epochs: r.epochs,
      loss: r.loss,
      samplesPerS: r.samples_per_s,
      done: r.step >= r.total_steps,
      nowMs,
    });
    return bar;
  }

  /** A script's `ctx.progress`: its metrics as it sent them, loss and samples_per_s shown as a step's. */
  progress(step: number, total: number, metrics: Record<string, number>, nowMs: number): Bar {
    const bar = this.#barOf('progress', step, nowMs);
    const { loss, samples_per_s, ...rest } = metrics;
    Object.assign(bar, {
      step,
      total,
      loss,
      samplesPerS: samples_per_s,
      metrics: Object.entries(rest),
      done: step >= total,
      nowMs,
    });
    return bar;
  }

  /** A run of a stage ended: its bar is complete until the stage's next seed starts. */
  finish(label: RunLabel, nowMs: number): Bar | undefined {
    const bar = this.#bars.get(label.stage);
    if (!bar) return undefined;
    Object.assign(bar, { step: bar.total, done: true, nowMs });
    return bar;
  }

  #barOf(name: string, step: number, nowMs: number): Bar {
    let bar = this.#bars.get(name);
    if (!bar) {
      bar = {
        name,
        seeds: [],
        step: 0,
        total: 0,
        epoch: undefined,
        epochs: undefined,
        loss: undefined,
        samplesPerS: undefined,
        metrics: [],
        done: false,
        startMs: nowMs,
        anchor: { step, ms: nowMs },
        nowMs,
      };
      this.#bars.set(name, bar);
    }
    return bar;
  }

  /** Stages run one after the other: once another has started, an earlier one is complete. */
  #finishOthers(bar: Bar): void {
    for (const other of this.#bars.values()) {
      if (other !== bar && !other.done) Object.assign(other, { step: other.total, done: true });
    }
  }
}

/** Seconds left in the bar's run at its pace since its first step seen; undefined before there is a pace. */
export function etaSeconds(bar: Bar): number | undefined {
  const steps = bar.step - bar.anchor.step;
  if (steps <= 0) return undefined;
  return (((bar.total - bar.step) * (bar.nowMs - bar.anchor.ms)) / steps) * 1e-3;
}

/** 42 → 0:42, 3723 → 1:02:03. */
export function clock(seconds: number): string {
  const s = Math.round(seconds);
  const hms = [Math.floor(s / 3600), Math.floor(s / 60) % 60, s % 60];
  const [h, m, sec] = hms.map((v) => String(v).padStart(2, '0'));
  return s >= 3600 ? `${Number(h)}:${m}:${sec}` : `${Number(m)}:${sec}`;
}

/** 1267.3 → 1,267. */
export const thousands = (v: number) => Math.round(v).toLocaleString('en-US');

/** A run of a job: its stage, and its seed where the stage has seeds (`distilled seed 2`). */
export const runName = (stage: string, seed: number | undefined) =>
  seed === undefined ? stage : `${stage} seed ${seed}`;

/** The run a bar is on. */
export const runOf = (bar: Bar) => runName(bar.name, bar.seeds.at(-1));

/** A bar's name: its run's, or once a stage of several seeds is done, the stage with every seed it ran. */
export function barName(bar: Bar): string {
  return bar.done && bar.seeds.length > 1 ? `${bar.name} seeds ${bar.seeds.join(',')}` : runOf(bar);
}

/** What follows a bar's step/total: epoch, loss, samples/s and the ETA (the elapsed time, once done). */
export function barFigures(bar: Bar): string {
  const parts: string[] = [];
  if (bar.epoch !== undefined) parts.push(`epoch ${bar.epoch}/${bar.epochs}`);
  if (bar.loss !== undefined) parts.push(`loss ${bar.loss.toFixed(4)}`);
  for (const [k, v] of bar.metrics) parts.push(`${k} ${Number(v.toPrecision(4))}`);
  if (bar.samplesPerS !== undefined) parts.push(`${thousands(bar.samplesPerS)} samples/s`);
  if (bar.done) parts.push(`done in ${clock((bar.nowMs - bar.startMs) / 1000)}`);
  else {
    const eta = etaSeconds(bar);
    parts.push(`ETA ${eta === undefined ? '-:--' : clock(eta)}`);
  }
  return parts.join('  ');
}

/** The share of the bar's run done, 0 to 1. */
export function fraction(bar: Bar): number {
  return bar.total > 0 ? Math.min(bar.step / bar.total, 1) : 0;
}
