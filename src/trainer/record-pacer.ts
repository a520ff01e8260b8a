/**
 * Which steps rank 0 records. A record per step cost a small model 15–20 % of its throughput (one control-plane
 * message and one metrics line each, hundreds a second: bench/RESULTS.md, "Step records"), so a step is recorded
 * at most every RECORD_INTERVAL_MS, and always the first, the last and any step that logs or evaluates. A
 * record's loss and gradient norm are the means over the steps since the previous record, as HF Trainer logs its
 * loss over `logging_steps`: every step counts, none is drawn at random.
 */

/** Shortest time between two recorded steps: about ten points a second on the curves, whatever the model. */
export const RECORD_INTERVAL_MS = 100;

export interface PacedStep {
  loss: number;
  grad_norm: number;
}

export class RecordPacer {
  private lossSum = 0;
  private normSum = 0;
  private steps = 0;
  private lastAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly intervalMs = RECORD_INTERVAL_MS,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Adds a step; returns what to record of the steps so far when this one is recorded (`due`, or time), else undefined. */
  add(loss: number, gradNorm: number, due: boolean): PacedStep | undefined {
    this.lossSum += loss;
    this.normSum += gradNorm;
    this.steps++;
    const at = this.now();
    if (!due && at - this.lastAt < this.intervalMs) return undefined;
    const paced = { loss: this.lossSum / this.steps, grad_norm: this.normSum / this.steps };
    this.lossSum = 0;
    this.normSum = 0;
    this.steps = 0;
    this.lastAt = at;
    return paced;
  }
}
