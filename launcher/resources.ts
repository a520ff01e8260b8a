/**
 * The memory a training job's workers will need, checked against what this node has before any worker starts.
 * Without it a job too large for the node starts anyway and dies as `killed by SIGKILL` (the OOM killer) or
 * `memory access out of bounds` (the wasm backend's 4 GiB heap), and nothing says "memory".
 *
 * The estimate per worker is the sum of what was measured to grow a worker's peak RSS (VmHWM of both workers of
 * 2-worker jobs on the wasm backend, Node 20, a 2-core 24 GiB machine; each constant says what it was fitted to):
 * the runtime itself, the data set, the model states at the job's ZeRO stage (src/engine/memory-estimate.ts), the
 * copies of the parameters in flight around each step, and the activations of one micro-batch (or of one
 * evaluation batch, whichever is larger). It is a rough bound: on the README's jobs it came within 15 % of the
 * measured peaks (mnist-train 251 MiB estimated, 237–246 measured; mnist-cnn 287, 263–268; mnist-distill 287,
 * 283–327, rank 0 the higher as it also exports the model, measures inference and caches the teacher's logits;
 * seqcls-distill 563, 592–596). Activations are counted as a one-pass backward keeps them (ZeRO-3 and activation
 * checkpointing keep fewer) and in fp32 (as tfjs computes, fp16 or not). What it cannot see (a pipeline's
 * in-flight micro-batches, the insides of a model's own blocks, a teacher known only from its files) is named in
 * `notCounted`.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { freemem } from 'node:os';
import { resolve } from 'node:path';
import { expectedBackend, residentCopies } from '../src/backend/names.ts';
import { tf } from '../src/backend/tf.ts';
import { resolveBatch } from '../src/config/batch.ts';
import { jobStageRuns, teacherRun } from '../src/config/job-stages.ts';
import type { DataSpec, JobBase, ModelSpec, ParsedJob } from '../src/config/schema.ts';
import type { TeacherSpec } from '../src/config/teachers.ts';
import { datasetInfo } from '../src/data/dataset-info.ts';
import { estimateMemory, zero3Gathered } from '../src/engine/memory-estimate.ts';
import type { Net } from '../src/engine/net.ts';
import { ParamGroups } from '../src/engine/param-groups.ts';
import { buildNet } from '../src/models/build.ts';
import { cnnLayerShapes } from '../src/models/shapes.ts';
import { partitionNet } from '../src/pipeline/partition.ts';
import { EVAL_BATCH, INFERENCE_BATCH } from '../src/trainer/evaluate.ts';
import { modelDirSpec } from './config-checks.ts';
import { LaunchError } from './errors.ts';
import { describeParts, gib } from './memory-text.ts';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const F32 = 4;

/**
 * A worker's own peak RSS before any model or data: Node, tfjs with the wasm backend, OpenBLAS, ZeroMQ and gRPC.
 * Measured as the VmHWM of each of the 2 workers of a tiny job (an MLP 16-8-4 on 320 generated seqcls samples,
 * micro-batch 8, 40 steps, backend auto = wasm): 135–139 MiB over 5 runs. The tensorflow backends load
 * libtensorflow instead of wasm and were not measured (not installed here).
 */
export const WORKER_RUNTIME_BYTES = 140 * MiB;

/**
 * Copies of the whole parameter vector a step holds beyond the model states (the gradient tensors tfjs returns,
 * their fp32 read-back, the tensors rebuilt after the update; at ZeRO-3 the model that evaluation gathers).
 * Fitted to MLPs of 5.8 M and 20 M parameters (SGD with momentum and Adam, ZeRO 0, 2 and 3): the measured peak
 * held 7.1–7.9 copies, the model states 3–5 of them.
 */
const TRANSIENT_PARAM_COPIES = 3;

/**
 * Bytes per sample value of a data set in memory while it loads: the parsed source (MNIST's JSON arrays, a CSV's
 * rows) beside the fp32 set it becomes. Measured on MNIST: its 10,000 × 784 values raised the peak by ~95 MiB.
 */
const DATA_BYTES_PER_VALUE = 3 * F32;

/**
 * Bytes per element of a layer's output (a dense or conv layer with its activation, a max-pool, a block's output)
 * at the backward's peak: the output, its gradient, the activation's mask and the input's gradient, all alive
 * until tfjs' gradients() returns. Measured: 5.2 fp32 values per element on an MLP 784-2048-2048-2048-10 and 5.9
 * on the README's CNN (micro-batch 256 → 2048 and 128 → 1024).
 */
const LAYER_TRAIN_BYTES = 6 * F32;

/** Bytes per element of a dropout in training (its random draw, mask and scaled output): measured 5.4–6.1 × fp32. */
const DROPOUT_TRAIN_BYTES = 6 * F32;

/**
 * Bytes per counted forward value of a Transformer encoder (`transformerSample`) at the backward's peak: most of
 * its ops are elementwise, whose backward keeps less than a layer's. Measured 2.25 × fp32 on dim 64, 4 heads,
 * seq_len 64, ffn 128, 2 layers (micro-batch 32 → 512).
 */
const TRANSFORMER_TRAIN_BYTES = 2.25 * F32;

/** The wasm backend's heap: a 32-bit WebAssembly memory, 4 GiB at most, per worker. */
const WASM_HEAP_BYTES = 4 * GiB;

/** One worker's estimated peak, in bytes, by part. */
export interface WorkerMemory {
  /** The worker process with tfjs and its backend loaded (`WORKER_RUNTIME_BYTES`). */
  runtime: number;
  data: number;
  /** Parameters, gradients and optimizer states at the job's ZeRO stage (`memoryPlan`'s figure), and teachers'. */
  modelStates: number;
  /** Parameter copies in flight around a step (`TRANSIENT_PARAM_COPIES`). */
  inFlight: number;
  /** One micro-batch's forward and backward, or one evaluation batch's forward, whichever is larger. */
  activations: number;
  total: number;
  /** What lives in tensors, which the wasm backend keeps in its heap: parameter and gradient tensors, activations. */
  tensors: number;
  /** What the estimate leaves out; empty when it covers the job. */
  notCounted: string[];
}

/** Reads a system file as text; undefined where it cannot (another OS, no cgroup, no permission). */
export type SystemFileReader = (path: string) => string | undefined;

const readSystemFile: SystemFileReader = (path) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
};

/** What this node has for the job's workers: the smaller of MemAvailable and the cgroup's headroom. */
export interface NodeMemory {
  available: number;
  /** Where the figure comes from, as the refusal prints it: `MemAvailable; cgroup limit none`. */
  source: string;
}

/** Per-sample bytes of one model's activations: training (forward + backward) and a forward alone. */
interface SampleBytes {
  train: number;
  forward: number;
  /** Set where only the blocks' outputs are known (a model of one's own). */
  partial?: string;
}

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
const product = (xs: readonly number[]) => xs.reduce((a, b) => a * b, 1);

/** Dense layers after `inputs` values: their outputs, the hidden ones' dropout. */
function denseSample(
  inputs: number,
  hidden: readonly number[],
  outputs: number,
  dropout: number,
): SampleBytes {
  const values = inputs + sum(hidden) + outputs;
  const dropped = dropout > 0 ? sum(hidden) : 0;
  return { train: values * LAYER_TRAIN_BYTES + dropped * DROPOUT_TRAIN_BYTES, forward: values * F32 };
}

/** Each conv's output and its pooled output, then the dense head. */
function cnnSample(spec: Extract<ModelSpec, { type: 'cnn' }>): SampleBytes {
  const shapes = cnnLayerShapes(spec);
  const maps = sum(
    shapes.map((s, i) => product(s.conv) + ((spec.conv[i].pool ?? spec.pool) > 1 ? product(s.pooled) : 0)),
  );
  const last = shapes.at(-1)?.pooled ?? spec.input;
  const head = denseSample(product(last), spec.dense, spec.classes, spec.dropout);
  const input = product(spec.input);
  return {
    train: (input + maps) * LAYER_TRAIN_BYTES + head.train,
    forward: (input + maps) * F32 + head.forward,
  };
}

/**
 * A Transformer's forward values per sample, counted from src/models/transformer.ts: per encoder layer, the
 * [seq, dim] tensors (per head the q/k/v projections and its share of the output, then the adds, dropouts and two
 * layer norms), the [heads, seq, seq] scores, softmax and stacked probabilities, and the [seq, ffn] GELU; the
 * embedding's one-hot, lookup and layer norm. Within 2 % of what tf.profile counts for a forward on the wasm
 * backend (seq_len 16 and 64).
 */
function transformerSample(spec: Extract<ModelSpec, { type: 'transformer' }>): SampleBytes {
  const { seq_len: s, dim, heads, ffn, vocab, layers, dropout } = spec;
  const layer = (30 + 2 * heads) * s * dim + 4 * heads * s * s + 4 * s * ffn;
  const values = layers * layer + s * vocab + 8 * s * dim;
  const dropped = dropout > 0 ? layers * (heads * s * s + 2 * s * dim) + s * dim : 0;
  return { train: values * TRANSFORMER_TRAIN_BYTES + dropped * DROPOUT_TRAIN_BYTES, forward: values * F32 };
}

/**
 * A model of one's own: the output of every block, found by running each block once on one sample with zero
 * parameters (as the launcher's shape checks do), one block's parameters alive at a time.
 */
function blockOutputsSample(net: Net): SampleBytes {
  let h: tf.Tensor = tf.zeros([1, ...net.inputShape], net.inputDtype);
  let values = h.size;
  const mode = { training: false, seed: 0 };
  net.blocks.forEach((b, i) => {
    const x = h;
    h = tf.tidy(
      () =>
        b.forward(
          b.params.map((p) => tf.zeros([...p.shape])),
          x,
          mode,
          i,
        ).y,
    );
    // A block may hand its input on as its output (a dropout at inference): that tensor lives on.
    if (h !== x) x.dispose();
    values += h.size;
  });
  h.dispose();
  return {
    train: values * LAYER_TRAIN_BYTES,
    forward: values * F32,
    partial: "activations inside a model's own blocks (their outputs are counted)",
  };
}

function sampleBytes(spec: ModelSpec, net: Net): SampleBytes {
  switch (spec.type) {
    case 'mlp':
      return denseSample(spec.layers[0], spec.layers.slice(1, -1), spec.layers.at(-1) ?? 0, spec.dropout);
    case 'cnn':
      return cnnSample(spec);
    case 'transformer':
      return transformerSample(spec);
    case 'tfjs':
    case 'module':
      return blockOutputsSample(net);
  }
}

/** The data set in memory; a `.npy` set stays on disk and is read per batch. */
function dataBytes(data: DataSpec, jobDir: string): number {
  if (data.dataset === 'npy') return 0;
  const ds = datasetInfo(data, jobDir);
  return (ds.trainSize + ds.testSize) * ds.features * DATA_BYTES_PER_VALUE;
}

/** The model a teacher names, where the launcher can know it without reading a checkpoint's weights. */
function teacherModel(t: TeacherSpec, job: JobBase, jobDir: string, runs: ReturnType<typeof jobStageRuns>) {
  if ('stage' in t) return teacherRun(runs, t)?.job.model ?? undefined;
  if ('checkpoint' in t) return job.model ?? undefined; // self-distillation: an earlier student of this model
  const dir = resolve(jobDir, t.model_dir);
  return (
    modelDirSpec(dir) ??
    (readSystemFile(resolve(dir, 'model.json')) ? { type: 'tfjs' as const, path: dir } : undefined)
  );
}

interface RunContext {
  world: number;
  jobDir: string;
  runs: ReturnType<typeof jobStageRuns>;
}

/** What a run's teachers add: their parameters (held flat and as tensors), a forward per micro-batch. */
function teachersMemory(job: JobBase, microBatch: number, { jobDir, runs }: RunContext) {
  const known = { params: 0, forward: 0, notCounted: [] as string[] };
  for (const t of job.teachers ?? []) {
    const spec = teacherModel(t, job, jobDir, runs);
    if (!spec) {
      known.notCounted.push('a teacher whose model is known only from its files');
      continue;
    }
    const net = buildNet(spec);
    known.params += new ParamGroups(net, []).length * F32;
    known.forward += microBatch * sampleBytes(spec, net).forward;
  }
  return known;
}

/**
 * A run's activations at their peak: one micro-batch's forward and backward, or the forward of an evaluation batch
 * (each rank's share of the test set, 512 at most) or of rank 0's inference measurement (256), whichever is more.
 */
function activationBytes(sample: SampleBytes, microBatch: number, dataParallel: number, testSize: number) {
  const evalBatch = Math.max(
    Math.min(EVAL_BATCH, Math.ceil(testSize / dataParallel)),
    Math.min(INFERENCE_BATCH, testSize),
  );
  return Math.max(microBatch * sample.train, evalBatch * sample.forward);
}

/** One training run (a job, or one stage of a staged job) on one worker. */
function runMemory(job: JobBase, context: RunContext): WorkerMemory | undefined {
  const { model, data, optimizer } = job;
  if (!model || !data || !optimizer) return undefined;
  const net = buildNet(model);
  const groups = new ParamGroups(net, []);
  const batch = resolveBatch(job, context.world);
  const stage = job.zero_optimization.stage;
  // A pipeline stage holds its share of the blocks; the largest share bounds every worker.
  const params = job.pipeline
    ? Math.max(...partitionNet(net, job.pipeline.stages, job.pipeline.partition).map((r) => r.params))
    : groups.length;
  const size = { parameters: params, largestPair: groups.largestPair };
  const reuse = job.zero_optimization.stage3_max_reuse_distance;
  const copies = residentCopies(expectedBackend(job.backend));
  const states = estimateMemory(size, batch.dataParallel, stage, optimizer, reuse, copies);
  const sample = sampleBytes(model, net);
  const teachers = teachersMemory(job, batch.microBatch, context);
  const notCounted = [...(sample.partial ? [sample.partial] : []), ...teachers.notCounted];
  let activations = teachers.forward;
  if (job.pipeline) notCounted.push("a pipeline's activations (micro-batches in flight)");
  else {
    const { testSize } = datasetInfo(data, context.jobDir);
    activations += activationBytes(sample, batch.microBatch, batch.dataParallel, testSize);
  }
  const modelStates =
    states.params + states.grads + states.optimizer + states.gatheredPeak + 2 * teachers.params;
  const inFlight = TRANSIENT_PARAM_COPIES * params * F32;
  const runtime = WORKER_RUNTIME_BYTES;
  const dataSet = dataBytes(data, context.jobDir);
  return {
    runtime,
    data: dataSet,
    modelStates,
    inFlight,
    activations,
    total: runtime + dataSet + modelStates + inFlight + activations,
    // Parameter tensors (at ZeRO-3 the model evaluation gathers), gradient tensors (at ZeRO-3 what it gathers).
    tensors:
      params * F32 +
      (stage === 3 ? zero3Gathered(size, reuse) : params) * F32 +
      teachers.params +
      activations,
    notCounted,
  };
}

/** A training job's peak per worker: its one run, or the largest of its stages' (run one after another). */
export function estimateWorkerMemory(
  job: ParsedJob,
  world: number,
  jobDir: string,
): WorkerMemory | undefined {
  const runs = jobStageRuns(job);
  const context = { world, jobDir, runs };
  if (job.stages === undefined) return runMemory(job, context);
  // Seeds of one stage train the same model: their first run stands for them.
  const estimates = runs.filter((r) => !r.seedIndex).map((r) => runMemory(r.job, context));
  return estimates.reduce<WorkerMemory | undefined>(
    (big, e) => (e && (!big || e.total > big.total) ? e : big),
    undefined,
  );
}

/** The first number of a text (a cgroup file), undefined for `max` or nothing. */
function bytesIn(text: string | undefined): number | undefined {
  const n = Number.parseInt(text?.trim() ?? '', 10);
  return Number.isFinite(n) ? n : undefined;
}

/** A `key value` line of a stat file (meminfo's in kB), as a number. */
function statField(text: string | undefined, key: string): number | undefined {
  const m = text?.match(new RegExp(`^${key}:?\\s+(\\d+)`, 'm'));
  return m ? Number(m[1]) : undefined;
}

/** cgroup v1 writes "no limit" as the largest page-aligned int64; anything above 2^60 is no limit. */
const NO_LIMIT = 2 ** 60;

interface CgroupHeadroom {
  headroom: number;
  describe: string;
}

/**
 * The tightest memory limit of this process's cgroup and its ancestors, minus what each already uses (less its
 * inactive page cache, which the kernel reclaims before it kills: as `docker stats` counts). Both hierarchies:
 * v2 (`memory.max`, `memory.current`) and v1 (`memory.limit_in_bytes`, `memory.usage_in_bytes`).
 */
function cgroupHeadroom(read: SystemFileReader): CgroupHeadroom | undefined {
  const lines = (read('/proc/self/cgroup') ?? '').split('\n').map((l) => l.split(':'));
  const v2 = lines.find((l) => l[0] === '0' && l[1] === '');
  const v1 = lines.find((l) => l[1]?.split(',').includes('memory'));
  const layouts = [
    ...(v1
      ? [
          {
            version: 1,
            root: '/sys/fs/cgroup/memory',
            path: v1[2],
            limit: 'memory.limit_in_bytes',
            usage: 'memory.usage_in_bytes',
            cache: 'total_inactive_file',
          },
        ]
      : []),
    ...(v2
      ? [
          {
            version: 2,
            root: '/sys/fs/cgroup',
            path: v2[2],
            limit: 'memory.max',
            usage: 'memory.current',
            cache: 'inactive_file',
          },
        ]
      : []),
  ];
  let tightest: CgroupHeadroom | undefined;
  for (const l of layouts) {
    // A container without its own cgroup namespace sees the host's path but has its cgroup at the mount's root.
    const parts = (l.path ?? '').split('/').filter((p) => p !== '');
    for (let depth = parts.length; depth >= 0; depth--) {
      const dir = [l.root, ...parts.slice(0, depth)].join('/');
      const limit = bytesIn(read(`${dir}/${l.limit}`));
      const usage = bytesIn(read(`${dir}/${l.usage}`));
      if (limit === undefined || usage === undefined || limit >= NO_LIMIT) continue;
      const used = usage - (statField(read(`${dir}/memory.stat`), l.cache) ?? 0);
      const headroom = Math.max(0, limit - used);
      if (!tightest || headroom < tightest.headroom) {
        tightest = { headroom, describe: `cgroup v${l.version} limit ${gib(limit)}, ${gib(used)} in use` };
      }
    }
  }
  return tightest;
}

/** What this node has for new processes: MemAvailable (or the OS's free memory off Linux), within its cgroup. */
export function nodeMemory(read: SystemFileReader = readSystemFile): NodeMemory {
  const kB = statField(read('/proc/meminfo'), 'MemAvailable');
  const host =
    kB !== undefined ? { bytes: kB * 1024, name: 'MemAvailable' } : { bytes: freemem(), name: 'free memory' };
  const cgroup = cgroupHeadroom(read);
  if (cgroup && cgroup.headroom < host.bytes) {
    return { available: cgroup.headroom, source: `${cgroup.describe}; ${host.name} ${gib(host.bytes)}` };
  }
  return { available: host.bytes, source: `${host.name}; ${cgroup ? cgroup.describe : 'cgroup limit none'}` };
}

/** Whether the job's workers will compute on the wasm backend: named, or what `auto` finds (no tfjs-node). */
function runsOnWasm(backend: string): boolean {
  if (backend !== 'auto') return backend === 'wasm';
  const require = createRequire(import.meta.url);
  return !['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'].some((pkg) => {
    try {
      require.resolve(pkg);
      return true;
    } catch {
      return false;
    }
  });
}

const REMEDIES = 'lower the micro-batch, use zero_optimization.stage 3, or fewer workers per node';
const OVERRIDE = '--no-memory-check starts it anyway';

/** Why `workers` workers of this estimate do not fit, in one line; undefined when they do. */
export function memoryRefusal(
  m: WorkerMemory,
  workers: number,
  node: NodeMemory,
  wasm: boolean,
): string | undefined {
  const needs = `the job needs ~${gib(m.total)} of memory per worker (${describeParts(m)})`;
  if (wasm && m.tensors > WASM_HEAP_BYTES) {
    return `${needs}, of which ${gib(m.tensors)} in tensors, which exceeds the wasm backend's 4 GiB per worker: lower the micro-batch, use zero_optimization.stage 3, or backend: tensorflow (npm install @tensorflow/tfjs-node) (${OVERRIDE})`;
  }
  if (m.total * workers > node.available) {
    return `${needs} × ${workers} workers = ${gib(m.total * workers)}, but this node has ${gib(node.available)} available (${node.source}): ${REMEDIES} (${OVERRIDE})`;
  }
  return undefined;
}

/** What `--dry-run` shows of a training job's memory: the estimate and what this node has for it. */
export interface ResourcePlan {
  perWorker: WorkerMemory;
  workers: number;
  node: NodeMemory;
  wasm: boolean;
}

export interface MemoryCheck {
  world: number;
  /** Workers on this node. */
  nproc: number;
  jobDir: string;
  /** False: estimate and show, never refuse (`--no-memory-check`). */
  enforce: boolean;
  read?: SystemFileReader;
}

/** The launcher's check, before any worker starts: throws a LaunchError when the job does not fit this node. */
export function checkMemory(job: ParsedJob, c: MemoryCheck): ResourcePlan | undefined {
  const perWorker = estimateWorkerMemory(job, c.world, c.jobDir);
  if (!perWorker) return undefined;
  const plan = { perWorker, workers: c.nproc, node: nodeMemory(c.read), wasm: runsOnWasm(job.backend) };
  const refusal = memoryRefusal(perWorker, plan.workers, plan.node, plan.wasm);
  if (refusal && c.enforce) throw new LaunchError(refusal);
  return plan;
}
