import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadShmBinding, ShmReceiver, ShmSender } from '../../src/comm/shm-ring.ts';

const binding = loadShmBinding().binding;
const dir = binding ? mkdtempSync('/dev/shm/kd-ring-test-') : '';
afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

let count = 0;
function pair(dataBytes: number): { sender: ShmSender; receiver: ShmReceiver } {
  if (!binding) throw new Error('unreachable');
  const path = join(dir, `ring-${count++}`);
  const receiver = new ShmReceiver(binding, path, dataBytes);
  return { sender: new ShmSender(binding, path), receiver };
}

const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

describe.skipIf(!binding)('shared-memory ring', () => {
  it('carries payloads in order, wraps, and refuses what does not fit until bytes are released', () => {
    const { sender, receiver } = pair(4096);
    let released = 0;
    // 300 messages of 1..1000 bytes through 4 KiB: the ring wraps ~75 times.
    const held: { release: () => void }[] = [];
    for (let i = 0; i < 300; i++) {
      const payload = bytes(1 + ((i * 337) % 1000), i);
      let ref = sender.write(payload);
      while (!ref) {
        // Full: give back the oldest block, as a receiver that finished with it.
        held.shift()?.release();
        released++;
        ref = sender.write(payload);
      }
      const got = receiver.take(ref);
      expect(Buffer.compare(got.payload, Buffer.from(payload)), `message ${i}`).toBe(0);
      held.push(got);
    }
    expect(released).toBeGreaterThan(200);
  });

  it('frees space only over the released prefix, whatever order blocks come back in', () => {
    const { sender, receiver } = pair(4096);
    const a = receiver.take(sender.write(bytes(2000, 1))!);
    const b = receiver.take(sender.write(bytes(2000, 2))!);
    expect(sender.write(bytes(100, 3))).toBeUndefined();
    b.release(); // out of order: a still holds the front
    expect(sender.write(bytes(100, 3))).toBeUndefined();
    a.release();
    expect(sender.write(bytes(100, 3))).toBeDefined();
  });

  it('a reference that is not the next block is a violation, named', () => {
    const { sender, receiver } = pair(4096);
    const ref = sender.write(bytes(100, 1))!;
    expect(() => receiver.take([ref[0] + 64, 100])).toThrow(/\[64, \+100\] that is not the next one/);
    expect(() => receiver.take([0, 5000])).toThrow(/not the next one/);
    expect(() => receiver.take([0, 0])).toThrow(/not the next one/);
    expect(receiver.take(ref).payload.byteLength).toBe(100);
    // Replaying a block already taken is not the next one either.
    expect(() => receiver.take(ref)).toThrow(/not the next one/);
  });

  it('the ring file is 0600 and gone once unlinked; a sender cannot open what is not a ring', () => {
    const { receiver } = pair(4096);
    expect(statSync(receiver.path).mode & 0o777).toBe(0o600);
    receiver.unlink();
    expect(existsSync(receiver.path)).toBe(false);
    expect(() => new ShmSender(binding!, receiver.path)).toThrow(/cannot open .*No such file/);
    expect(() => new ShmSender(binding!, dir)).toThrow(/cannot open .*Is a directory/);
    const small = join(dir, 'small');
    writeFileSync(small, 'not a ring');
    expect(() => new ShmSender(binding!, small)).toThrow(/not a ring owned by this user/);
  });

  it('the native reductions give the bits of the JS loops, NaN included', async () => {
    const { addDivideInto, reduceIntoJs } = await import('../../src/comm/reduce-op.ts');
    const n = 10_001;
    const a = Float32Array.from({ length: n }, (_, i) => (i % 97 === 0 ? Number.NaN : Math.sin(i) * 1e3));
    const x = Float32Array.from({ length: n }, (_, i) => (i % 89 === 0 ? Number.NaN : Math.cos(i) * 1e3));
    // NaNs on both sides with payloads of their own (quiet and signalling): the payload that wins is V8's.
    const [ua, ux] = [new Uint32Array(a.buffer), new Uint32Array(x.buffer)];
    for (let i = 5; i < n; i += 13) {
      ua[i] = 0x7f800000 | ((i * 7919) & 0x7fffff) | 1;
      ux[i] = 0xff800000 | ((i * 104729) & 0x7fffff) | 2;
    }
    for (const [op, code] of [
      ['sum', 0],
      ['max', 1],
      ['min', 2],
    ] as const) {
      const js = a.slice();
      reduceIntoJs(op, js, x);
      const c = a.slice();
      binding!.reduce(code, c, x);
      expect(new Uint32Array(c.buffer), op).toEqual(new Uint32Array(js.buffer));
    }
    for (const divisor of [1, 3]) {
      const js = a.slice();
      for (let i = 0; i < n; i++) js[i] = Math.fround(js[i] + x[i]) / divisor;
      const c = a.slice();
      binding!.addDivide(c, x, divisor);
      expect(new Uint32Array(c.buffer), `addDivide / ${divisor}`).toEqual(new Uint32Array(js.buffer));
      // The same values written into x instead of the wire; the JS twin below the native size is the spec too.
      const into = x.slice();
      binding!.addDivideInto(a, into, divisor);
      expect(new Uint32Array(into.buffer), `addDivideInto / ${divisor}`).toEqual(new Uint32Array(js.buffer));
      const small = x.slice(0, 1000);
      addDivideInto(a.subarray(0, 1000), small, divisor);
      expect(new Uint32Array(small.buffer), `JS addDivideInto / ${divisor}`).toEqual(
        new Uint32Array(js.buffer, 0, 1000),
      );
    }
  });
});

describe.skipIf(!binding)('a ring path from the peer table', () => {
  it('is mapped only inside the node’s own ring directory', async () => {
    const { Transport } = await import('../../src/comm/transport.ts');
    const { tmpdir } = await import('node:os');
    const socket = (s: number) => `ipc://${join(tmpdir(), `kd-ring-path-${process.pid}-${s}.sock`)}`;
    const t = await Transport.bind({ rank: 0, world: 2, bind: socket, shm: { dir, binding: binding! } });
    try {
      const elsewhere = mkdtempSync('/dev/shm/kd-ring-elsewhere-');
      const ring = new ShmReceiver(binding!, join(elsewhere, 'ring'), 4096);
      expect(() =>
        t.connect([{ endpoint: t.endpoints[0] }, { endpoint: t.endpoints[1], shmRing: ring.path }]),
      ).toThrow(`rank 1's ring ${ring.path} is not in this node's directory ${dir}`);
      rmSync(elsewhere, { recursive: true, force: true });
    } finally {
      await t.close();
      for (const s of [0, 1]) rmSync(socket(s).slice('ipc://'.length), { force: true });
    }
  });
});
