/**
 * Start-up, as a user meets it: from `kd-launch --nproc N` on the command line to the workers' first barrier, and
 * on to TensorFlow.js's backend ready in every worker, with where the time goes. Beside it, the limit measured in
 * the same run: N bare `node` processes started at once, until the last has exited.
 *
 * The workers run a plain JS script (no TypeScript to load): barrier, load TensorFlow.js and select the backend as
 * a training job does, barrier. Times are wall-clock milliseconds on this machine's clock, from the moment the command is spawned.
 *
 *   npx tsx bench/startup.ts [--nproc 4] [--runs 3] [--json]      (needs `npm run build`: workers run dist/)
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { PACKAGE_ROOT } from '../src/base/package-root.ts';

/** The number after `--name` (not common.ts's: that one loads TensorFlow.js into this process). */
function flag(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
}

const NPROC = flag('nproc', 4);
const RUNS = flag('runs', 3);
const JSON_ONLY = process.argv.includes('--json');

/** What each worker reports: epoch milliseconds. */
interface WorkerTimes {
  rank: number;
  /** The worker's process started (Node's time origin). */
  origin: number;
  /** The script's main(ctx) was called: the worker's modules loaded, the rendezvous joined, the links up. */
  main: number;
  firstBarrier: number;
  backendReady: number;
  secondBarrier: number;
}

const dir = mkdtempSync(join(tmpdir(), 'kd-bench-startup-'));
const select = pathToFileURL(join(PACKAGE_ROOT, 'dist', 'src', 'backend', 'select.js')).href;
writeFileSync(
  join(dir, 'startup.worker.mjs'),
  `export async function main(ctx) {
  const main = Date.now();
  await ctx.pg.barrier();
  const firstBarrier = Date.now();
  const { selectBackend } = await import(${JSON.stringify(select)});
  await selectBackend('auto');
  const backendReady = Date.now();
  await ctx.pg.barrier();
  ctx.report({ rank: ctx.rank, origin: performance.timeOrigin, main, firstBarrier, backendReady, secondBarrier: Date.now() });
}
`,
);
writeFileSync(join(dir, 'startup.yaml'), 'name: bench-startup\nscript: ./startup.worker.mjs\n');

/** Milliseconds from spawning `args` to each line-event, and the end. */
function run(
  args: string[],
  onLine: (line: string, at: number) => void = () => {},
): Promise<{ start: number; end: number }> {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    createInterface({ input: child.stdout }).on('line', (line) => onLine(line, Date.now()));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0
        ? resolve({ start, end: Date.now() })
        : reject(new Error(`${args.join(' ')} exited ${code}`)),
    );
  });
}

async function bareNodes(): Promise<number> {
  const start = Date.now();
  await Promise.all(Array.from({ length: NPROC }, () => run(['-e', ''])));
  return Date.now() - start;
}

async function launchOnce() {
  const seen: Record<string, number> = {};
  const spawned: number[] = [];
  const workers: WorkerTimes[] = [];
  const { start, end } = await run(
    [
      join(PACKAGE_ROOT, 'bin', 'kd-launch.js'),
      '--nproc',
      String(NPROC),
      '--json',
      join(dir, 'startup.yaml'),
    ],
    (line, at) => {
      if (!line.startsWith('{')) return;
      // --json prints a report event with the reported fields beside `type`.
      const e = JSON.parse(line) as { type: string } & WorkerTimes;
      if (e.type === 'worker-started') spawned.push(at);
      else if (e.type === 'report') workers.push(e);
      else seen[e.type] ??= at;
    },
  );
  if (workers.length !== NPROC) throw new Error(`${workers.length} of ${NPROC} workers reported`);
  const last = (key: keyof WorkerTimes) => Math.round(Math.max(...workers.map((w) => w[key])) - start);
  const firstSpawn = Math.min(...spawned) - start;
  return {
    nproc: NPROC,
    launcher_plan_ms: seen['plan'] - start,
    rendezvous_up_ms: seen['rendezvous'] - start,
    first_worker_spawned_ms: firstSpawn,
    last_worker_node_started_ms: last('origin'),
    all_joined_ms: seen['joined'] - start,
    last_main_ms: last('main'),
    first_barrier_ms: last('firstBarrier'),
    backend_ready_ms: last('backendReady'),
    second_barrier_ms: last('secondBarrier'),
    exit_ms: end - start,
  };
}

try {
  for (let r = 0; r < RUNS; r++) {
    const limit = await bareNodes();
    const t = await launchOnce();
    const row = { ...t, bare_node_ms: limit };
    console.log(
      JSON_ONLY
        ? JSON.stringify(row)
        : `${NPROC} workers: first barrier at ${t.first_barrier_ms} ms, backend ready in all at ${t.backend_ready_ms} ms ` +
            `(limit: ${NPROC} bare node processes in ${limit} ms) — launcher planned at ${t.launcher_plan_ms}, ` +
            `rendezvous up ${t.rendezvous_up_ms}, first worker spawned ${t.first_worker_spawned_ms}, last worker's node up ` +
            `${t.last_worker_node_started_ms}, all joined ${t.all_joined_ms}, last main(ctx) ${t.last_main_ms}, ` +
            `exit ${t.exit_ms}`,
    );
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
