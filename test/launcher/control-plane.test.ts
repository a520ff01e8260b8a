/**
 * The control plane talks only to holders of the job token, and no message breaks it. The rendezvous server is
 * started as the launcher starts it; clients connect as workers and agents do, with the right token, another one,
 * or none at all; and a fuzzer sends 10,000 random and mutated messages of every RPC over an authenticated
 * connection, after which a world still joins and the server has refused what it had to, naming it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import { RendezvousClient } from '../../launcher/rendezvous/client.ts';
import { CHANNEL_OPTIONS, type JoinReply } from '../../launcher/rendezvous/proto.ts';
import { RendezvousServer } from '../../launcher/rendezvous/server.ts';
import { TLS_NAME, tokenCertificate } from '../../launcher/rendezvous/tls.ts';
import { Rng } from '../../src/base/rng.ts';
import { loadNetModel } from '../../src/models/net-dir.ts';

const TOKEN = 'test-token-0123456789';
let server: RendezvousServer | undefined;
const refusals: { peer: string; why: string }[] = [];
const statuses: unknown[] = [];
afterEach(async () => {
  await server?.close();
  server = undefined;
  refusals.length = 0;
  statuses.length = 0;
});

async function start(world = 2): Promise<RendezvousServer> {
  server = await RendezvousServer.start({
    host: '127.0.0.1',
    port: 0,
    token: TOKEN,
    jobId: 'job',
    world,
    // One worker per node: node 1's agent may report rank 1.
    nodes: world,
    perNode: 1,
    specJson: '{}',
    listener: {
      onRefused: (peer, why) => refusals.push({ peer, why }),
      onStatus: (s) => statuses.push(s),
    },
  });
  return server;
}

const failure = {
  rank: 1,
  node_rank: 1,
  exit_code: 1,
  signal: '',
  last_collective: '',
  stderr_tail: [],
  round: 0,
};

/** Sends `batches` × 100 random and mutated messages of every RPC to the master at `address`, as a holder of `token`. */
async function fuzz(address: string, token: string, batches: number): Promise<void> {
  const { cert, key } = tokenCertificate(token);
  const Ctor = grpc.makeGenericClientConstructor({}, 'Rendezvous');
  const raw = new Ctor(address, grpc.credentials.createSsl(cert, key, cert), {
    ...CHANNEL_OPTIONS,
    'grpc.ssl_target_name_override': TLS_NAME,
    'grpc.default_authority': TLS_NAME,
  });
  const rng = new Rng(15);
  // Valid encodings of each request to mutate (protobuf: field tags, varints, strings, a repeated field).
  const seeds = [
    Buffer.from('1001180020002a0a7463703a2f2f612f3a314203786b6b', 'hex'),
    Buffer.from('10011a0362617a', 'hex'),
    Buffer.from('1001180122067374657032', 'hex'),
  ];
  const unary = ['Join', 'Barrier', 'ReportFailure'];
  const message = (): Buffer => {
    if (rng.next() < 0.3) return Buffer.from(Array.from({ length: rng.nextInt(64) }, () => rng.nextInt(256)));
    const b = Buffer.from(seeds[rng.nextInt(seeds.length)]);
    for (let k = 0, n = 1 + rng.nextInt(4); k < n; k++) b[rng.nextInt(b.length)] = rng.nextInt(256);
    return b;
  };
  const call = (method: string, body: Buffer) =>
    new Promise<void>((resolve) => {
      raw.makeUnaryRequest(
        `/kdlaunch.v1.Rendezvous/${method}`,
        (b: Buffer) => b,
        (b: Buffer) => b,
        body,
        { deadline: Date.now() + 100 },
        () => resolve(),
      );
    });
  for (let batch = 0; batch < batches; batch++) {
    const calls: Promise<void>[] = [];
    for (let i = 0; i < 90; i++) calls.push(call(unary[rng.nextInt(unary.length)], message()));
    // Streams too: a heartbeat of random frames, an events subscription with a random request.
    const hb = raw.makeClientStreamRequest(
      '/kdlaunch.v1.Rendezvous/Heartbeat',
      (b: Buffer) => b,
      (b: Buffer) => b,
      () => {},
    );
    for (let i = 0; i < 5; i++) hb.write(message());
    hb.end();
    const ev = raw.makeServerStreamRequest(
      '/kdlaunch.v1.Rendezvous/Events',
      (b: Buffer) => b,
      (b: Buffer) => b,
      message(),
    );
    ev.on('error', () => {});
    ev.on('data', () => {});
    await Promise.all(calls);
    ev.cancel();
  }
  raw.close();
}

describe('the control plane', () => {
  it('answers the token’s holders only; a wrong token or none is refused at the handshake and reported', async () => {
    const s = await start();
    const address = `127.0.0.1:${s.port}`;
    await new RendezvousClient(address, TOKEN).reportFailure(failure, 5_000);
    await expect(
      new RendezvousClient(address, 'another-token').reportFailure(failure, 2_000),
    ).rejects.toThrow(/rendezvous ReportFailure at 127\.0\.0\.1:\d+ failed/);
    // No token at all: a plain-text gRPC client.
    const Ctor = grpc.makeGenericClientConstructor({}, 'Rendezvous');
    const plain = new Ctor(address, grpc.credentials.createInsecure());
    await new Promise<void>((resolve) => {
      plain.makeUnaryRequest(
        '/kdlaunch.v1.Rendezvous/ReportFailure',
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        { deadline: Date.now() + 2_000 },
        () => resolve(),
      );
    });
    plain.close();
    await new Promise((r) => setTimeout(r, 200));
    expect(refusals.length).toBeGreaterThanOrEqual(2);
    for (const r of refusals) expect(r.peer).toMatch(/127\.0\.0\.1/);
  });

  it('refuses a replayed connection: a captured session’s bytes, sent again, do not get past the handshake', async () => {
    const failures: unknown[] = [];
    server = await RendezvousServer.start({
      host: '127.0.0.1',
      port: 0,
      token: TOKEN,
      jobId: 'job',
      world: 2,
      nodes: 2,
      perNode: 1,
      specJson: '{}',
      listener: {
        onRefused: (peer, why) => refusals.push({ peer, why }),
        onFailure: (f) => failures.push(f),
      },
    });
    const target = server.port;
    // A wiretap between a real client and the master, keeping what the client sent.
    const captured: Buffer[] = [];
    const tap = createServer((downstream) => {
      const upstream = connect(target, '127.0.0.1');
      downstream.on('data', (d: Buffer) => captured.push(Buffer.from(d)));
      downstream.pipe(upstream).pipe(downstream);
      downstream.on('error', () => upstream.destroy());
      upstream.on('error', () => downstream.destroy());
    });
    await new Promise<void>((resolve) => tap.listen(0, '127.0.0.1', resolve));
    const tapPort = (tap.address() as { port: number }).port;
    const client = new RendezvousClient(`127.0.0.1:${tapPort}`, TOKEN);
    await client.reportFailure(failure, 5_000);
    client.close();
    tap.close();
    expect(failures).toHaveLength(1);
    expect(captured.length).toBeGreaterThan(0);
    // The replay: the same bytes on a new connection to the master.
    const replay = connect(target, '127.0.0.1');
    replay.on('error', () => {});
    replay.resume(); // read the master's answer (its alert), so that its close arrives
    await new Promise<void>((resolve) => replay.on('connect', () => resolve()));
    for (const chunk of captured) replay.write(chunk);
    await new Promise<void>((resolve) => replay.on('close', () => resolve()));
    expect(failures).toHaveLength(1);
    expect(refusals.some((r) => /127\.0\.0\.1/.test(r.peer))).toBe(true);
  });

  it('closes a connection that never completes its handshake, and refuses connections beyond its bound', async () => {
    const s = await start(1); // 4 × 1 + 16 = 20 connections
    const sockets = Array.from({ length: 30 }, () => connect(s.port, '127.0.0.1'));
    // Each closes: those past the bound at once, the others when their handshake times out (else the test hangs).
    await Promise.all(
      sockets.map(
        (sock) =>
          new Promise<void>((resolve) => {
            sock.on('error', () => {});
            sock.on('close', () => resolve());
          }),
      ),
    );
    expect(refusals.some((r) => /TLS handshake timeout/.test(r.why))).toBe(true);
    expect(refusals.some((r) => /more than 20 connections/.test(r.why))).toBe(true);
  });

  it('a heartbeat whose report is not JSON is refused and reported, not a crash', async () => {
    const s = await start();
    const client = new RendezvousClient(`127.0.0.1:${s.port}`, TOKEN);
    const hb = client.heartbeat();
    const base = { rank: 1, step: 1, total_steps: 2, metrics: {}, last_collective: '', log: '' };
    hb.send({ ...base, report_json: '{not json' });
    hb.send({ ...base, report_json: '{"ok": true}' });
    await hb.close(5_000);
    expect(refusals.map((r) => r.why)).toContain('Heartbeat: rank 1 sent a report that is not JSON');
    expect(statuses).toHaveLength(1);
    client.close();
  });

  it('survives 10,000 random and mutated messages of every RPC, then a world still joins', async () => {
    const s = await start(2);
    const address = `127.0.0.1:${s.port}`;
    await fuzz(address, TOKEN, 100);
    // The server still works: two workers join.
    const join = (rank: number) =>
      new RendezvousClient(address, TOKEN).join(
        {
          rank,
          local_rank: rank,
          node_rank: 0,
          endpoints: ['ipc:///a', 'ipc:///b'],
          curve_public_key: '',
          shm_rings: [],
          pid: 1,
          hostname: 'h',
          round: 0,
        },
        10_000,
      );
    const replies: JoinReply[] = await Promise.all([join(0), join(1)]);
    expect(replies.map((r) => r.peers.length)).toEqual([2, 2]);
  }, 120_000);

  it('a job beside the fuzzer trains to the weights it trains undisturbed', async () => {
    const job = (out: string) => ({
      name: 'beside-fuzzer',
      backend: 'cpu',
      seed: 3,
      model: { type: 'mlp', layers: [784, 16, 10] },
      data: { dataset: 'mnist' },
      optimizer: { type: 'SGD', params: { lr: 0.05 } },
      train_micro_batch_size_per_gpu: 16,
      steps: 40,
      steps_per_print: 1000,
      output_dir: out,
    });
    const dir = mkdtempSync(join(tmpdir(), 'kd-beside-'));
    process.env['KD_JOB_TOKEN'] = TOKEN;
    try {
      await launch(job(join(dir, 'quiet')), { nproc: 2 }).result;
      const handle = launch(job(join(dir, 'fuzzed')), { nproc: 2 });
      let fuzzing: Promise<void> | undefined;
      let address: string | undefined;
      const stderr: string[] = [];
      for await (const e of handle.events) {
        if (e.type === 'rendezvous') address = e.address;
        // From the moment the world has joined: before it, a mutated Join that happens to be well formed claims a
        // rank for the 100 ms of its deadline, as any holder of the token may (the real rank is then refused as
        // joining twice: CI saw it). Joins under fuzz are the test above.
        if (e.type === 'joined' && !fuzzing && address) fuzzing = fuzz(address, TOKEN, 20);
        if (e.type === 'log' && e.stream === 'stderr') stderr.push(`[rank ${e.rank}] ${e.line}`);
      }
      // A failure says what its worker printed: CI once saw rank 0 exit 1 here, and nothing else.
      await handle.result.catch((err: Error) => {
        throw new Error(`${err.message}\n${stderr.join('\n')}`);
      });
      await fuzzing;
      expect(loadNetModel(join(dir, 'fuzzed')).values).toEqual(loadNetModel(join(dir, 'quiet')).values);
    } finally {
      delete process.env['KD_JOB_TOKEN'];
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
