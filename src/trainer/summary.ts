/**
 * What a training run reports when it ends (rank 0's; the launcher prints it as the summary table), and the
 * steady-state timing every run measures the same way.
 */
import type { StepStats } from '../engine/engine.ts';
import type { MemoryReport } from '../engine/zero.ts';

export interface RunSummary {
  kind: 'summary';
  /** fp16: optimizer steps skipped because a gradient overflowed. */
  skipped_steps?: number;
  /** fp16: the loss scale of the last step's backward. */
  loss_scale?: number;
  backend: string;
  world: number;
  train_batch_size: number;
  steps: number;
  epochs: number;
  final_loss: number;
  test_accuracy: number;
  /** Training samples per second over all ranks, over the steps this run trained (not a checkpoint's). */
  samples_per_s: number;
  train_s: number;
  /** Whole run on this worker: data, model, training and evaluation. */
  wall_s: number;
  /** Trained parameters: the model's, plus the objective's projections (data parallel). */
  parameters: number;
  /** The parameters as fp32. */
  model_bytes: number;
  /**
   * Time in the gradient collectives over step time, measured by the engine on this rank, over the steps after
   * the first TIMING_WARMUP_STEPS (all steps when there are no more).
   */
  comm_fraction: number;
  /** Training samples per second over all ranks, over the same steps as comm_fraction (no warm-up). */
  steady_samples_per_s: number;
  zero_stage: number;
  /** Parameters, gradients and optimizer state rank 0 holds, in bytes, measured (every rank reports its own). */
  state_bytes_per_rank: number;
  /** The same as `estimateMemory` predicts it before the run (what `--dry-run` prints); pipelines have none. */
  state_bytes_estimate?: number;
  params_bytes: number;
  grads_bytes: number;
  optimizer_bytes: number;
  /** ZeRO-3: the most gathered parameter bytes alive at once. */
  gathered_peak_bytes: number;
  /** cross_entropy or distillation. */
  objective: string;
  /** The model's own parameters (the objective's projections left out). */
  model_parameters: number;
  /** A pruned model (`pruning:`): its parameters that are not zero. */
  nonzero_parameters?: number;
  /** Batched inference over the test set: one rank's forwards, or the whole pipeline's; samples per second. */
  inference_samples_per_s: number;
  /** Where the trained model was written (absent with `save: false`), and its bytes (0 when not written). */
  model_dir?: string;
  model_dir_bytes: number;
  /** `onnx: true`: bytes of model.onnx, and its median batch-1 latency in onnxruntime-node (ms). */
  onnx_bytes?: number;
  onnx_latency_ms?: number;
}

/** What a pipelined run's summary adds (flat fields: the launcher prints the summary as a table of scalars). */
export interface PipelineSummary extends RunSummary {
  pipeline_stages: number;
  data_parallel: number;
  micro_batches: number;
  pipeline_schedule: string;
  /**
   * Mean idle fraction of the ranks during the pipeline phase of a step (first op to the stages' closing barrier),
   * from each rank's own forward/backward time, over the steady steps; beside it, (P−1)/(M+P−1).
   */
  bubble: number;
  bubble_ideal: number;
  /** Per pipeline stage: the most micro-batch inputs held at once (measured). */
  peak_live_activations: number[];
}

/** A rank's measured memory as the summary's fields. */
export function memoryFields(m: MemoryReport) {
  return {
    state_bytes_per_rank: m.params + m.grads + m.optimizer,
    params_bytes: m.params,
    grads_bytes: m.grads,
    optimizer_bytes: m.optimizer,
    gathered_peak_bytes: m.gatheredPeak,
  };
}

/** Steps left out of the steady-state figures (comm_fraction, steady_samples_per_s, the bubble): first calls. */
export const TIMING_WARMUP_STEPS = 5;

/** Throughput and communication share over a run's steps, the first TIMING_WARMUP_STEPS left out. */
export class SteadyTiming {
  readonly #first: number;
  readonly #warm: number;
  readonly #samplesPerStep: number;
  #from = Number.NaN;
  #to = Number.NaN;
  #steps = 0;
  #stepMs = 0;
  #commMs = 0;

  /** `firstStep`: the step the run starts at (a resumed run's checkpoint step); a resumed run warms up too. */
  constructor(firstStep: number, totalSteps: number, samplesPerStep: number) {
    this.#first = firstStep;
    this.#warm = TIMING_WARMUP_STEPS < totalSteps - firstStep ? TIMING_WARMUP_STEPS : 0;
    this.#samplesPerStep = samplesPerStep;
  }

  /** Whether the step that ends at optimizer step `step` counts. */
  steady(step: number): boolean {
    return step - this.#first > this.#warm;
  }

  record(stats: StepStats): void {
    if (!this.steady(stats.step)) return;
    const now = performance.now();
    if (this.#steps === 0) this.#from = now - stats.stepMs;
    this.#to = now;
    this.#steps++;
    this.#stepMs += stats.stepMs;
    this.#commMs += stats.commMs;
  }

  /** Samples per second over the steps this run trained up to `step`, in `seconds`. */
  samplesPerSecond(step: number, seconds: number): number {
    return ((step - this.#first) * this.#samplesPerStep) / seconds;
  }

  figures(totalSteps: number, trainSeconds: number) {
    return {
      samples_per_s: this.samplesPerSecond(totalSteps, trainSeconds),
      comm_fraction: this.#stepMs > 0 ? this.#commMs / this.#stepMs : 0,
      steady_samples_per_s:
        this.#steps > 0 ? (this.#steps * this.#samplesPerStep) / ((this.#to - this.#from) / 1000) : 0,
    };
  }
}
