import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { COMPILED, PACKAGE_ROOT } from '../src/base/package-root.ts';
import type { Beat } from './pulse.ts';
import { ENV, PULSE_FD } from './worker-spec.ts';

/**
 * A launcher entry file (`worker`, `plan-job`) and how Node starts it: compiled, as it is; from sources, the
 * compiled file too when dist/ is at least as new as every source (tsx costs each process ~1 s of loading, and a
 * test suite or a source checkout starts hundreds), else through tsx.
 */
export function nodeEntry(name: string): { entry: string; loader: string[] } {
  if (COMPILED) return { entry: fileURLToPath(new URL(`./${name}.js`, import.meta.url)), loader: [] };
  if (compiledIsFresh()) return { entry: join(PACKAGE_ROOT, 'dist', 'launcher', `${name}.js`), loader: [] };
  return {
    entry: fileURLToPath(new URL(`./${name}.ts`, import.meta.url)),
    // The source condition: the process's own `import 'kd-launch'` (a user script, an example, a user's model
    // module) stays on sources too.
    loader: ['--import', import.meta.resolve('tsx'), '--conditions', 'kd-launch:source'],
  };
}

let fresh: boolean | undefined;

/** Whether every source file under src/ and launcher/ has a compiled twin in dist/ at least as new (once). */
function compiledIsFresh(): boolean {
  fresh ??= ['src', 'launcher'].every((top) =>
    (readdirSync(join(PACKAGE_ROOT, top), { recursive: true }) as string[])
      .filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'))
      .every((file) => {
        const compiled = join(PACKAGE_ROOT, 'dist', top, file.replace(/\.ts$/, '.js'));
        return (
          existsSync(compiled) &&
          statSync(compiled).mtimeMs >= statSync(join(PACKAGE_ROOT, top, file)).mtimeMs
        );
      }),
  );
  return fresh;
}

/** The worker's entry. */
const WORKER = nodeEntry('worker');
const STDERR_TAIL_LINES = 20;
/**
 * Every received ZeroMQ frame is external memory to V8, and a worker receives its model's size every step; with
 * incremental marking V8 answers that with a stream of marking steps and finalisation tasks interleaved with the
 * receive loop. Atomic mark-compacts cost less in total: ring all-reduce at 16 MiB ran at 0.35–0.38 GB/s bus
 * bandwidth with it and 0.46–0.72 without (bench/RESULTS.md). Workers want throughput, not short pauses.
 */
const WORKER_V8_FLAGS = ['--no-incremental-marking'];
/** Abort first; SIGTERM the stragglers 1 s later and SIGKILL them 2.5 s after that, 3.5 s after the abort. */
const TERM_AFTER_MS = 1000;
const KILL_AFTER_MS = 2500;

/** How a worker process ended, as the agent saw it. */
export interface WorkerExit {
  rank: number;
  nodeRank: number;
  pid: number;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stderrTail: string[];
  /** The resident set its last heartbeat reported, and whether the kernel's OOM killer ended it. */
  lastRssBytes: number | undefined;
  oomKilled: boolean;
}

export interface AgentOptions {
  nodeRank: number;
  nproc: number;
  /** Global rank of this node's local rank 0. */
  rankOffset: number;
  world: number;
  masterAddr: string;
  masterPort: number;
  token: string;
  jobId: string;
  dataPlane: string;
  /** The node's shared-memory ring directory (see `ENV.shmDir`), when its workers share memory. */
  shmDir: string | undefined;
  /** The restart round these workers run in, and the most the job allows (torchrun's variables say both). */
  restarts: { count: number; max: number };
  /** Extra environment per local rank (CUDA_VISIBLE_DEVICES, BLAS threads). */
  workerEnv(localRank: number): Record<string, string>;
  onStart(rank: number, pid: number): void;
  onLine(rank: number, stream: 'stdout' | 'stderr', line: string): void;
  /** A worker's heartbeat from its pulse thread. */
  onBeat(beat: Beat): void;
  onExit(exit: WorkerExit): void;
  /** The first worker of this node that ended badly on its own (not by our teardown). */
  onFailure(exit: WorkerExit): void;
}

interface Worker {
  rank: number;
  lastRssBytes: number | undefined;
  child: ChildProcess;
  stderrTail: string[];
  exited: Promise<void>;
  alive: boolean;
}

/** One node's supervisor (torch.distributed.elastic's agent): spawns the local workers and watches them. */
export class Agent {
  private readonly workers: Worker[] = [];
  private tearingDown = false;

  constructor(private readonly opts: AgentOptions) {}

  start(): void {
    for (let local = 0; local < this.opts.nproc; local++) this.workers.push(this.spawnWorker(local));
  }

  /** Resolves when every local worker has exited. */
  async done(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.exited));
  }

  /**
   * Linux's one-letter state of a local worker's process (R, S, D, T, Z…), or undefined: it is what tells a
   * stopped worker (T) from a busy one when its heartbeats stop.
   */
  processState(rank: number): string | undefined {
    const pid = this.workers.find((w) => w.rank === rank && w.alive)?.child.pid;
    if (pid === undefined) return undefined;
    try {
      // /proc/PID/stat: "pid (comm) S …"; comm may hold spaces and parentheses, so read after the last ')'.
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) || undefined;
    } catch {
      return undefined;
    }
  }

  /** The local ranks whose processes are running. */
  liveRanks(): number[] {
    return this.workers.filter((w) => w.alive).map((w) => w.rank);
  }

  get pids(): number[] {
    return this.workers.flatMap((w) => (w.child.pid === undefined ? [] : [w.child.pid]));
  }

  /** Stops every local worker: they were told to abort already; SIGTERM, then SIGKILL the stragglers. */
  async teardown(): Promise<void> {
    if (!this.tearingDown) {
      this.tearingDown = true;
      const signalAll = (sig: NodeJS.Signals) => {
        for (const w of this.workers) if (w.alive) w.child.kill(sig);
      };
      const term = setTimeout(() => signalAll('SIGTERM'), TERM_AFTER_MS);
      const kill = setTimeout(() => signalAll('SIGKILL'), TERM_AFTER_MS + KILL_AFTER_MS);
      this.done().then(() => {
        clearTimeout(term);
        clearTimeout(kill);
      });
    }
    await this.done();
  }

  private spawnWorker(localRank: number): Worker {
    const o = this.opts;
    const rank = o.rankOffset + localRank;
    const env = {
      ...process.env,
      [ENV.rank]: String(rank),
      [ENV.localRank]: String(localRank),
      [ENV.world]: String(o.world),
      [ENV.localWorld]: String(o.nproc),
      [ENV.nodeRank]: String(o.nodeRank),
      [ENV.masterAddr]: o.masterAddr,
      [ENV.masterPort]: String(o.masterPort),
      [ENV.restartCount]: String(o.restarts.count),
      TORCHELASTIC_RESTART_COUNT: String(o.restarts.count),
      TORCHELASTIC_MAX_RESTARTS: String(o.restarts.max),
      [ENV.token]: o.token,
      [ENV.jobId]: o.jobId,
      [ENV.dataPlane]: o.dataPlane,
      ...(o.shmDir ? { [ENV.shmDir]: o.shmDir } : {}),
      ...o.workerEnv(localRank),
    };
    // KD_WORKER_EXEC_ARGV passes Node flags to every worker (--cpu-prof, --inspect=0, --max-old-space-size=…).
    const nodeFlags = [
      ...WORKER_V8_FLAGS,
      ...(process.env['KD_WORKER_EXEC_ARGV'] ?? '').split(/\s+/).filter(Boolean),
    ];
    const child = spawn(process.execPath, [...nodeFlags, ...WORKER.loader, WORKER.entry], {
      env,
      stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
    });
    const worker: Worker = {
      rank,
      child,
      stderrTail: [],
      alive: true,
      exited: Promise.resolve(),
      lastRssBytes: undefined,
    };
    const oomKillsAtStart = oomKills();
    o.onStart(rank, child.pid ?? -1);
    forEachLine(child.stdout!, (line) => o.onLine(rank, 'stdout', line));
    forEachLine(child.stdio[PULSE_FD] as NodeJS.ReadableStream, (line) => {
      const beat = parseBeat(line, rank);
      if (!beat) return;
      worker.lastRssBytes = beat.rssBytes;
      o.onBeat(beat);
    });
    forEachLine(child.stderr!, (line) => {
      worker.stderrTail.push(line);
      if (worker.stderrTail.length > STDERR_TAIL_LINES) worker.stderrTail.shift();
      o.onLine(rank, 'stderr', line);
    });
    child.stdin!.on('error', () => {}); // a worker that exits closes the pipe; that is not an error here
    worker.exited = new Promise((resolve) => {
      // 'close' rather than 'exit': the stderr tail is complete only once the pipes have drained.
      child.on('close', (code, signal) => {
        worker.alive = false;
        const exit: WorkerExit = {
          rank,
          nodeRank: o.nodeRank,
          pid: child.pid ?? -1,
          exitCode: code,
          signal,
          stderrTail: worker.stderrTail,
          lastRssBytes: worker.lastRssBytes,
          // The OOM killer sends SIGKILL; the kernel counts its kills (/proc/vmstat), so a new one since this worker
          // started is most likely it. Without the counter, the failure says only SIGKILL and the last RSS.
          oomKilled: signal === 'SIGKILL' && oomKills() > oomKillsAtStart,
        };
        o.onExit(exit);
        // Once we tear down, exits are our doing; before that, any non-zero exit is the job's failure.
        if (code !== 0 && !this.tearingDown) o.onFailure(exit);
        resolve();
      });
    });
    return worker;
  }
}

/** How many processes the kernel's OOM killer has killed since boot (0 where it does not say). */
function oomKills(): number {
  try {
    return Number(/^oom_kill (\d+)$/m.exec(readFileSync('/proc/vmstat', 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** A beat as the worker's pulse wrote it, or undefined for anything else: the pipe is the worker's to write. */
function parseBeat(line: string, rank: number): Beat | undefined {
  if (line.length > 1 << 20) return undefined;
  try {
    const beat = JSON.parse(line) as Beat;
    return beat.rank === rank && Array.isArray(beat.flight) && typeof beat.t === 'number' ? beat : undefined;
  } catch {
    return undefined;
  }
}

function forEachLine(stream: NodeJS.ReadableStream, fn: (line: string) => void): void {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const lines = (rest + chunk).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) fn(line);
  });
  stream.on('end', () => {
    if (rest) fn(rest);
  });
}
