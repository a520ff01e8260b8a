/**
 * The entry point of one worker process: join the rendezvous, build the process group, run the program,
 * leave cleanly. Started by the agent, never by users.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { importUserModule } from '../src/base/user-module.ts';
import { type CurveKeys, curveKeys } from '../src/comm/curve.ts';
import { describeEntry } from '../src/comm/flight-recorder.ts';
import { ProcessGroup } from '../src/comm/process-group.ts';
import { loadShmBinding, type ShmBinding } from '../src/comm/shm-ring.ts';
import { Transport } from '../src/comm/transport.ts';
import { Timeline } from '../src/trace/timeline.ts';
import { traceChunks } from '../src/trace/wire.ts';
import type { Progress, WorkerContext, WorkerMain } from '../src/trainer/context.ts';
import { runAllReduceBench } from './bench-allreduce.ts';
import { startPulse } from './pulse.ts';
import { RendezvousClient } from './rendezvous/client.ts';
import { ENV, EXIT_ABORTED, PULSE_FD, type WorkerSpec } from './worker-spec.ts';

const JOIN_TIMEOUT_MS = 120_000;
/** Often enough that a dead rank's report names the collective it was really in. */
const HEARTBEAT_MS = 250;

function env(name: string): string {
  const v = process.env[name];
  if (v === undefined) throw new Error(`${name} is not set: workers are started by kd-launch, not by hand`);
  return v;
}

/**
 * Where this worker binds its data-plane sockets (one per rank it receives from), the address peers should dial,
 * and whether its links are encrypted. On one node: socket files with unguessable names in the job's private
 * directory. Across nodes: tcp, with CURVE unless the job says `comm.insecure`.
 */
function dataPlane(rank: number): {
  bind: (source: number) => string;
  advertise: (bound: string) => string;
  curve: CurveKeys | undefined;
} {
  const spec = env(ENV.dataPlane);
  if (spec.startsWith('ipc:')) {
    const dir = spec.slice(4);
    const name = randomBytes(9).toString('hex');
    return {
      bind: (source) => `ipc://${join(dir, `${name}-${rank}-from-${source}.sock`)}`,
      advertise: (bound) => bound,
      curve: undefined,
    };
  }
  const [scheme, host] = [spec.slice(0, spec.indexOf(':')), spec.slice(spec.indexOf(':') + 1)];
  const curve = scheme === 'tcp-insecure' ? undefined : curveKeys();
  // ZeroMQ binds interfaces, not host names: a named host (docker-compose's `node1`) binds every interface
  // and advertises the name; an IP address binds just that interface.
  if (isIP(host)) return { bind: () => `tcp://${host}:*`, advertise: (bound) => bound, curve };
  return { bind: () => 'tcp://0.0.0.0:*', advertise: (bound) => bound.replace('0.0.0.0', host), curve };
}

/**
 * Removes the one-node job's socket directory: every worker of the job is leaving with its launcher (its agent's
 * stdin ended, or the master on this node is gone). A no-op across nodes, whose links are tcp.
 */
function removeLocalPlane(): void {
  const spec = process.env[ENV.dataPlane] ?? '';
  if (spec.startsWith('ipc:')) rmSync(spec.slice(4), { recursive: true, force: true });
  const shmDir = process.env[ENV.shmDir];
  if (shmDir) rmSync(shmDir, { recursive: true, force: true });
}

/**
 * The node's shared-memory rings, when the launcher made their directory and the binding loads; otherwise
 * every payload goes over ZeroMQ (a missing binding is said once, by rank 0, as the job starts).
 */
function sharedMemory(rank: number): { dir: string; binding: ShmBinding } | undefined {
  const dir = process.env[ENV.shmDir];
  if (!dir) return undefined;
  const load = loadShmBinding();
  if (load.binding) return { dir, binding: load.binding };
  if (rank === 0)
    process.stderr.write(`kd-launch: shared memory off (${load.reason}); payloads go over ZeroMQ\n`);
  return undefined;
}

async function loadScript(path: string): Promise<WorkerMain> {
  const mod = await importUserModule(path);
  const main = mod['main'] ?? mod['default'];
  if (typeof main !== 'function') throw new Error(`${path} must export a function main(ctx)`);
  return main as WorkerMain;
}

async function main(aborter: AbortController): Promise<void> {
  const rank = Number(env(ENV.rank));
  // First of all: the agent hears this worker from here on, whatever blocks it later.
  const pulse = startPulse(PULSE_FD, rank);
  const nodeRank = Number(env(ENV.nodeRank));
  const localRank = Number(env(ENV.localRank));
  const master = `${env(ENV.masterAddr)}:${env(ENV.masterPort)}`;
  const client = new RendezvousClient(master, env(ENV.token));
  const restartCount = Number(process.env[ENV.restartCount] ?? 0);

  // The agent holds our stdin open: when it dies (even by kill -9), stdin ends and so do we, taking the job's
  // private socket directory with us, since the launcher that made it can no longer remove it.
  process.stdin.on('end', () => {
    removeLocalPlane();
    process.exit(EXIT_ABORTED);
  });
  process.stdin.resume();

  const plane = dataPlane(rank);
  const transport = await Transport.bind({
    rank,
    world: Number(env(ENV.world)),
    bind: plane.bind,
    curve: plane.curve,
    shm: sharedMemory(rank),
  });
  const reply = await client.join(
    {
      rank,
      local_rank: localRank,
      node_rank: nodeRank,
      endpoints: transport.endpoints.map(plane.advertise),
      curve_public_key: plane.curve?.publicKey ?? '',
      shm_rings: transport.shmRings,
      pid: process.pid,
      hostname: hostname(),
      round: restartCount,
    },
    JOIN_TIMEOUT_MS,
  );
  const spec = JSON.parse(reply.spec_json) as WorkerSpec;
  // Peer j receives from this rank on its socket for this rank, and on its ring for this rank when on this node.
  transport.connect(
    reply.peers.map((p) => ({
      endpoint: p.endpoints[rank],
      publicKey: p.curve_public_key || undefined,
      shmRing: (p.node_rank === nodeRank && p.shm_rings[rank]) || undefined,
    })),
  );
  const pg = ProcessGroup.create({ transport, timeoutMs: spec.timeoutMs, recorder: pulse.recorder });

  const stop = (why: string) => {
    const err = new Error(why);
    pg.abort(err);
    aborter.abort(err);
    // Let the abort unwind pending awaits and flush stderr, then leave even if the program ignores it.
    setTimeout(() => process.exit(EXIT_ABORTED), 200).unref();
  };
  const unsubscribe = client.events(rank, nodeRank, {
    abort: (a) => stop(`job aborted: ${a.reason}`),
    lost: (why) => {
      process.stderr.write(`rank ${rank} lost the master at ${master}: ${why}\n`);
      // On one node the master is the launcher: gone, it cannot remove the job's socket directory any more.
      removeLocalPlane();
      stop(`lost the master at ${master}: ${why}`);
    },
  });

  const hb = client.heartbeat();
  let progress: Progress = { step: 0, totalSteps: 0, metrics: {} };
  const status = (extra: { report_json?: string; log?: string } = {}) =>
    hb.send({
      rank,
      step: progress.step,
      total_steps: progress.totalSteps,
      metrics: progress.metrics,
      last_collective: pg.lastCollective ? describeEntry(pg.lastCollective) : '',
      report_json: extra.report_json ?? '',
      log: extra.log ?? '',
    });
  status();
  const beat = setInterval(status, HEARTBEAT_MS);

  const timeline = spec.trace ? new Timeline() : Timeline.disabled;
  const ctx: WorkerContext = {
    rank,
    world: reply.world_size,
    localRank,
    nodeRank,
    restartCount,
    job: spec.job,
    batch: spec.batch,
    pg,
    args: spec.job.args,
    jobDir: spec.jobDir,
    runDir: spec.runDir,
    signal: aborter.signal,
    report: (data) => status({ report_json: JSON.stringify(data) }),
    progress: (p) => {
      progress = p;
      pulse.step(p.step);
    },
    log: (message) => status({ log: message }),
    timeline,
  };

  const program = spec.program;
  switch (program.kind) {
    case 'train': {
      // Loaded on demand: benchmarks and user scripts should not pay for TensorFlow.js.
      const { runTraining } = await import('../src/trainer/train.ts');
      await runTraining(ctx);
      break;
    }
    case 'script':
      await (await loadScript(program.path))(ctx);
      break;
    case 'bench-allreduce':
      await runAllReduceBench(ctx, program, transport);
      break;
  }

  // Everyone finishes together, so no peer tears down sockets another still reads from.
  await pg.barrier();
  clearInterval(beat);
  // On the heartbeat stream like ctx.report, before it closes: its acknowledged close means the trace arrived.
  if (timeline.enabled)
    for (const chunk of traceChunks(timeline.toRankTrace(rank)))
      status({ report_json: JSON.stringify(chunk) });
  status();
  unsubscribe();
  await hb.close();
  await pg.close();
  client.close();
  pulse.stop();
  process.exit(0);
}

const aborted = new AbortController();

main(aborted).catch((err: unknown) => {
  // A rank stopped because another failed is not news: the launcher reports the one that failed first.
  if (aborted.signal.aborted) process.exit(EXIT_ABORTED);
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
