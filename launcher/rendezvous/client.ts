import * as grpc from '@grpc/grpc-js';
import {
  type Abort,
  CHANNEL_OPTIONS,
  type Empty,
  type Failure,
  type JobEvent,
  type JoinReply,
  type JoinRequest,
  type NodeStatus,
  type Restart,
  rendezvousService,
  type WorkerStatus,
} from './proto.ts';
import { TLS_NAME, tokenCertificate } from './tls.ts';

type Unary<Req, Res> = (
  req: Req,
  meta: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: Res) => void,
) => grpc.ClientUnaryCall;

interface RendezvousStub extends grpc.Client {
  Join: Unary<JoinRequest, JoinReply>;
  Barrier: Unary<{ rank: number; name: string }, Empty>;
  ReportFailure: Unary<Failure, Empty>;
  Heartbeat(
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null) => void,
  ): grpc.ClientWritableStream<WorkerStatus>;
  Events(req: { rank: number; node_rank: number }): grpc.ClientReadableStream<JobEvent>;
  NodeBeats(
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null) => void,
  ): grpc.ClientWritableStream<NodeStatus>;
}

export interface EventHandlers {
  abort(a: Abort): void;
  restart?(r: Restart): void;
  lost(why: string): void;
  /** Any event at all, the master's Ticks included: the master is alive. */
  heard?(): void;
}

/**
 * A worker's or an agent's connection to the job's master, over mutual TLS with the certificate the job token
 * derives (`tls.ts`): it trusts that certificate alone and presents it back. Every unary call has a deadline.
 */
export class RendezvousClient {
  private readonly stub: RendezvousStub;

  constructor(
    readonly address: string,
    token: string,
  ) {
    const Ctor = rendezvousService();
    const { cert, key } = tokenCertificate(token);
    this.stub = new Ctor(address, grpc.credentials.createSsl(cert, key, cert), {
      ...CHANNEL_OPTIONS,
      // The certificate names the job, not a host: the master may be reached by any address.
      'grpc.ssl_target_name_override': TLS_NAME,
      'grpc.default_authority': TLS_NAME,
    }) as unknown as RendezvousStub;
  }

  /** Waits until the master answers: other nodes may start before node 0 does. */
  ready(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.stub.waitForReady(Date.now() + timeoutMs, (err) =>
        err
          ? reject(new Error(`no rendezvous at ${this.address} within ${timeoutMs} ms: is node 0 running?`))
          : resolve(),
      );
    });
  }

  join(req: JoinRequest, timeoutMs: number): Promise<JoinReply> {
    return this.unary('Join', this.stub.Join.bind(this.stub), req, timeoutMs);
  }

  async barrier(rank: number, name: string, timeoutMs: number): Promise<void> {
    await this.unary('Barrier', this.stub.Barrier.bind(this.stub), { rank, name }, timeoutMs);
  }

  async reportFailure(failure: Failure, timeoutMs = 5000): Promise<void> {
    await this.unary('ReportFailure', this.stub.ReportFailure.bind(this.stub), failure, timeoutMs);
  }

  /**
   * Opens the heartbeat stream. `close` resolves once the master has read
   * everything sent (its reply ends the call), so a worker's last report is never lost to its exit.
   */
  heartbeat(): { send(s: WorkerStatus): void; close(timeoutMs?: number): Promise<void> } {
    let acked: () => void = () => {};
    const ack = new Promise<void>((resolve) => {
      acked = resolve;
    });
    const stream = this.stub.Heartbeat({}, () => acked());
    stream.on('error', () => acked()); // the Events stream is what reports a lost master
    return {
      send: (s) => stream.write(s),
      close: async (timeoutMs = 5000) => {
        stream.end();
        await Promise.race([ack, new Promise((r) => setTimeout(r, timeoutMs).unref())]);
      },
    };
  }

  /** Opens an agent's stream of its workers' pulses; ending it tells the master this node has finished. */
  nodeBeats(): { send(s: NodeStatus): void; close(): void } {
    const stream = this.stub.NodeBeats({}, () => {});
    stream.on('error', () => {}); // the Events stream is what reports a lost master
    return { send: (s) => stream.write(s), close: () => stream.end() };
  }

  /**
   * Subscribes to job events. `abort` runs on Abort; `restart` on each Restart (without it, a Restart ends the
   * subscription as an abort does: a worker stops either way); `lost` when the stream ends or breaks without an
   * Abort (the master is gone), so nobody outlives its launcher.
   */
  events(rank: number, nodeRank: number, on: EventHandlers): () => void {
    const call = this.stub.Events({ rank, node_rank: nodeRank });
    let done = false;
    call.on('data', (e: JobEvent) => {
      on.heard?.();
      if (done || e.tick) return;
      if (e.restart && on.restart) on.restart(e.restart);
      else if (e.abort || e.restart) {
        done = true;
        on.abort(
          e.abort ?? {
            reason: `the job restarts: ${e.restart?.reason}`,
            failed_rank: e.restart?.failed_rank ?? -1,
          },
        );
      }
    });
    const lost = (why: string) => {
      if (!done) {
        done = true;
        on.lost(why);
      }
    };
    call.on('error', (err: grpc.ServiceError) => {
      if (err.code !== grpc.status.CANCELLED) lost(err.details || err.message);
    });
    call.on('end', () => lost('the master closed the event stream'));
    return () => {
      done = true;
      call.cancel();
    };
  }

  close(): void {
    this.stub.close();
  }

  private unary<Req, Res>(name: string, fn: Unary<Req, Res>, req: Req, timeoutMs: number): Promise<Res> {
    return new Promise((resolve, reject) => {
      // waitForReady: a worker may ask before the master listens; the deadline still bounds the wait.
      fn(req, new grpc.Metadata({ waitForReady: true }), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) {
          const why =
            err.code === grpc.status.DEADLINE_EXCEEDED ? `no answer within ${timeoutMs} ms` : err.details;
          reject(new Error(`rendezvous ${name} at ${this.address} failed: ${why}`));
        } else resolve(res as Res);
      });
    });
  }
}
