/**
 * The data plane computes only on its own peers' bytes. A stranger on the network forging frames with the right
 * labels (group, sequence, step, segment, source) is refused at the CURVE handshake and never reaches a receive;
 * without CURVE (an insecure network, by choice) a frame claiming another sender, a frame that is no header, or more
 * unexpected bytes than the window fail the group at once, naming the link the frame really came in on.
 */

import { afterEach, describe, expect, it } from 'vitest';
import { Push } from 'zeromq';
import { curveClient, curveKeys, refusedHandshakes } from '../../src/comm/curve.ts';
import { packHeader, unpackHeader } from '../../src/comm/header.ts';
import { makeWorld, randomValues, type World } from './world.ts';

let world: World | undefined;
const strangers: Push[] = [];
afterEach(async () => {
  for (const s of strangers.splice(0)) s.close();
  await world?.close();
  world = undefined;
});

/** A Push socket of a process outside the job, connected to `endpoint` (with keys of its own, when given). */
function stranger(endpoint: string, serverKey?: string): Push {
  const socket = new Push({
    linger: 0,
    sendTimeout: 0,
    ...(serverKey ? curveClient(curveKeys(), serverKey) : {}),
  });
  socket.connect(endpoint);
  strangers.push(socket);
  return socket;
}

/** A forged all-reduce frame: the labels rank `src` would put on (seq, step, seg), and `payload` as its values. */
function forged(seq: number, step: number, seg: number, src: number, payload: Buffer): Buffer[] {
  const header = {
    kind: 'collective',
    group: 'world',
    op: 'allReduce',
    seq,
    step,
    seg,
    src,
    dtype: 'fp32',
  } as const;
  return [packHeader(header), payload];
}

const junk = (values: number) => Buffer.from(new Float32Array(values).fill(1e6).buffer);

/** Sends without waiting (a refused handshake never drains the queue). */
function spray(socket: Push, frames: Buffer[]): void {
  socket.send(frames).catch(() => {});
}

describe('the data plane admits only its own peers', () => {
  it('CURVE over tcp: strangers with no key or a key of their own are refused; 300 all-reduces stay exact', async () => {
    world = await makeWorld(2, { tcp: true, curve: true });
    const w = world;
    const refusedBefore = refusedHandshakes();
    const n = 64;
    // Strangers at every receive socket: one plain, one with a key pair of its own and the victim's public key.
    const sockets = w.endpoints.flatMap((endpoint, i) => [
      stranger(endpoint),
      stranger(endpoint, w.publicKeys[Math.floor(i / 2)]),
    ]);
    for (let seq = 0; seq < 300; seq++) {
      // The labels of this all-reduce's every frame, claiming either rank, before and while the ranks run it.
      for (const s of sockets) for (const src of [0, 1]) spray(s, forged(seq, 0, 0, src, junk(n / 2)));
      const inputs = [randomValues(n, seq * 2 + 1), randomValues(n, seq * 2 + 2)];
      const expected = inputs[0].map((v, i) => v + inputs[1][i]);
      const out = await Promise.all(w.groups.map((g, r) => g.allReduce(inputs[r].slice())));
      for (const o of out) expect(Array.from(o)).toEqual(Array.from(expected));
    }
    expect(refusedHandshakes() - refusedBefore).toBeGreaterThan(0);
  });

  it('insecure tcp: a frame claiming another sender fails the group, naming the link it came in on', async () => {
    world = await makeWorld(2, { tcp: true, timeoutMs: 5_000 });
    // Rank 1's socket for frames from rank 0, reached by a stranger that claims to be rank 1.
    const s = stranger(world.endpoints[1 * 2 + 0]);
    spray(s, forged(0, 0, 0, 1, junk(1)));
    const failed = world.groups[1].allReduce(new Float32Array(2));
    world.groups[0].allReduce(new Float32Array(2)).catch(() => {});
    const err = await failed.catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect(String((err as Error).cause ?? err)).toMatch(
      /data-plane protocol violation on rank 0's link: a frame claiming to come from rank 1/,
    );
  });

  it('a frame that is not a kd-launch header (an old reply address, random bytes) fails the group, naming the link', async () => {
    world = await makeWorld(2, { tcp: true, timeoutMs: 5_000 });
    const s = stranger(world.endpoints[0 * 2 + 1]);
    // The old format's tenth field, a reply address the worker would have connected out to.
    const header = [0, 'world', 'allReduce', 0, 0, 0, 1, 'fp32', 'tcp://198.51.100.7:9', 3];
    const { pack } = await import('msgpackr');
    spray(s, [pack(header), Buffer.alloc(0)]);
    const err = await world.groups[0].allReduce(new Float32Array(2)).catch((e: Error) => e);
    world.groups[1].allReduce(new Float32Array(2)).catch(() => {});
    expect(String((err as Error).cause ?? err)).toMatch(
      /protocol violation on rank 1's link: a frame that is not a kd-launch header \(not a header array of 8 or 9 fields\)/,
    );
  });

  it('1 GiB of frames nobody expects: the group fails naming the peer past the window, which is heard no more', async () => {
    const window = 8 << 20;
    world = await makeWorld(2, { tcp: true, timeoutMs: 10_000, windowBytes: window });
    const s = stranger(world.endpoints[0 * 2 + 1]);
    // Rank 0 waits in a collective meanwhile, as a worker would.
    const pending = world.groups[0].allReduce(new Float32Array(2)).catch((e: Error) => e);
    const rss = process.memoryUsage().rss;
    // 1,024 frames of 1 MiB claiming to be rank 1's for collectives far ahead; one payload buffer, sent over
    // and over, so that the sender's side costs 1 MiB and what grows is the receiver's.
    const payload = junk((1 << 20) / 4);
    let taken = 0;
    for (let seq = 0; seq < 1024; seq++) {
      if (
        await s.send(forged(1000 + seq, 0, 0, 1, payload)).then(
          () => true,
          () => false,
        )
      )
        taken++;
    }
    const err = await pending;
    world.groups[1].allReduce(new Float32Array(2)).catch(() => {});
    expect(err).toBeInstanceOf(Error);
    expect(String((err as Error).cause ?? err)).toMatch(
      new RegExp(`protocol violation on rank 1's link: more than ${window} bytes that no receive expects`),
    );
    expect(process.memoryUsage().rss - rss).toBeLessThan(window + (64 << 20));
    // The window was really crossed, and the link closed: most of the gigabyte was never taken off the stranger.
    expect(taken).toBeGreaterThan(8);
    expect(taken).toBeLessThan(1024);
  });
});

describe('the data-plane header decoder', () => {
  it('10,000 random and mutated frames: a well-formed header or one Error naming the field, nothing else', () => {
    let state = 7;
    const next = (n: number) => {
      state = (state * 1103515245 + 12345) >>> 0;
      return state % n;
    };
    const valid = packHeader({
      kind: 'collective',
      group: '[0,1]#0',
      op: 'allReduce',
      seq: 12,
      step: 1,
      seg: 3,
      src: 1,
      dtype: 'fp16',
      receipt: 4,
    });
    let accepted = 0;
    for (let i = 0; i < 10_000; i++) {
      const frame =
        i % 3 === 0
          ? Buffer.from(Array.from({ length: next(48) }, () => next(256)))
          : Buffer.from(valid).map((b, _, a) => (next(a.length) < 2 ? next(256) : b));
      try {
        const h = unpackHeader(Buffer.from(frame));
        accepted++;
        expect(['collective', 'p2p', 'receipt']).toContain(h.kind);
        expect(['fp32', 'fp16', 'bf16']).toContain(h.dtype);
        for (const v of [h.seq, h.step, h.seg, h.src]) expect(Number.isSafeInteger(v) && v >= 0).toBe(true);
        expect(typeof h.group === 'string' && typeof h.op === 'string').toBe(true);
      } catch (err) {
        expect(err).toBeInstanceOf(Error);
        expect((err as Error).message.length).toBeGreaterThan(0);
      }
    }
    expect(accepted).toBeGreaterThan(0);
  });
});
