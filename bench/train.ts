/**
 * Data-parallel training throughput and its scaling, in one run: the built-in training job, launched through
 * `launch()` as a user would, on MLP 784-1024-1024-10 with Adam at micro-batch 128 per worker, at world 1 and
 * world 2. Each row times a fixed number of steps after the job's warm-up steps (TIMING_WARMUP_STEPS), and
 * gives the share of the step spent in the gradient all-reduce as the engine measured it (rank 0). The last
 * line is the scaling efficiency S(2) / (2·S(1)): what world 2 keeps of twice world 1's samples/s.
 *
 * Each row also gives the step's limit, measured in the same run just before it: the time of the step's GEMMs
 * alone (OpenBLAS sgemm called directly on its shapes, one thread), beside the step as a rank ran it.
 *
 * A world of N > 1 has a second limit, measured right after its row: N world-1 jobs started at once, each on its
 * own (no collective between them), their samples/s summed. That is what N processes of this step make of this
 * machine's cores, memory bandwidth and caches; the row's "of N alone" is its samples/s against it, the share the
 * data-parallel coupling (all-reduce, and each rank waiting for the slower one) keeps.
 *
 * `--zero 0,1,2,3` runs each ZeRO stage at every world: rows gain `"zero":k` and `"state_bytes_per_rank":B`
 * (parameters + gradients + optimizer state rank 0 measured), and a last line per world gives each stage's
 * throughput against stage 0's in the same run.
 *
 * `--rounds N` measures everything N times over, round after round, so that each stage's ratio to stage 0 is
 * taken within one round (the machine's speed drifts over minutes by more than the stages differ), and ends with
 * each ratio's median and range over the rounds.
 *
 *   npx tsx bench/train.ts [--json] [--steps 60] [--worlds 1,2] [--backend wasm] [--zero 0,1,2,3] [--rounds 1]
 *   (--json: one JSON object per line and nothing else)
 */

import { launch } from '../launcher/launch.ts';
import { loadBlasBinding } from '../src/backend/blas/native.ts';
import { type RunSummary, TIMING_WARMUP_STEPS } from '../src/trainer/summary.ts';
import { mlpGemmSeconds } from './gemm-limit.ts';

const MODEL = 'mlp-784-1024-1024-10';
const LAYERS = [784, 1024, 1024, 10];
const MICRO_BATCH = 128;

function flag(name: string, fallback: string): string {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

const JSON_ONLY = process.argv.includes('--json');
const STEPS = Number(flag('steps', '60'));
const WORLDS = flag('worlds', '1,2').split(',').map(Number);
const BACKEND = flag('backend', 'wasm');
const ZERO = process.argv.includes('--zero') ? flag('zero', '0').split(',').map(Number) : undefined;
const ROUNDS = Number(flag('rounds', '1'));
if (
  !Number.isInteger(STEPS) ||
  STEPS < 1 ||
  !Number.isInteger(ROUNDS) ||
  ROUNDS < 1 ||
  WORLDS.some((w) => !Number.isInteger(w) || w < 1) ||
  ZERO?.some((z) => ![0, 1, 2, 3].includes(z))
) {
  console.error(
    'usage: bench/train.ts [--json] [--steps N] [--worlds 1,2] [--backend wasm] [--zero 0,1,2,3] [--rounds N]',
  );
  process.exit(2);
}

interface Row {
  model: string;
  world: number;
  micro_batch: number;
  samples_per_s: number;
  comm_fraction: number;
  /** One step as a rank ran it: world × micro-batch samples at the steady samples/s. */
  step_ms: number;
  /** The step's GEMMs alone, measured just before the row (null without the BLAS binding). */
  gemm_ms: number | null;
  backend: string;
  zero?: number;
  state_bytes_per_rank?: number;
}

const blas = loadBlasBinding();

/** Runs the benchmark job on `world` workers; returns its summary. */
async function runJob(world: number, zero: number | undefined, name: string): Promise<RunSummary> {
  const job = {
    name,
    ...(zero !== undefined ? { zero_optimization: { stage: zero } } : {}),
    backend: BACKEND,
    seed: 42,
    model: { type: 'mlp', layers: LAYERS },
    data: { dataset: 'mnist', shuffle: true, drop_last: true },
    train_micro_batch_size_per_gpu: MICRO_BATCH,
    gradient_accumulation_steps: 1,
    optimizer: { type: 'Adam', params: { lr: 0.001 } },
    steps: TIMING_WARMUP_STEPS + STEPS,
    steps_per_print: 1_000_000,
    eval: { every_steps: 0 },
  };
  const handle = launch(job, { nproc: world });
  const stderrTail: string[] = [];
  for await (const e of handle.events) {
    if (e.type === 'log' && e.stream === 'stderr') stderrTail.push(e.line);
  }
  let result: Awaited<typeof handle.result>;
  try {
    result = await handle.result;
  } catch (err) {
    throw new Error(`world ${world}: ${(err as Error).message}\n${stderrTail.slice(-10).join('\n')}`);
  }
  const summary = result.reports.find((r) => (r.data as { kind?: string }).kind === 'summary')?.data as
    | RunSummary
    | undefined;
  if (!summary) throw new Error(`world ${world}: the job reported no summary`);
  return summary;
}

async function measure(world: number, zero: number | undefined): Promise<Row> {
  const gemmMs = blas.binding ? mlpGemmSeconds(blas.binding, LAYERS, MICRO_BATCH) * 1000 : null;
  const summary = await runJob(world, zero, `bench-train-w${world}`);
  return {
    model: MODEL,
    world,
    micro_batch: MICRO_BATCH,
    samples_per_s: Number(summary.steady_samples_per_s.toFixed(1)),
    comm_fraction: Number(summary.comm_fraction.toFixed(4)),
    step_ms: Number(((1000 * world * MICRO_BATCH) / summary.steady_samples_per_s).toFixed(2)),
    gemm_ms: gemmMs === null ? null : Number(gemmMs.toFixed(2)),
    backend: summary.backend,
    ...(zero !== undefined ? { zero, state_bytes_per_rank: summary.state_bytes_per_rank } : {}),
  };
}

function gemmText(row: Row): string {
  if (row.gemm_ms === null) return `? × its GEMMs (no BLAS binding: ${blas.reason})`;
  return `${(row.step_ms / row.gemm_ms).toFixed(2)} × its GEMMs alone (${row.gemm_ms.toFixed(1)} ms)`;
}

/** `n` world-1 jobs at once, each on its own: their samples/s summed. */
async function alone(n: number, zero: number | undefined): Promise<number> {
  const jobs = Array.from({ length: n }, (_, i) => runJob(1, zero, `bench-train-alone-${i}`));
  return (await Promise.all(jobs)).reduce((sum, s) => sum + s.steady_samples_per_s, 0);
}

/** One round: every world, every stage; returns its rows and prints them with the round's ratios. */
async function round(label: string): Promise<Row[]> {
  const rows: Row[] = [];
  for (const world of WORLDS) {
    for (const zero of ZERO ?? [undefined]) {
      const row = await measure(world, zero);
      rows.push(row);
      const stage =
        zero !== undefined
          ? `  ZeRO ${zero}  ${((row.state_bytes_per_rank ?? 0) / 2 ** 20).toFixed(1)} MiB of states per rank`
          : '';
      console.log(
        JSON_ONLY
          ? JSON.stringify(row)
          : `${label}${row.model}  world ${row.world}  micro-batch ${row.micro_batch}  ${row.samples_per_s.toFixed(0).padStart(6)} samples/s  step ${row.step_ms.toFixed(1)} ms = ${gemmText(row)}  comm ${(row.comm_fraction * 100).toFixed(1).padStart(5)}% of the step  ${row.backend}${stage}  (${STEPS} steps after ${TIMING_WARMUP_STEPS} warm-up)`,
      );
      if (world > 1 && (zero ?? 0) === 0) {
        const limit = Number((await alone(world, zero)).toFixed(1));
        const share = row.samples_per_s / limit;
        console.log(
          JSON_ONLY
            ? JSON.stringify({
                world,
                alone_samples_per_s: limit,
                of_alone: Number(share.toFixed(4)),
              })
            : `${label}  limit: ${world} world-1 jobs at once, each on its own: ${limit.toFixed(0)} samples/s; world ${world} makes ${(share * 100).toFixed(1)}% of it`,
        );
      }
    }
    const cost = zeroRatios(rows, world);
    if (cost) {
      console.log(
        JSON_ONLY
          ? JSON.stringify({ world, throughput_vs_zero0: cost })
          : `${label}world ${world}: throughput relative to ZeRO 0: ${Object.entries(cost)
              .map(([k, v]) => `${k} ${(v * 100).toFixed(1)}%`)
              .join(', ')}`,
      );
    }
  }
  const one = rows.find((r) => r.world === 1 && (r.zero ?? 0) === 0);
  const two = rows.find((r) => r.world === 2 && (r.zero ?? 0) === 0);
  if (one && two) {
    const efficiency = two.samples_per_s / (2 * one.samples_per_s);
    console.log(
      JSON_ONLY
        ? JSON.stringify({ scaling_efficiency: Number(efficiency.toFixed(4)), worlds: [1, 2] })
        : `${label}scaling efficiency S(2)/(2·S(1)) = ${(efficiency * 100).toFixed(1)}%`,
    );
  }
  return rows;
}

/** Each stage's samples/s over stage 0's at `world`, from one round's rows (undefined without --zero). */
function zeroRatios(rows: readonly Row[], world: number): Record<string, number> | undefined {
  const base = rows.find((r) => r.world === world && r.zero === 0);
  if (!ZERO || !base) return undefined;
  return Object.fromEntries(
    rows
      .filter((r) => r.world === world && r.zero !== undefined)
      .map((r) => [`zero${r.zero}`, Number((r.samples_per_s / base.samples_per_s).toFixed(4))]),
  );
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const rounds: Row[][] = [];
for (let r = 1; r <= ROUNDS; r++) rounds.push(await round(ROUNDS > 1 ? `[round ${r}/${ROUNDS}] ` : ''));
if (ROUNDS > 1 && ZERO) {
  for (const world of WORLDS) {
    const each = rounds.map((rows) => zeroRatios(rows, world) ?? {});
    const summary = Object.fromEntries(
      Object.keys(each[0]).map((k) => {
        const xs = each.map((c) => c[k]);
        return [k, { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) }];
      }),
    );
    console.log(
      JSON_ONLY
        ? JSON.stringify({ world, rounds: ROUNDS, throughput_vs_zero0: summary })
        : `world ${world}, ${ROUNDS} rounds, each stage against the same round's ZeRO 0: ${Object.entries(
            summary,
          )
            .map(
              ([k, v]) =>
                `${k} ${(v.median * 100).toFixed(1)}% (${(v.min * 100).toFixed(1)}–${(v.max * 100).toFixed(1)})`,
            )
            .join(', ')}`,
    );
  }
}
