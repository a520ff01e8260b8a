import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { expectedBackend, residentCopies } from '../src/backend/names.ts';
import type { WireDtype } from '../src/comm/types.ts';
import { ConfigError, type ConfigIssue } from '../src/config/errors.ts';
import { isStageModelRef, mergeJobStage } from '../src/config/job-stages.ts';
import { attributedToOverrides, loadJobFile, resolveModelPaths, validateJob } from '../src/config/load.ts';
import { runDirOf, traceFileOf } from '../src/config/outputs.ts';
import { JobSchema, type ParsedJob } from '../src/config/schema.ts';
import { describeTeacher } from '../src/config/teachers.ts';
import { type CheckpointHeader, newestHeader } from '../src/engine/checkpoint.ts';
import { estimateMemory } from '../src/engine/memory-estimate.ts';
import { countParams } from '../src/engine/net.ts';
import { ParamGroups } from '../src/engine/param-groups.ts';
import { buildNet } from '../src/models/build.ts';
import { hasModelModule } from '../src/models/model-module.ts';
import { toChromeTrace } from '../src/trace/chrome-trace.ts';
import { isTraceChunk, TraceCollector } from '../src/trace/wire.ts';
import { isRunRecord, type RunRecord, type StepRecord } from '../src/trainer/records.ts';
import { Agent, nodeEntry, type WorkerExit } from './agent.ts';
import { checkTraining, finishedAt } from './config-checks.ts';
import { JobFailedError, LaunchError } from './errors.ts';
import { EventQueue } from './event-queue.ts';
import { describeFailure, type Failure, type LaunchEvent, type ResumePoint } from './events.ts';
import { fastPathWarning } from './fast-path.ts';
import { addressToward } from './node-address.ts';
import { checkOutputDirs, outputDirs, runOutputs } from './output-paths.ts';
import { pipelinePlan } from './pipeline-plan.ts';
import { type Plan, withCoreCheck } from './plan.ts';
import type { Beat } from './pulse.ts';
import { RendezvousClient } from './rendezvous/client.ts';
import type { NodeStatus, Peer, WorkerStatus } from './rendezvous/proto.ts';
import { RendezvousServer } from './rendezvous/server.ts';
import { checkMemory } from './resources.ts';
import { writeReport } from './run/report.ts';
import { RunFiles } from './run/run-files.ts';
import { type Diagnosis, Watchdog } from './watchdog.ts';
import type { Program, WorkerSpec } from './worker-spec.ts';

export interface LaunchOptions {
  /** CPU workers on this node. */
  nproc?: number;
  /** One worker per GPU on this node (needs @tensorflow/tfjs-node-gpu). */
  gpus?: number;
  nnodes?: number;
  nodeRank?: number;
  masterAddr?: string;
  /** Omitted on one node: a free port. Across nodes: 29500, as torchrun. */
  masterPort?: number;
  /** This node's address for the data plane across nodes (default: the master address on node 0, elsewhere this host's address on the route to the master). */
  nodeAddr?: string;
  /** Validate and return the plan; start nothing. */
  dryRun?: boolean;
  /** False: estimate the workers' memory but start a job that needs more than this node has (default true). */
  memoryCheck?: boolean;
  /** Run the all-reduce benchmark instead of the job. */
  bench?: {
    op: 'allreduce';
    sizesMiB: number[];
    dtype: WireDtype;
    iters: number;
    /** Each size on each of these paths in turn (shm where ranks share a node); the job's choice when absent. */
    transports?: readonly ('shm' | 'zmq')[];
  };
  /** BLAS threads per worker (default 1: N workers on N cores do not oversubscribe). */
  threadsPerWorker?: number;
  /**
   * How often the job starts over after a worker fails (torchrun's --max-restarts; default 0): every node's
   * workers are stopped and started again, and training resumes from the newest verified checkpoint.
   */
  maxRestarts?: number;
  /**
   * How often the watchdog looks (node 0) and another node forwards its workers' pulses (torchrun's
   * --monitor-interval; default 0.5 s). Worker exits are seen as they happen, whatever it is.
   */
  monitorIntervalS?: number;
  /** A worker (or another node) silent this long is lost (default 10 s). */
  heartbeatTimeoutS?: number;
  /** A collective open this long on some rank is a hang: the watchdog names the rank at fault (default 120 s). */
  hangTimeoutS?: number;
  /** Where the run's files go (the watchdog's flight recorder): default `runs/<job name>` in the working directory. */
  runDir?: string;
  /** Write the job's timeline to this Chrome-trace file (relative to the working directory); wins over `trace:`. */
  trace?: { path: string };
  /** `key.path=value` settings put into the job before it is validated (`--set`), e.g. `optimizer.params.lr=0.01`. */
  overrides?: string[];
}

export interface LaunchResult {
  plan: Plan;
  /** Every `ctx.report` of every rank on this node's master, in arrival order. */
  reports: { rank: number; data: unknown }[];
  wallMs: number;
}

export interface LaunchHandle {
  readonly plan: Plan;
  readonly events: AsyncIterable<LaunchEvent>;
  /** Resolves when every worker finished; rejects with JobFailedError naming the first failed rank. */
  readonly result: Promise<LaunchResult>;
  abort(reason?: string): void;
}

const DEFAULT_MULTINODE_PORT = 29500;
const REMOTE_DRAIN_MS = 10_000;
const MASTER_WAIT_MS = 120_000;
/** What a worker prints when a heap is full: wasm's memory (4 GiB at most), V8's, an ArrayBuffer's. */
const OUT_OF_MEMORY =
  /memory access out of bounds|JavaScript heap out of memory|Array buffer allocation failed|Cannot allocate memory|WebAssembly\.Memory\(\): could not allocate/;

export interface Prepared {
  plan: Plan;
  spec: WorkerSpec;
  options: Required<
    Pick<
      LaunchOptions,
      | 'nnodes'
      | 'nodeRank'
      | 'threadsPerWorker'
      | 'maxRestarts'
      | 'monitorIntervalS'
      | 'heartbeatTimeoutS'
      | 'hangTimeoutS'
      | 'runDir'
    >
  > &
    LaunchOptions;
  nproc: number;
  masterAddr: string;
  masterPort: number;
  /** Absolute path of the trace file to write, when tracing is on. */
  traceFile: string | undefined;
}

/**
 * Starts a job: `job` is a job file path, a job object (the YAML's content), or undefined with `bench`.
 * Bad options and bad configs throw here, before any process starts.
 */
export function launch(
  job: string | Record<string, unknown> | undefined,
  options: LaunchOptions = {},
): LaunchHandle {
  const prepared = prepare(job, options);
  const queue = new EventQueue<LaunchEvent>();
  queue.push({ type: 'plan', plan: prepared.plan });
  if (options.dryRun || prepared.plan.finished) {
    queue.push({ type: 'done', ok: true, wallMs: 0 });
    queue.close();
    return {
      plan: prepared.plan,
      events: queue,
      result: Promise.resolve({ plan: prepared.plan, reports: [], wallMs: 0 }),
      abort: () => {},
    };
  }
  const run = new JobRun(prepared, queue);
  const result = run.start();
  result.catch(() => {}); // callers read `result`; an unobserved rejection must not crash their process
  return {
    plan: prepared.plan,
    events: queue,
    result,
    abort: (reason) => run.abort(reason ?? 'aborted by the caller'),
  };
}

function prepare(job: string | Record<string, unknown> | undefined, options: LaunchOptions): Prepared {
  const int = (name: string, v: number | undefined, min: number, max = Number.MAX_SAFE_INTEGER) => {
    if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) {
      throw new LaunchError(`--${name} must be an integer in ${min}..${max}, got ${v}`);
    }
  };
  int('nproc', options.nproc, 1, 1024);
  int('gpus', options.gpus, 1, 1024);
  int('nnodes', options.nnodes, 1, 4096);
  int('node-rank', options.nodeRank, 0, 4095);
  int('master-port', options.masterPort, 0, 65535);
  int('threads-per-worker', options.threadsPerWorker, 1, 256);
  int('max-restarts', options.maxRestarts, 0, 1000);
  int('heartbeat-timeout', options.heartbeatTimeoutS, 1, 86_400);
  const interval = options.monitorIntervalS;
  if (interval !== undefined && !(interval >= 0.05 && interval <= 60))
    throw new LaunchError(`--monitor-interval must be between 0.05 and 60 seconds, got ${interval}`);
  int('hang-timeout', options.hangTimeoutS, 1, 86_400);
  if (options.nproc !== undefined && options.gpus !== undefined)
    throw new LaunchError('give --nproc or --gpus, not both');
  const nnodes = options.nnodes ?? 1;
  const nodeRank = options.nodeRank ?? 0;
  if (nodeRank >= nnodes) throw new LaunchError(`--node-rank ${nodeRank} must be below --nnodes ${nnodes}`);
  if (nnodes > 1 && options.masterAddr === undefined)
    throw new LaunchError('a multi-node job needs --master-addr (node 0)');
  if (options.gpus !== undefined) requireTfjsNodeGpu();
  const nproc = options.gpus ?? options.nproc ?? 1;
  const world = nproc * nnodes;

  let parsed: ParsedJob;
  let file: string | undefined;
  if (typeof job === 'string') {
    file = resolve(job);
    parsed = loadJobFile(file, options.overrides);
  } else if (job !== undefined) {
    parsed = validateJob(job, '<job>', options.overrides);
  } else if (options.bench) {
    parsed = JobSchema.parse({ name: `bench-${options.bench.op}`, script: '<built-in>' });
  } else {
    throw new LaunchError('give a job file (kd-launch [options] JOB.yaml), or --bench allreduce');
  }
  if (options.gpus !== undefined) parsed = { ...parsed, backend: 'tensorflow-gpu' };
  const jobDir = file ? dirname(file) : process.cwd();
  const toPlan: JobToPlan = {
    job: resolveModelPaths(parsed, jobDir),
    file,
    jobDir,
    options,
    layout: { nproc, nnodes, nodeRank, world },
  };
  let prepared: Prepared;
  try {
    prepared = hasModelModule(toPlan.job) ? planInChild(toPlan) : planJob(toPlan);
  } catch (err) {
    throw err instanceof ConfigError ? attributedToOverrides(err, options.overrides ?? []) : err;
  }
  return { ...prepared, plan: withCoreCheck(prepared.plan, options.threadsPerWorker ?? 1) };
}

/** A parsed job and the launch's options, as `planJob` takes them: plain data, so that a child process can. */
export interface JobToPlan {
  job: ParsedJob;
  file: string | undefined;
  jobDir: string;
  options: LaunchOptions;
  layout: { nproc: number; nnodes: number; nodeRank: number; world: number };
}

/** What launcher/plan-job.ts answers on its fd 3. */
export type PlanReply =
  | { prepared: Prepared }
  | { configError: { file: string; issues: ConfigIssue[] } }
  | { launchError: string }
  | { error: string };

/**
 * Plans a job with a model built in code in a process of its own (launcher/plan-job.ts), waiting for it: `launch()`
 * plans at once, and a module's export is awaited.
 */
function planInChild(toPlan: JobToPlan): Prepared {
  const { entry, loader } = nodeEntry('plan-job');
  const child = spawnSync(process.execPath, [...loader, entry], {
    input: JSON.stringify(toPlan),
    // What the user's module prints goes to stderr, clear of the events `--json` writes on stdout.
    stdio: ['pipe', 2, 2, 'pipe'],
  });
  const answer = child.output?.[3]?.toString() ?? '';
  if (answer === '') {
    const how =
      child.error?.message ?? (child.signal ? `signal ${child.signal}` : `exit code ${child.status}`);
    throw new LaunchError(
      `building the job's model in code ended without a plan (${how}); its output is above`,
    );
  }
  const reply = JSON.parse(answer) as PlanReply;
  if ('prepared' in reply) return reply.prepared;
  if ('configError' in reply) throw new ConfigError(reply.configError.file, reply.configError.issues);
  if ('launchError' in reply) throw new LaunchError(reply.launchError);
  throw new Error(reply.error);
}

/** The plan of a parsed job whose models are all built: what runs where, checked against its data. */
export function planJob({ job: parsed, file, jobDir, options, layout }: JobToPlan): Prepared {
  const { nproc, nnodes, nodeRank, world } = layout;
  let program: Program;
  if (options.bench) program = { kind: 'bench-allreduce', ...options.bench };
  else if (parsed.script !== undefined) {
    const path = resolve(jobDir, parsed.script);
    if (!existsSync(path))
      throw new ConfigError(file ?? '<job>', [
        { path: 'script', line: undefined, message: `no such file: ${path}` },
      ]);
    program = { kind: 'script', path };
  } else program = { kind: 'train' };

  const runDir = runDirOf(parsed.name, options.runDir);
  const batch = program.kind === 'train' ? checkTraining(parsed, world, file, { jobDir, runDir }) : undefined;
  const traceFile = options.trace ? resolve(options.trace.path) : traceFileOf(parsed, jobDir, runDir);
  const outputs =
    program.kind === 'bench-allreduce' ? undefined : runOutputs(parsed, jobDir, runDir, traceFile);
  if (outputs) {
    const context = {
      jobDir,
      nodeRank,
      traceFromOption: options.trace !== undefined,
      runDirFromOption: options.runDir !== undefined,
    };
    checkOutputDirs(outputDirs(parsed, outputs, context), file);
  }
  const pipeline = program.kind === 'train' ? pipelinePlan(parsed, world, file) : undefined;
  const masterAddr = options.masterAddr ?? '127.0.0.1';
  const masterPort = options.masterPort ?? (nnodes > 1 ? DEFAULT_MULTINODE_PORT : 0);
  const plan: Plan = {
    jobFile: file,
    jobName: parsed.name,
    program: program.kind,
    device: options.gpus !== undefined ? 'gpu' : 'cpu',
    backend: parsed.backend,
    nnodes,
    nodeRank,
    nprocPerNode: nproc,
    world,
    master: `${masterAddr}:${masterPort === 0 ? '(free port)' : masterPort}`,
    ranks: Array.from({ length: world }, (_, rank) => ({
      rank,
      node: Math.floor(rank / nproc),
      localRank: rank % nproc,
    })),
    batch,
    schedule:
      parsed.steps !== undefined
        ? `${parsed.steps} steps`
        : parsed.epochs !== undefined
          ? `${parsed.epochs} epochs`
          : undefined,
    // The estimate is for the whole model over data-parallel ranks; a pipeline's stages hold parts of it.
    memory: program.kind === 'train' && !pipeline ? memoryPlan(parsed, world) : undefined,
    stages: program.kind === 'train' ? jobStagesPlan(parsed) : undefined,
    // Before any worker starts: a job that cannot fit this node is refused, saying so, instead of OOM-killed.
    resources:
      program.kind === 'train'
        ? checkMemory(parsed, { world, nproc, jobDir, enforce: options.memoryCheck !== false })
        : undefined,
    pipeline,
    restarts: restartsPlan(options.maxRestarts ?? 0, outputs?.checkpoints),
    outputs,
    finished: program.kind === 'train' ? finishedAt(parsed, { jobDir, runDir }) : undefined,
    fastPath: program.kind === 'train' ? fastPathWarning(parsed.backend) : undefined,
  };
  const spec: WorkerSpec = {
    job: parsed,
    batch,
    program,
    jobDir,
    runDir,
    timeoutMs: parsed.comm.timeout_s * 1000,
    trace: traceFile !== undefined,
  };
  return {
    plan,
    spec,
    options: {
      ...options,
      nnodes,
      nodeRank,
      threadsPerWorker: options.threadsPerWorker ?? 1,
      maxRestarts: options.maxRestarts ?? 0,
      monitorIntervalS: options.monitorIntervalS ?? 0.5,
      heartbeatTimeoutS: options.heartbeatTimeoutS ?? 10,
      hangTimeoutS: options.hangTimeoutS ?? 120,
      runDir,
    },
    nproc,
    masterAddr,
    masterPort,
    traceFile,
  };
}

function requireTfjsNodeGpu(): void {
  try {
    createRequire(import.meta.url).resolve('@tensorflow/tfjs-node-gpu');
  } catch {
    throw new LaunchError(
      '--gpus needs @tensorflow/tfjs-node-gpu (npm install @tensorflow/tfjs-node-gpu on a machine with CUDA and internet access); use --nproc N for CPU workers',
    );
  }
}

/** One node's share of a running job: the master's server on node 0, the agent everywhere. */
class JobRun {
  private readonly t0 = performance.now();
  private server: RendezvousServer | undefined;
  private client: RendezvousClient | undefined;
  private agent: Agent | undefined;
  /** The restart round running now (KD_RESTART_COUNT of its workers). */
  private round = 0;
  /** This round's first failure; a round that restarts forgets it. */
  private failure: Failure | undefined;
  /** The job stops for good: a caller's abort, the master's Abort, or a failure with no restart left. */
  private abortReason: string | undefined;
  /** The master's word that the job starts over (on another node, its Restart event). */
  private restartTo: number | undefined;
  /** Another node's agent, its round failed, waits for the master's verdict: Restart or Abort. */
  private verdict: (() => void) | undefined;
  private reports: { rank: number; data: unknown }[] = [];
  /** Rank 0's latest step record, for where a stopped job got to. */
  private lastStep: StepRecord | undefined;
  /** Node 0's watchdog over every rank, for the round running now. */
  private watchdog: Watchdog | undefined;
  /** Other nodes' words on their workers' processes (Linux state letters), for the watchdog. */
  private readonly remoteStates = new Map<number, string | undefined>();
  /** Another node: its workers' latest beats, forwarded to the master, and when the master was last heard. */
  private readonly localBeats = new Map<number, { beat: Beat; at: number }>();
  private nodeBeats: { send(s: NodeStatus): void; close(): void } | undefined;
  private masterHeardAt = Date.now();
  /** Where this node's workers bind across nodes: --node-addr, else node 0's master address, else the route's. */
  private nodeAddr = '';
  private readonly disconnected = new Set<number>();
  private traces = new TraceCollector();
  /** Node 0 of a training run: metrics.jsonl and the TensorBoard files, fed every event. */
  private files: RunFiles | undefined;
  private shmDir: string | undefined;
  private readonly token: string;
  private readonly jobId = randomBytes(4).toString('hex');

  constructor(
    private readonly p: Prepared,
    private readonly queue: EventQueue<LaunchEvent>,
  ) {
    const shared = process.env['KD_JOB_TOKEN'];
    if (p.options.nnodes > 1 && !shared) {
      throw new LaunchError(
        "a multi-node job needs the same KD_JOB_TOKEN (a secret) in every node's environment",
      );
    }
    this.token = shared ?? randomBytes(16).toString('hex');
  }

  private emit(e: LaunchEvent): void {
    if (e.type === 'step') this.lastStep = e.record;
    this.queue.push(e);
    this.files?.event(e);
  }

  /**
   * The run's end: its files closed and its report written from them (node 0 of a training run, whether it
   * succeeded or not), then the `done` event, which names the report.
   */
  private finish(done: Extract<LaunchEvent, { type: 'done' }>): void {
    const files = this.files;
    if (!files) {
      this.emit(done);
      return;
    }
    files.event(done);
    files.close();
    this.files = undefined;
    let report: string | undefined;
    try {
      report = writeReport(this.p.options.runDir).path;
    } catch (err) {
      this.emit({ type: 'warning', message: `kd-launch: no report written: ${(err as Error).message}` });
    }
    this.emit({ ...done, report });
  }

  /**
   * Where a rerun of a stopped single-model training job starts: its newest checkpoint, or step 0; and what its
   * command line needs for it (`resume` unset refuses a checkpoint directory that holds checkpoints).
   */
  private resumePoint(): ResumePoint | undefined {
    const { spec, plan } = this.p;
    if (spec.program.kind !== 'train' || spec.job.stages !== undefined || !this.server) return undefined;
    const dir = plan.outputs?.checkpoints;
    let header: CheckpointHeader | undefined;
    try {
      header = dir ? newestHeader(dir) : undefined;
    } catch {
      header = undefined; // unreadable: the rerun's own checks say why
    }
    return {
      reached: this.lastStep?.step,
      step: header?.step ?? 0,
      totalSteps: this.lastStep?.total_steps,
      checkpoint: header?.stepDir,
      checkpointEvery: spec.job.checkpoint?.every_steps,
      ...(header && spec.job.resume === undefined ? { set: 'resume=auto' } : {}),
    };
  }

  private readonly refusals = { count: 0, last: 0 };

  /** Reports a refusal, at most once a second: a flood of them must not become a flood of lines. */
  private refused(peer: string, why: string): void {
    const r = this.refusals;
    r.count++;
    const now = Date.now();
    if (now - r.last < 1000) return;
    this.emit({ type: 'refused', peer, why, count: r.count });
    r.count = 0;
    r.last = now;
  }

  async start(): Promise<LaunchResult> {
    const { plan } = this.p;
    // 0700 and a random name, whatever the umask: only this user can reach the workers' sockets on this machine.
    const ipcDir = mkdtempSync(join(tmpdir(), `kd-launch-${this.jobId}-`));
    this.shmDir = this.makeShmDir();
    if (this.p.options.nodeRank === 0 && plan.program !== 'bench-allreduce')
      this.files = new RunFiles({
        runDir: this.p.options.runDir,
        plan,
        job: this.p.spec.job,
        warn: (message) => this.emit({ type: 'warning', message }),
      });
    try {
      const port = await this.openControlPlane();
      this.nodeAddr =
        this.p.options.nodeAddr ??
        (this.server ? this.p.masterAddr : await addressToward(this.p.masterAddr, this.p.masterPort));
      while (!(await this.runRound(port, ipcDir))) this.round++;
      await this.drainRemote();
      if (this.server && this.p.traceFile) this.writeTrace(this.p.traceFile);
      const wallMs = performance.now() - this.t0;
      this.finish({ type: 'done', ok: true, wallMs, runDir: this.p.options.runDir });
      return { plan, reports: this.reports, wallMs };
    } catch (err) {
      const { runDir } = this.p.options;
      this.finish({
        type: 'done',
        ok: false,
        wallMs: performance.now() - this.t0,
        runDir,
        resume: this.resumePoint(),
      });
      throw err;
    } finally {
      this.nodeBeats?.close();
      await this.server?.close();
      this.client?.close();
      rmSync(ipcDir, { recursive: true, force: true });
      if (this.shmDir) rmSync(this.shmDir, { recursive: true, force: true });
      this.files?.close();
      this.queue.close();
    }
  }

  /**
   * This node's directory for its workers' shared-memory rings: 0700 and a random name on /dev/shm, removed
   * with the job (workers remove it too when their launcher dies). None with `comm.transport: zmq`,
   * KD_SHM=off, or no /dev/shm: every payload then goes over ZeroMQ.
   */
  private makeShmDir(): string | undefined {
    if (this.p.spec.job.comm.transport === 'zmq' || process.env['KD_SHM'] === 'off') return undefined;
    try {
      return mkdtempSync(`/dev/shm/kd-launch-${this.jobId}-`);
    } catch {
      return undefined;
    }
  }

  /** Node 0 serves the rendezvous; the others connect to it and follow its Abort and Restart events. */
  private async openControlPlane(): Promise<number> {
    const { plan, options } = this.p;
    if (options.nodeRank === 0) {
      this.server = await RendezvousServer.start({
        host: this.p.masterAddr,
        port: this.p.masterPort,
        token: this.token,
        jobId: this.jobId,
        world: plan.world,
        nodes: options.nnodes,
        perNode: this.p.nproc,
        specJson: JSON.stringify(this.p.spec),
        listener: {
          onJoined: (peers: readonly Peer[]) => this.emit({ type: 'joined', world: peers.length }),
          onRefused: (peer, why) => this.refused(peer, why),
          onStatus: (s) => this.onStatus(s),
          onDisconnect: (rank) => this.disconnected.add(rank),
          onNodeStatus: (s) => this.onNodeStatus(s),
          onNodeGone: (node) => this.watchdog?.nodeDone(node),
          onFailure: (f) =>
            this.fail({
              rank: f.rank,
              nodeRank: f.node_rank,
              exitCode: f.signal ? null : f.exit_code,
              signal: f.signal || null,
              lastCollective: f.last_collective,
              stderrTail: f.stderr_tail,
              memory: { lastRssBytes: f.last_rss_bytes || undefined, outOfMemory: f.out_of_memory ?? false },
            }),
        },
      });
      this.emit({ type: 'rendezvous', address: `${this.p.masterAddr}:${this.server.port}` });
      return this.server.port;
    }
    this.client = new RendezvousClient(`${this.p.masterAddr}:${this.p.masterPort}`, this.token);
    await this.client.ready(MASTER_WAIT_MS);
    this.client.events(-1, options.nodeRank, {
      abort: (a) => this.stopLocal(a.reason),
      restart: (r) => this.restartLocal(r.round, r.reason),
      // Each worker watches the master itself: one that loses it mid-job exits non-zero and is reported as
      // a failure; after a clean finish the master closing its streams is simply the end of the job.
      lost: () => {},
      heard: () => {
        this.masterHeardAt = Date.now();
      },
    });
    this.nodeBeats = this.client.nodeBeats();
    return this.p.masterPort;
  }

  /**
   * Runs this node's workers for the current round. True when they all finished; false when the job starts over
   * (the next round); throws when it stops for good.
   */
  private async runRound(port: number, ipcDir: string): Promise<boolean> {
    const { plan, options } = this.p;
    this.forgetRound();
    if (this.abortReason) throw new JobFailedError(this.abortReason, undefined);
    if (this.server)
      this.watchdog = new Watchdog(
        {
          world: plan.world,
          perNode: this.p.nproc,
          nodes: options.nnodes,
          heartbeatTimeoutMs: options.heartbeatTimeoutS * 1000,
          hangTimeoutMs: options.hangTimeoutS * 1000,
        },
        Date.now(),
        (rank) =>
          Math.floor(rank / this.p.nproc) === options.nodeRank
            ? this.agent?.processState(rank)
            : this.remoteStates.get(rank),
      );
    this.agent = new Agent({
      nodeRank: options.nodeRank,
      nproc: this.p.nproc,
      rankOffset: options.nodeRank * this.p.nproc,
      world: plan.world,
      masterAddr: this.p.masterAddr,
      masterPort: port,
      token: this.token,
      jobId: this.jobId,
      shmDir: this.shmDir,
      dataPlane:
        options.nnodes === 1
          ? `ipc:${ipcDir}`
          : `${this.p.spec.job.comm.insecure ? 'tcp-insecure' : 'tcp'}:${this.nodeAddr}`,
      restarts: { count: this.round, max: options.maxRestarts },
      workerEnv: (local) => ({
        OPENBLAS_NUM_THREADS: String(options.threadsPerWorker),
        OMP_NUM_THREADS: String(options.threadsPerWorker),
        ...(plan.device === 'gpu' ? { CUDA_VISIBLE_DEVICES: String(local) } : {}),
      }),
      onStart: (rank, pid) => this.emit({ type: 'worker-started', rank, pid }),
      onLine: (rank, stream, line) => this.emit({ type: 'log', rank, stream, line }),
      onBeat: (beat) => {
        this.files?.beat(beat.rank, beat.rssBytes);
        if (this.watchdog) this.watchdog.beat({ beat, at: Date.now() });
        else this.localBeats.set(beat.rank, { beat, at: Date.now() });
      },
      onExit: (e) => {
        this.watchdog?.done(e.rank);
        this.localBeats.delete(e.rank);
        this.emit({ type: 'worker-exited', rank: e.rank, exitCode: e.exitCode, signal: e.signal });
      },
      onFailure: (e) => this.fail(this.failureOf(e)),
    });
    this.agent.start();
    const monitor = setInterval(() => this.watch(), this.p.options.monitorIntervalS * 1000);
    try {
      await this.agent.done();
    } finally {
      clearInterval(monitor);
    }
    if (this.failure && !this.server && this.restartTo === undefined && !this.abortReason) {
      // This node's failure went to the master, which answers Restart or Abort.
      await new Promise<void>((resolve) => {
        this.verdict = resolve;
        setTimeout(resolve, MASTER_WAIT_MS).unref();
      });
      this.verdict = undefined;
    }
    if (this.restartTo !== undefined && this.restartTo > this.round && !this.abortReason) return false;
    const { failure } = this;
    if (this.abortReason) throw new JobFailedError(this.abortReason, failure);
    if (failure) {
      const max = options.maxRestarts;
      const left = max > 0 ? `; no restart left (--max-restarts ${max})` : '';
      throw new JobFailedError(`${describeFailure(failure)}${left}`, failure);
    }
    return true;
  }

  /**
   * Every half second. Node 0: the watchdog's checks (a diagnosis stops the round) and its straggler warnings.
   * Another node: its workers' pulses to the master, and whether the master is still heard.
   */
  private watch(): void {
    const now = Date.now();
    if (this.failure || this.abortReason || (this.restartTo ?? 0) > this.round) return;
    if (this.watchdog) {
      const found = this.watchdog.check(now);
      if (found) {
        this.diagnose(found);
        return;
      }
      const straggler = this.watchdog.straggler(now);
      if (straggler) this.emit({ type: 'warning', message: straggler });
      return;
    }
    const { options } = this.p;
    const workers = (this.agent?.liveRanks() ?? []).map((rank) => {
      const seen = this.localBeats.get(rank);
      return {
        rank,
        beat: seen?.beat,
        age_ms: seen ? now - seen.at : undefined,
        proc_state: this.agent?.processState(rank),
      };
    });
    this.nodeBeats?.send({
      node_rank: options.nodeRank,
      round: this.round,
      workers_json: JSON.stringify(workers),
    });
    const silentMs = now - this.masterHeardAt;
    if (silentMs > options.heartbeatTimeoutS * 1000)
      this.stopLocal(
        `node 0 (the master at ${this.p.masterAddr}:${this.p.masterPort}) is lost: no word for ${(silentMs / 1000).toFixed(1)} s; a network partition or a dead host`,
      );
  }

  /** Another node's pulses, for the watchdog: ranks it no longer lists have exited. */
  private onNodeStatus(s: NodeStatus): void {
    const now = Date.now();
    const workers = JSON.parse(s.workers_json) as {
      rank: number;
      beat?: Beat;
      age_ms?: number;
      proc_state?: string;
    }[];
    if (!Array.isArray(workers)) return;
    this.watchdog?.heard(s.node_rank, now);
    const listed = new Set<number>();
    const first = s.node_rank * this.p.nproc;
    for (const w of workers) {
      if (!Number.isInteger(w.rank) || w.rank < first || w.rank >= first + this.p.nproc) continue;
      listed.add(w.rank);
      this.remoteStates.set(w.rank, typeof w.proc_state === 'string' ? w.proc_state : undefined);
      if (w.beat && w.beat.rank === w.rank && typeof w.age_ms === 'number') {
        this.watchdog?.beat({ beat: w.beat, at: now - w.age_ms });
        this.files?.beat(w.rank, w.beat.rssBytes);
      }
    }
    for (let r = first; r < first + this.p.nproc; r++) if (!listed.has(r)) this.watchdog?.done(r);
  }

  /** The watchdog found the job stuck: its table is printed and kept as JSON, and the round stops on it. */
  private diagnose(d: Diagnosis): void {
    const path = join(this.p.options.runDir, 'flight-recorder.json');
    let written: string | undefined = path;
    try {
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(
        path,
        `${JSON.stringify({ job: this.p.plan.jobName, round: this.round, ...d }, null, 1)}\n`,
      );
    } catch (err) {
      written = undefined;
      this.emit({ type: 'warning', message: `warning: could not write ${path}: ${(err as Error).message}` });
    }
    this.emit({ type: 'diagnosis', diagnosis: d, path: written });
    this.fail({
      cause: d.headline,
      rank: d.rank ?? (d.node !== undefined ? d.node * this.p.nproc : -1),
      nodeRank: d.node ?? 0,
      exitCode: null,
      signal: null,
      lastCollective: '',
      stderrTail: [],
    });
  }

  /** What a round collects, emptied as the next one starts: the job's result is its last round's. */
  private forgetRound(): void {
    this.failure = undefined;
    this.reports = [];
    this.disconnected.clear();
    this.traces = new TraceCollector();
  }

  /** Stops the job from outside (SIGINT, the caller): every worker of every node. */
  abort(reason: string): void {
    if (this.abortReason) return;
    this.abortReason = reason;
    if (this.server) this.server.abort(reason, -1);
    else if (this.client && this.agent) {
      void this.client
        .reportFailure({
          rank: this.p.options.nodeRank * this.p.nproc,
          node_rank: this.p.options.nodeRank,
          exit_code: 0,
          signal: 'SIGINT',
          last_collective: '',
          stderr_tail: [reason],
          round: this.round,
        })
        .catch(() => {});
    }
    this.verdict?.();
    void this.agent?.teardown();
  }

  private onStatus(s: WorkerStatus): void {
    if (s.report_json) {
      const data: unknown = JSON.parse(s.report_json);
      if (isTraceChunk(data)) {
        this.traces.add(data);
        return;
      }
      // A training run's records are events of their own: the progress bars, metrics files and report read them.
      if (isRunRecord(data)) this.emit(recordEvent(data));
      else {
        this.reports.push({ rank: s.rank, data });
        this.emit({ type: 'report', rank: s.rank, data });
      }
    } else if (s.log) {
      this.emit({ type: 'log', rank: s.rank, stream: 'ctx', line: s.log });
    } else if (s.total_steps > 0) {
      this.emit({
        type: 'progress',
        rank: s.rank,
        step: s.step,
        totalSteps: s.total_steps,
        metrics: s.metrics,
      });
    }
  }

  private failureOf(e: WorkerExit): Failure {
    return {
      rank: e.rank,
      nodeRank: e.nodeRank,
      exitCode: e.exitCode,
      signal: e.signal,
      lastCollective: this.server?.lastStatus.get(e.rank)?.last_collective ?? '',
      stderrTail: e.stderrTail,
      memory: {
        lastRssBytes: e.lastRssBytes,
        // The kernel's OOM killer, or a heap that could not grow: wasm's 4 GiB, V8's old space.
        outOfMemory: e.oomKilled || e.stderrTail.some((l) => OUT_OF_MEMORY.test(l)),
      },
    };
  }

  /**
   * A round's first failure wins: it stops every node, then the master starts the job over while restarts are
   * left, or reports it and stops.
   */
  private fail(f: Failure): void {
    if (this.failure || this.abortReason) return;
    const lastCollective = f.lastCollective || (this.server?.lastStatus.get(f.rank)?.last_collective ?? '');
    this.failure = { ...f, lastCollective };
    const why = describeFailure(this.failure);
    this.emit({ type: 'failure', failure: this.failure });
    if (this.server) {
      const max = this.p.options.maxRestarts;
      if (this.round < max) {
        this.restartTo = this.round + 1;
        this.server.restart(this.restartTo, why, f.rank);
        this.emit({ type: 'restart', round: this.restartTo, maxRestarts: max, reason: why });
      } else this.server.abort(why, f.rank);
    } else
      void this.client
        ?.reportFailure({
          rank: f.rank,
          node_rank: f.nodeRank,
          exit_code: f.exitCode ?? -1,
          signal: f.signal ?? '',
          last_collective: f.lastCollective,
          stderr_tail: f.stderrTail,
          round: this.round,
          last_rss_bytes: f.memory?.lastRssBytes ?? 0,
          out_of_memory: f.memory?.outOfMemory ?? false,
        })
        .catch(() => {});
    void this.agent?.teardown();
  }

  /** Another node's failure stops this node's workers. */
  private stopLocal(reason: string): void {
    if (this.abortReason) return;
    this.abortReason = reason;
    this.verdict?.();
    void this.agent?.teardown();
  }

  /** The master starts the job over: this node's workers stop, and the next round starts them again. */
  private restartLocal(round: number, reason: string): void {
    if (this.abortReason || round <= this.round) return;
    this.restartTo = round;
    this.emit({ type: 'restart', round, maxRestarts: this.p.options.maxRestarts, reason });
    this.verdict?.();
    void this.agent?.teardown();
  }

  /** One file for the whole job, from the timelines every rank sent on its heartbeat stream before leaving. */
  private writeTrace(path: string): void {
    const traces = this.traces.traces();
    this.files?.timeline(traces);
    const trace = toChromeTrace(traces, { jobName: this.p.plan.jobName });
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, JSON.stringify(trace));
    this.emit({
      type: 'trace',
      path,
      ranks: traces.length,
      world: this.p.plan.world,
      spans: traces.reduce((n, t) => n + t.spans.length, 0),
    });
  }

  /** Node 0 keeps the master up until other nodes' workers have said goodbye, so none sees it vanish. */
  private async drainRemote(): Promise<void> {
    if (!this.server || this.p.options.nnodes === 1) return;
    const deadline = Date.now() + REMOTE_DRAIN_MS;
    while (this.disconnected.size < this.p.plan.world && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

function recordEvent(r: RunRecord): LaunchEvent {
  switch (r.kind) {
    case 'step':
      return { type: 'step', record: r };
    case 'eval':
      return { type: 'eval', record: r };
    case 'stage':
      return { type: 'stage', record: r };
  }
}

/** What a restart resumes from, for the plan: the newest verified checkpoint, or nothing (step 0). */
function restartsPlan(maxRestarts: number, checkpoints: string | undefined): string | undefined {
  if (maxRestarts === 0) return undefined;
  const from = checkpoints
    ? `each resumes from the newest verified checkpoint in ${checkpoints}`
    : 'no checkpoint.dir: each trains from step 0 again';
  return `up to ${maxRestarts} after a worker fails; ${from}`;
}

/** Model states per rank at every ZeRO stage, for `--dry-run`. */
function memoryPlan(job: ParsedJob, world: number): Plan['memory'] {
  if (!job.model || !job.optimizer) return undefined;
  const net = buildNet(job.model);
  const groups = new ParamGroups(net, []);
  const size = { parameters: groups.length, largestPair: groups.largestPair };
  const { optimizer } = job;
  return {
    stage: job.zero_optimization.stage,
    parameters: size.parameters,
    perStage: ([0, 1, 2, 3] as const).map((stage) =>
      estimateMemory(
        size,
        world,
        stage,
        optimizer,
        job.zero_optimization.stage3_max_reuse_distance,
        residentCopies(expectedBackend(job.backend)),
      ),
    ),
  };
}

/** One line per stage of a multi-stage job, for `--dry-run`: what it trains, on what objective, how long. */
function jobStagesPlan(job: ParsedJob): string[] | undefined {
  if (!job.stages) return undefined;
  return job.stages.map((stage) => {
    const merged = mergeJobStage(job, stage);
    const ref = isStageModelRef(stage.model) ? stage.model : undefined;
    const layers = ref?.layers ? `layers ${ref.layers.join(', ')} of ` : '';
    const from = ref ? ` from ${layers}stage ${ref.stage}` : '';
    const search = merged.search;
    const model = !merged.model
      ? 'no model'
      : search
        ? `${merged.model.type} search, ${search.trials} trials of at most ${search.max_parameters} parameters from ${search.min_steps} steps (eta ${search.eta}), the winner`
        : `${merged.model.type}, ${countParams(buildNet(merged.model))} parameters${from}`;
    const seeds = stage.seeds ? `, seeds ${stage.seeds.join(', ')}` : '';
    const q = merged.quantization;
    // Post-training quantization trains nothing, on no objective.
    if (q?.mode === 'ptq') {
      return `${stage.name}: ${model}; post-training quantization to ${q.bits} bits${seeds}`;
    }
    const objective = merged.distillation
      ? `distilled from ${(merged.teachers ?? []).map(describeTeacher).join(', ')}`
      : 'cross-entropy';
    const length = merged.steps !== undefined ? `${merged.steps} steps` : `${merged.epochs ?? 1} epochs`;
    return `${stage.name}: ${model}; ${objective}; ${length}${seeds}`;
  });
}
