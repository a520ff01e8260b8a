import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { PACKAGE_ROOT } from '../../src/base/package-root.ts';

/** TypeScript views of proto/rendezvous.proto (loaded at run time, so no generated code to keep in sync). */

export interface JoinRequest {
  rank: number;
  local_rank: number;
  node_rank: number;
  endpoints: string[];
  curve_public_key: string;
  pid: number;
  hostname: string;
  round: number;
  shm_rings: string[];
}
export interface Peer {
  rank: number;
  endpoints: string[];
  curve_public_key: string;
  node_rank: number;
  hostname: string;
  shm_rings: string[];
}
export interface JoinReply {
  rank: number;
  world_size: number;
  peers: Peer[];
  job_id: string;
  spec_json: string;
}
export interface BarrierRequest {
  rank: number;
  name: string;
}
export interface WorkerStatus {
  rank: number;
  step: number;
  total_steps: number;
  metrics: Record<string, number>;
  last_collective: string;
  report_json: string;
  log: string;
}
export interface EventsRequest {
  rank: number;
  node_rank: number;
}
export interface Abort {
  reason: string;
  failed_rank: number;
}
export interface Restart {
  round: number;
  reason: string;
  failed_rank: number;
}
export interface JobEvent {
  abort?: Abort;
  restart?: Restart;
  tick?: Empty;
  event?: 'abort' | 'restart' | 'tick';
}
export interface NodeStatus {
  node_rank: number;
  round: number;
  workers_json: string;
}
export interface Failure {
  rank: number;
  node_rank: number;
  exit_code: number;
  signal: string;
  last_collective: string;
  stderr_tail: string[];
  round: number;
  /** Optional when sent (an abort has no worker's memory to report); proto3 defaults fill them when received. */
  last_rss_bytes?: number;
  out_of_memory?: boolean;
}
export type Empty = Record<string, never>;

const PROTO_PATH = join(PACKAGE_ROOT, 'proto', 'rendezvous.proto');

interface RendezvousPackage {
  kdlaunch: { v1: { Rendezvous: grpc.ServiceClientConstructor } };
}

// grpc-js logs its own copy of errors we already report in one clear line; GRPC_VERBOSITY brings it back.
if (process.env['GRPC_VERBOSITY'] === undefined) grpc.setLogVerbosity(grpc.logVerbosity.NONE);

let loaded: grpc.ServiceClientConstructor | undefined;
export function rendezvousService(): grpc.ServiceClientConstructor {
  if (!loaded) {
    const def = protoLoader.loadSync(PROTO_PATH, {
      keepCase: true,
      longs: Number,
      defaults: true,
      oneofs: true,
    });
    loaded = (grpc.loadPackageDefinition(def) as unknown as RendezvousPackage).kdlaunch.v1.Rendezvous;
  }
  return loaded;
}

/**
 * Channel options both ends share. A dead process is noticed at once without keepalive (the kernel closes
 * its sockets; the agent sees the exit), so keepalive only has to catch a lost network between nodes. Its
 * timeout must outlast the longest stretch a worker computes without yielding to the event loop (it cannot
 * answer a ping meanwhile): a minute, not seconds.
 */
export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 60_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 5_000,
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
};
