import * as grpc from '@grpc/grpc-js';
import {
  type Abort,
  CHANNEL_OPTIONS,
  type Empty,
  type Failure,
  type JobEvent,
  type JoinReply,
  type JoinRequest,
  rendezvousService,
  type WorkerStatus,
} from './proto.ts';

type Unary<Req, Res> = (
  req: Req,
  meta: grpc.Metadata,
  opts: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res?: Res) => void,
) => grpc.ClientUnaryCall;

interface RendezvousStub extends grpc.Client {
  Join: Unary<JoinRequest, JoinReply>;
  Barrier: Unary<{ token: string; rank: number; name: string }, Empty>;
  ReportFailure: Unary<Failure, Empty>;
  Heartbeat(
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null) => void,
  ): grpc.ClientWritableStream<WorkerStatus>;
  Events(req: { token: string; rank: number; node_rank: number }): grpc.ClientReadableStream<JobEvent>;
}

/** A worker's or an agent's connection to the job's master. Every unary call has a deadline. */
export class RendezvousClient {
  private readonly stub: RendezvousStub;

  constructor(
    readonly address: string,
    private readonly token: string,
  ) {
    const Ctor = rendezvousService();
    this.stub = new Ctor(
      address,
      grpc.credentials.createInsecure(),
      CHANNEL_OPTIONS,
    ) as unknown as RendezvousStub;
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

  join(req: Omit<JoinRequest, 'token'>, timeoutMs: number): Promise<JoinReply> {
    return this.unary('Join', this.stub.Join.bind(this.stub), { ...req, token: this.token }, timeoutMs);
  }

  async barrier(rank: number, name: string, timeoutMs: number): Promise<void> {
    await this.unary(
      'Barrier',
      this.stub.Barrier.bind(this.stub),
      { token: this.token, rank, name },
      timeoutMs,
    );
  }

  async reportFailure(failure: Omit<Failure, 'token'>, timeoutMs = 5000): Promise<void> {
    await this.unary(
      'ReportFailure',
      this.stub.ReportFailure.bind(this.stub),
      { ...failure, token: this.token },
      timeoutMs,
    );
  }

  /**
   * Opens the heartbeat stream; `send` adds the token. `close` resolves once the master has read
   * everything sent (its reply ends the call), so a worker's last report is never lost to its exit.
   */
  heartbeat(): { send(s: Omit<WorkerStatus, 'token'>): void; close(timeoutMs?: number): Promise<void> } {
    let acked: () => void = () => {};
    const ack = new Promise<void>((resolve) => {
      acked = resolve;
    });
    const stream = this.stub.Heartbeat({}, () => acked());
    stream.on('error', () => acked()); // the Events stream is what reports a lost master
    return {
      send: (s) => stream.write({ ...s, token: this.token }),
      close: async (timeoutMs = 5000) => {
        stream.end();
        await Promise.race([ack, new Promise((r) => setTimeout(r, timeoutMs).unref())]);
      },
    };
  }

  /**
   * Subscribes to job events. `onAbort` runs on Abort; `onLost` when the stream ends or breaks without
   * one (the master is gone), so nobody outlives its launcher.
   */
  events(
    rank: number,
    nodeRank: number,
    onAbort: (a: Abort) => void,
    onLost: (why: string) => void,
  ): () => void {
    const call = this.stub.Events({ token: this.token, rank, node_rank: nodeRank });
    let done = false;
    call.on('data', (e: JobEvent) => {
      if (e.abort && !done) {
        done = true;
        onAbort(e.abort);
      }
    });
    const lost = (why: string) => {
      if (!done) {
        done = true;
        onLost(why);
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
