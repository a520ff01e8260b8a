import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
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
  type NodeStatus,
  type Peer,
  rendezvousService,
  type WorkerStatus,
} from './proto.ts';
import { tokenCertificate } from './tls.ts';

/** What the server tells its owner (the node-0 agent) about the workers. */
export interface RendezvousListener {
  onJoined?(peers: readonly Peer[]): void;
  onStatus?(status: WorkerStatus): void;
  /** A worker's heartbeat stream ended or broke: it exited or lost the master. */
  onDisconnect?(rank: number): void;
  /** An agent of another node reports a dead worker. */
  onFailure?(failure: Failure): void;
  /** A connection was refused (no or another token, too many connections) or a message was invalid. */
  onRefused?(peer: string, why: string): void;
  /** Another node's agent forwards its workers' pulses (for the round running now). */
  onNodeStatus?(status: NodeStatus): void;
  /** Another node's agent closed its stream: it has finished (cleanly or not; its failure comes separately). */
  onNodeGone?(node: number): void;
}

export interface RendezvousOptions {
  /** The interface to listen on: the master address's, never every interface unless asked (0.0.0.0). */
  host: string;
  /** 0 picks a free port. */
  port: number;
  token: string;
  jobId: string;
  world: number;
  /** Nodes of the job and workers per node: a failure report must come from another node, for one of its ranks. */
  nodes?: number;
  perNode?: number;
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

/** How long closing waits for calls to end before it cuts them. */
const SHUTDOWN_GRACE_MS = 2000;

/** How often event streams carry a Tick: another node's agent counts the master lost after its heartbeat timeout. */
const TICK_MS = 1000;

/** Bytes a message's free-text fields may hold (a log line, a report, a stderr tail line). */
const MAX_TEXT = 1 << 20;

/**
 * The job's master: assigns nothing it cannot check (ranks are static, so a duplicate or out-of-range
 * rank is an error), answers Join once the world is complete, runs named barriers, collects heartbeats
 * and pushes Abort to every event stream when the job is torn down.
 *
 * It listens through a TLS gate (`tls.ts`: mutual TLS keyed by the job token, handshakes bounded in time,
 * connections in number) that hands each authenticated connection to the gRPC server on a socket in a private
 * directory; a refused connection is reported with its address. Every field of every message is checked before
 * it is used: a bad one is refused (and reported), never a crash.
 */
export class RendezvousServer {
  private readonly peers = new Map<number, Peer>();
  private readonly joinWaiters: (Pending<JoinReply> & { rank: number })[] = [];
  private readonly barriers = new Map<string, { ranks: Set<number>; waiters: Pending<Empty>[] }>();
  private readonly eventStreams = new Set<grpc.ServerWritableStream<EventsRequest, JobEvent>>();
  /** Latest status per rank: a failure report names the dead rank's last collective from it. */
  readonly lastStatus = new Map<number, WorkerStatus>();
  private aborted: Abort | undefined;
  private readonly ticker = setInterval(() => {
    for (const stream of this.eventStreams) stream.write({ tick: {} });
  }, TICK_MS).unref();
  /** The restart round the job is in: workers join for it, and failures of earlier rounds are stale. */
  private round = 0;

  private constructor(
    private readonly server: grpc.Server,
    private readonly gate: TlsServer,
    private readonly dir: string,
    readonly port: number,
    private readonly opts: RendezvousOptions,
    /** The gate's authenticated connections: closing cuts them, so that no peer holds the master open. */
    private readonly openSockets: ReadonlySet<Socket>,
  ) {}

  static async start(opts: RendezvousOptions): Promise<RendezvousServer> {
    // The gRPC server itself listens only on a socket in a 0700 directory: the gate is the one way in.
    const dir = mkdtempSync(join(tmpdir(), 'kd-rendezvous-'));
    const inner = join(dir, 'grpc.sock');
    const server = new grpc.Server({ ...CHANNEL_OPTIONS, 'grpc.so_reuseport': 0 });
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix:${inner}`, grpc.ServerCredentials.createInsecure(), (err) =>
        err ? reject(err) : resolve(),
      );
    });
    const refused = (peer: string, why: string) => opts.listener.onRefused?.(peer, why);
    const { cert, key } = tokenCertificate(opts.token);
    const open = new Set<Socket>();
    const gate = createTlsServer(
      {
        cert,
        key,
        ca: [cert],
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.3',
        ALPNProtocols: ['h2'],
        handshakeTimeout: 5_000,
      },
      (socket) => {
        const upstream = connect(inner);
        open.add(socket);
        socket.on('close', () => open.delete(socket));
        socket.pipe(upstream).pipe(socket);
        const end = () => {
          socket.destroy();
          upstream.destroy();
        };
        socket.on('error', end);
        upstream.on('error', end);
      },
    );
    // Workers, agents and their reconnections; beyond this a connection is refused (and reported).
    gate.maxConnections = 4 * opts.world + 16;
    // The peer's address, noted when it connects: a failed handshake may have closed the socket already.
    const peers = new WeakMap<Socket, string>();
    gate.on('connection', (raw: Socket) => peers.set(raw, `${raw.remoteAddress}:${raw.remotePort}`));
    gate.on('tlsClientError', (err, socket) => {
      // A TLS socket's underlying connection (Node's `_parent`) is the one 'connection' saw.
      const raw = (socket as unknown as { _parent?: Socket })._parent;
      refused((raw && peers.get(raw)) ?? socket.remoteAddress ?? 'unknown', err.message.trim());
      // Node closes a connection whose handshake failed (after its alert) but keeps one that timed out.
      if ((err as NodeJS.ErrnoException).code === 'ERR_TLS_HANDSHAKE_TIMEOUT') socket.destroy();
    });
    gate.on('drop', (d) =>
      refused(`${d?.remoteAddress}:${d?.remotePort}`, `more than ${gate.maxConnections} connections`),
    );
    const port = await new Promise<number>((resolve, reject) => {
      gate.once('error', (err: NodeJS.ErrnoException) =>
        reject(err.code === 'EADDRINUSE' ? new PortInUseError(opts.port) : err),
      );
      gate.listen(opts.port, opts.host, () => {
        const address = gate.address();
        resolve(typeof address === 'object' && address ? address.port : opts.port);
      });
    });
    const rdzv = new RendezvousServer(server, gate, dir, port, opts, open);
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

  /**
   * Starts the job over for `round`: every worker and agent hears Restart (workers stop, agents start theirs
   * again), pending joins and barriers fail, and the rendezvous is empty again, waiting for the new round's world.
   */
  restart(round: number, reason: string, failedRank: number): void {
    if (this.aborted || round <= this.round) return;
    this.round = round;
    const event = { restart: { round, reason, failed_rank: failedRank } };
    for (const stream of this.eventStreams) stream.write(event);
    const err = status(grpc.status.ABORTED, `the job restarts: ${reason}`);
    for (const w of this.joinWaiters.splice(0)) w.reject(err);
    for (const b of this.barriers.values()) for (const w of b.waiters.splice(0)) w.reject(err);
    this.barriers.clear();
    this.peers.clear();
    this.lastStatus.clear();
  }

  async close(): Promise<void> {
    clearInterval(this.ticker);
    for (const stream of this.eventStreams) stream.end();
    this.eventStreams.clear();
    this.gate.close();
    // A graceful shutdown waits for every call to end; a node cut off by a partition never ends its own.
    await new Promise<void>((resolve) => {
      this.server.tryShutdown(() => resolve());
      setTimeout(resolve, SHUTDOWN_GRACE_MS).unref();
    });
    this.server.forceShutdown();
    for (const s of this.openSockets) s.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Refuses `call` with INVALID_ARGUMENT and reports it, when `why` says something is wrong with it. */
  private invalid(rpc: string, why: string): Partial<grpc.StatusObject> & Error {
    this.opts.listener.onRefused?.(rpc, why);
    return status(grpc.status.INVALID_ARGUMENT, why);
  }

  /** What is wrong with a rank field, or undefined. */
  private badRank(rank: unknown): string | undefined {
    return Number.isInteger(rank) && (rank as number) >= 0 && (rank as number) < this.opts.world
      ? undefined
      : `rank ${String(rank)} is not in 0…${this.opts.world - 1}`;
  }

  private handlers(): grpc.UntypedServiceImplementation {
    return {
      Join: (call: grpc.ServerUnaryCall<JoinRequest, JoinReply>, cb: grpc.sendUnaryData<JoinReply>) => {
        const req = call.request;
        if (this.aborted) return cb(status(grpc.status.ABORTED, this.aborted.reason));
        const wrong =
          this.badRank(req.rank) ??
          (req.endpoints.length !== this.opts.world ||
          req.endpoints.some((e) => typeof e !== 'string' || e.length === 0 || e.length > 512)
            ? `Join: rank ${req.rank} gave ${req.endpoints.length} endpoints for a world of ${this.opts.world}`
            : undefined) ??
          (req.curve_public_key !== '' &&
          !/^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/.test(req.curve_public_key)
            ? `Join: rank ${req.rank}'s public key is not a Z85 CURVE key`
            : undefined) ??
          (req.hostname.length > 256 ? `Join: rank ${req.rank}'s host name is too long` : undefined) ??
          ((req.shm_rings.length !== 0 && req.shm_rings.length !== this.opts.world) ||
          req.shm_rings.some((e) => typeof e !== 'string' || e.length > 512)
            ? `Join: rank ${req.rank} gave ${req.shm_rings.length} shared-memory rings for a world of ${this.opts.world}`
            : undefined);
        if (wrong) return cb(this.invalid('Join', wrong));
        // A worker of an earlier round, still starting when the job restarted: it has nothing to join.
        if (req.round !== this.round)
          return cb(
            status(
              grpc.status.FAILED_PRECONDITION,
              `rank ${req.rank} is of round ${req.round}, the job of round ${this.round}`,
            ),
          );
        if (this.peers.has(req.rank)) {
          return cb(this.invalid('Join', `rank ${req.rank} joined twice`));
        }
        this.peers.set(req.rank, {
          rank: req.rank,
          endpoints: req.endpoints,
          curve_public_key: req.curve_public_key,
          node_rank: req.node_rank,
          hostname: req.hostname,
          shm_rings: req.shm_rings,
        });
        const waiter = {
          rank: req.rank,
          resolve: (r: JoinReply) => cb(null, r),
          reject: (e: Error) => cb(e),
        };
        this.joinWaiters.push(waiter);
        // A join given up before the world is complete leaves no trace: the rank may join again.
        call.on('cancelled', () => {
          const at = this.joinWaiters.indexOf(waiter);
          if (at < 0) return;
          this.joinWaiters.splice(at, 1);
          this.peers.delete(req.rank);
        });
        if (this.peers.size === this.opts.world) this.completeJoin();
      },
      Barrier: (call: grpc.ServerUnaryCall<BarrierRequest, Empty>, cb: grpc.sendUnaryData<Empty>) => {
        const { rank, name } = call.request;
        const wrong = this.badRank(rank) ?? (name.length > 256 ? 'Barrier: the name is too long' : undefined);
        if (wrong) return cb(this.invalid('Barrier', wrong));
        if (this.aborted) return cb(status(grpc.status.ABORTED, this.aborted.reason));
        const b = this.barriers.get(name) ?? { ranks: new Set<number>(), waiters: [] };
        this.barriers.set(name, b);
        b.ranks.add(rank);
        const waiter = { resolve: (r: Empty) => cb(null, r), reject: (e: Error) => cb(e) };
        b.waiters.push(waiter);
        // A barrier given up leaves no trace (nor does a barrier nobody waits in any more).
        call.on('cancelled', () => {
          const at = b.waiters.indexOf(waiter);
          if (at < 0) return;
          b.waiters.splice(at, 1);
          b.ranks.delete(rank);
          if (b.waiters.length === 0 && this.barriers.get(name) === b) this.barriers.delete(name);
        });
        if (b.ranks.size === this.opts.world) {
          this.barriers.delete(name);
          for (const w of b.waiters) w.resolve({});
        }
      },
      Heartbeat: (call: grpc.ServerReadableStream<WorkerStatus, Empty>, cb: grpc.sendUnaryData<Empty>) => {
        let rank = -1;
        call.on('data', (s: WorkerStatus) => {
          // A stream speaks for one rank; its report must be JSON (it reaches the launcher's callers parsed).
          const wrong =
            this.badRank(s.rank) ??
            (rank >= 0 && s.rank !== rank
              ? `Heartbeat: rank ${rank}'s stream spoke for rank ${s.rank}`
              : undefined) ??
            ([s.report_json, s.log, s.last_collective].some((t) => t.length > MAX_TEXT)
              ? `Heartbeat: rank ${s.rank} sent more than ${MAX_TEXT} bytes of text`
              : undefined) ??
            (s.report_json !== '' && !isJson(s.report_json)
              ? `Heartbeat: rank ${s.rank} sent a report that is not JSON`
              : undefined);
          if (wrong) {
            this.opts.listener.onRefused?.('Heartbeat', wrong);
            return;
          }
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
        const { rank } = call.request;
        // -1 is an agent's stream; a worker names its rank.
        const wrong = rank === -1 ? undefined : this.badRank(rank);
        if (wrong) {
          this.opts.listener.onRefused?.('Events', wrong);
          call.destroy(Object.assign(new Error(wrong), { code: grpc.status.INVALID_ARGUMENT }));
          return;
        }
        this.eventStreams.add(call);
        if (this.aborted) call.write({ abort: this.aborted });
        call.on('cancelled', () => this.eventStreams.delete(call));
        call.on('error', () => this.eventStreams.delete(call));
      },
      NodeBeats: (call: grpc.ServerReadableStream<NodeStatus, Empty>, cb: grpc.sendUnaryData<Empty>) => {
        let node = -1;
        call.on('data', (s: NodeStatus) => {
          const wrong =
            s.node_rank < 1 || s.node_rank >= (this.opts.nodes ?? 1) || (node >= 0 && s.node_rank !== node)
              ? `NodeBeats: node ${s.node_rank} is not another node of this job`
              : s.workers_json.length > MAX_TEXT || !isJson(s.workers_json)
                ? `NodeBeats: node ${s.node_rank} sent a status that is not JSON of at most ${MAX_TEXT} bytes`
                : undefined;
          if (wrong) {
            this.opts.listener.onRefused?.('NodeBeats', wrong);
            return;
          }
          node = s.node_rank;
          if (s.round === this.round) this.opts.listener.onNodeStatus?.(s);
        });
        const gone = () => {
          if (node >= 0) this.opts.listener.onNodeGone?.(node);
        };
        call.on('end', () => {
          gone();
          cb(null, {});
        });
        call.on('error', gone);
      },
      ReportFailure: (call: grpc.ServerUnaryCall<Failure, Empty>, cb: grpc.sendUnaryData<Empty>) => {
        const f = call.request;
        const nodes = this.opts.nodes ?? 1;
        const perNode = this.opts.perNode ?? this.opts.world;
        const wrong =
          this.badRank(f.rank) ??
          // Node 0's agent sees its own workers die; the others report theirs, and only theirs.
          (f.node_rank < 1 || f.node_rank >= nodes || Math.floor(f.rank / perNode) !== f.node_rank
            ? `ReportFailure: node ${f.node_rank} reported rank ${f.rank}, which is not one of its workers`
            : undefined) ??
          (f.signal !== '' && !/^SIG[A-Z0-9]{2,8}$/.test(f.signal)
            ? `ReportFailure: '${f.signal.slice(0, 16)}' is not a signal`
            : undefined) ??
          (f.exit_code > 255 ||
          f.last_collective.length > 256 ||
          f.stderr_tail.length > 200 ||
          f.stderr_tail.some((l) => l.length > MAX_TEXT)
            ? `ReportFailure: rank ${f.rank}'s report is out of bounds`
            : undefined);
        if (wrong) return cb(this.invalid('ReportFailure', wrong));
        // A worker of an earlier round died of the restart itself: not news.
        if (f.round === this.round) this.opts.listener.onFailure?.(f);
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

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}
