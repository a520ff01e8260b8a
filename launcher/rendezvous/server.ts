import * as grpc from '@grpc/grpc-js';
import { LaunchError } from '../errors.ts';
import {
  type Abort,
  type BarrierRequest,
  CHANNEL_OPTIONS,
  type Empty,
  type EventsRequest,
  type Failure,
  type JobEvent,
  type JoinReply,
  type JoinRequest,
  type Peer,
  rendezvousService,
  type WorkerStatus,
} from './proto.ts';

/** What the server tells its owner (the node-0 agent) about the workers. */
export interface RendezvousListener {
  onJoined?(peers: readonly Peer[]): void;
  onStatus?(status: WorkerStatus): void;
  /** A worker's heartbeat stream ended or broke: it exited or lost the master. */
  onDisconnect?(rank: number): void;
  /** An agent of another node reports a dead worker. */
  onFailure?(failure: Failure): void;
}

export interface RendezvousOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  token: string;
  jobId: string;
  world: number;
  /** JSON handed to every worker in its JoinReply. */
  specJson: string;
  listener: RendezvousListener;
}

export class PortInUseError extends LaunchError {
  constructor(readonly port: number) {
    super(
      `master port ${port} is already in use: pick another with --master-port, or omit it to get a free one`,
    );
  }
}

type Pending<T> = { resolve: (v: T) => void; reject: (e: grpc.ServiceError | Error) => void };

function status(code: grpc.status, details: string): Partial<grpc.StatusObject> & Error {
  return Object.assign(new Error(details), { code, details });
}

/**
 * The job's master: assigns nothing it cannot check (ranks are static, so a duplicate or out-of-range
 * rank is an error), answers Join once the world is complete, runs named barriers, collects heartbeats
 * and pushes Abort to every event stream when the job is torn down.
 */
export class RendezvousServer {
  private readonly peers = new Map<number, Peer>();
  private readonly joinWaiters: (Pending<JoinReply> & { rank: number })[] = [];
  private readonly barriers = new Map<string, { ranks: Set<number>; waiters: Pending<Empty>[] }>();
  private readonly eventStreams = new Set<grpc.ServerWritableStream<EventsRequest, JobEvent>>();
  /** Latest status per rank: a failure report names the dead rank's last collective from it. */
  readonly lastStatus = new Map<number, WorkerStatus>();
  private aborted: Abort | undefined;

  private constructor(
    private readonly server: grpc.Server,
    readonly port: number,
    private readonly opts: RendezvousOptions,
  ) {}

  static async start(opts: RendezvousOptions): Promise<RendezvousServer> {
    const server = new grpc.Server({ ...CHANNEL_OPTIONS, 'grpc.so_reuseport': 0 });
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${opts.host}:${opts.port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
        err
          ? reject(/in use|No address added/i.test(err.message) ? new PortInUseError(opts.port) : err)
          : resolve(p),
      );
    });
    const rdzv = new RendezvousServer(server, port, opts);
    server.addService(rendezvousService().service, rdzv.handlers());
    return rdzv;
  }

  /** Tells every worker and agent to stop; pending joins and barriers fail. Idempotent. */
  abort(reason: string, failedRank: number): void {
    if (this.aborted) return;
    this.aborted = { reason, failed_rank: failedRank };
    for (const stream of this.eventStreams) stream.write({ abort: this.aborted });
    const err = status(grpc.status.ABORTED, reason);
    for (const w of this.joinWaiters.splice(0)) w.reject(err);
    for (const b of this.barriers.values()) for (const w of b.waiters.splice(0)) w.reject(err);
  }

  async close(): Promise<void> {
    for (const stream of this.eventStreams) stream.end();
    this.eventStreams.clear();
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
    this.server.forceShutdown();
  }

  private authorised(token: string): boolean {
    return token === this.opts.token;
  }

  private handlers(): grpc.UntypedServiceImplementation {
    const deny = status(grpc.status.UNAUTHENTICATED, 'bad job token');
    return {
      Join: (call: grpc.ServerUnaryCall<JoinRequest, JoinReply>, cb: grpc.sendUnaryData<JoinReply>) => {
        const req = call.request;
        if (!this.authorised(req.token)) return cb(deny);
        if (this.aborted) return cb(status(grpc.status.ABORTED, this.aborted.reason));
        if (req.rank >= this.opts.world) {
          return cb(
            status(grpc.status.INVALID_ARGUMENT, `rank ${req.rank} >= world size ${this.opts.world}`),
          );
        }
        if (this.peers.has(req.rank)) {
          return cb(status(grpc.status.ALREADY_EXISTS, `rank ${req.rank} joined twice`));
        }
        this.peers.set(req.rank, {
          rank: req.rank,
          endpoints: req.endpoints,
          curve_public_key: req.curve_public_key,
          node_rank: req.node_rank,
          hostname: req.hostname,
        });
        this.joinWaiters.push({ rank: req.rank, resolve: (r) => cb(null, r), reject: (e) => cb(e) });
        if (this.peers.size === this.opts.world) this.completeJoin();
      },
      Barrier: (call: grpc.ServerUnaryCall<BarrierRequest, Empty>, cb: grpc.sendUnaryData<Empty>) => {
        const { token, rank, name } = call.request;
        if (!this.authorised(token)) return cb(deny);
        if (this.aborted) return cb(status(grpc.status.ABORTED, this.aborted.reason));
        const b = this.barriers.get(name) ?? { ranks: new Set<number>(), waiters: [] };
        this.barriers.set(name, b);
        b.ranks.add(rank);
        b.waiters.push({ resolve: (r) => cb(null, r), reject: (e) => cb(e) });
        if (b.ranks.size === this.opts.world) {
          this.barriers.delete(name);
          for (const w of b.waiters) w.resolve({});
        }
      },
      Heartbeat: (call: grpc.ServerReadableStream<WorkerStatus, Empty>, cb: grpc.sendUnaryData<Empty>) => {
        let rank = -1;
        call.on('data', (s: WorkerStatus) => {
          if (!this.authorised(s.token)) return call.destroy(new Error('bad job token'));
          rank = s.rank;
          this.lastStatus.set(rank, s);
          this.opts.listener.onStatus?.(s);
        });
        const gone = () => {
          if (rank >= 0) this.opts.listener.onDisconnect?.(rank);
        };
        call.on('end', () => {
          gone();
          cb(null, {});
        });
        call.on('error', gone);
      },
      Events: (call: grpc.ServerWritableStream<EventsRequest, JobEvent>) => {
        if (!this.authorised(call.request.token)) {
          call.destroy(Object.assign(new Error('bad job token'), { code: grpc.status.UNAUTHENTICATED }));
          return;
        }
        this.eventStreams.add(call);
        if (this.aborted) call.write({ abort: this.aborted });
        call.on('cancelled', () => this.eventStreams.delete(call));
        call.on('error', () => this.eventStreams.delete(call));
      },
      ReportFailure: (call: grpc.ServerUnaryCall<Failure, Empty>, cb: grpc.sendUnaryData<Empty>) => {
        if (!this.authorised(call.request.token)) return cb(deny);
        this.opts.listener.onFailure?.(call.request);
        cb(null, {});
      },
    };
  }

  private completeJoin(): void {
    const peers = [...this.peers.values()].sort((a, b) => a.rank - b.rank);
    this.opts.listener.onJoined?.(peers);
    for (const w of this.joinWaiters.splice(0)) {
      w.resolve({
        rank: w.rank,
        world_size: this.opts.world,
        peers,
        job_id: this.opts.jobId,
        spec_json: this.opts.specJson,
      });
    }
  }
}
