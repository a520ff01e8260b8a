import type { WireDtype } from '../src/comm/types.ts';
import type { BatchPlan } from '../src/config/batch.ts';
import type { ParsedJob } from '../src/config/schema.ts';

/** What every worker runs: the built-in trainer, a user script, or a built-in benchmark. */
export type Program =
  | { kind: 'train' }
  | { kind: 'script'; path: string }
  | {
      kind: 'bench-allreduce';
      sizesMiB: number[];
      dtype: WireDtype;
      iters: number;
      transports?: readonly ('shm' | 'zmq')[];
    };

/** Sent to each worker in its JoinReply, so workers of every node run the master's validated job. */
export interface WorkerSpec {
  job: ParsedJob;
  batch: BatchPlan | undefined;
  program: Program;
  jobDir: string;
  /** The run directory, absolute. */
  runDir: string;
  timeoutMs: number;
  /** Record a timeline (`ctx.timeline`) and send it to the launcher at the end. */
  trace?: boolean;
}

/** The pipe a worker's pulse (launcher/pulse.ts) writes its heartbeats to: the agent's fourth stdio entry. */
export const PULSE_FD = 3;

/** Exit code of a worker that stopped because the job was aborted (not a failure of its own). */
export const EXIT_ABORTED = 75;

/** Environment variable names the agent sets for its workers (torchrun's, plus ours). */
export const ENV = {
  rank: 'RANK',
  localRank: 'LOCAL_RANK',
  world: 'WORLD_SIZE',
  localWorld: 'LOCAL_WORLD_SIZE',
  nodeRank: 'NODE_RANK',
  masterAddr: 'MASTER_ADDR',
  masterPort: 'MASTER_PORT',
  restartCount: 'KD_RESTART_COUNT',
  token: 'KD_JOB_TOKEN',
  jobId: 'KD_JOB_ID',
  /**
   * Where this worker binds its data-plane sockets: `ipc:DIR` on one node (the job's private directory),
   * `tcp:HOST` across nodes (CURVE on every link), `tcp-insecure:HOST` with `comm.insecure: true`.
   */
  dataPlane: 'KD_DATA_PLANE',
  /**
   * The node's private directory (0700, on a tmpfs) for the shared-memory rings between its workers; unset
   * when payloads go over ZeroMQ only (`comm.transport: zmq`, KD_SHM=off, or no /dev/shm).
   */
  shmDir: 'KD_SHM_DIR',
} as const;
