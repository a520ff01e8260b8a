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
function pair(
  dataBytes: number,
  onRing = () => {},
  firstCursor = 0,
): { sender: ShmSender; receiver: ShmReceiver } {
  if (!binding) throw new Error('unreachable');
  const path = join(dir, `ring-${count++}`);
  const receiver = new ShmReceiver(binding, path, onRing, dataBytes, firstCursor);
  rings.push(receiver);
  return { sender: new ShmSender(binding, path), receiver };
}
const rings: ShmReceiver[] = [];
afterAll(() => {
  for (const ring of rings) ring.close();
});

/** A message copied in and published, as the transport sends one; false when the ring has no room for it. */
function write(sender: ShmSender, head: Uint8Array, payload: Uint8Array): boolean {
  const view = sender.reserve(head, payload.byteLength);
  if (!view) return false;
  view.set(payload);
  sender.publish();
  return true;
}

const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
const header = (i: number) => Buffer.from(`header ${i}`);

describe.skipIf(!binding)('shared-memory ring', () => {
  it.each([
    ['from cursor 0', 0],
    ['across the cursors’ own wrap', 2 ** 32 - 20_000],
  ])(
    'carries messages in order, wraps, and refuses what does not fit until bytes are released (%s)',
    (_, first) => {
      // Not a power of two: the cursors wrap at a multiple of it below 2^32.
      const { sender, receiver } = pair(4096 + 64 * 7, () => {}, first);
      let released = 0;
      // 300 messages of 0..999 bytes through 4 KiB: the ring wraps ~80 times.
      const held: { release: () => void }[] = [];
      for (let i = 0; i < 300; i++) {
        const payload = bytes((i * 337) % 1000, i);
        while (!write(sender, header(i), payload)) {
          // Full: give back the oldest block, as a receiver that finished with it.
          held.shift()?.release();
          released++;
        }
        const got = receiver.next();
        expect(got, `message ${i}`).toBeDefined();
        expect(got?.header.toString(), `message ${i}`).toBe(`header ${i}`);
        expect(Buffer.compare(got!.payload, Buffer.from(payload)), `message ${i}`).toBe(0);
        expect(receiver.next()).toBeUndefined();
        held.push(got!);
      }
      expect(released).toBeGreaterThan(200);
      sender.close();
    },
  );

  it('frees space only over the released prefix, whatever order blocks come back in', () => {
    const { sender, receiver } = pair(4096);
    expect(write(sender, header(1), bytes(1900, 1))).toBe(true);
    expect(write(sender, header(2), bytes(1900, 2))).toBe(true);
    const [a, b] = [receiver.next()!, receiver.next()!];
    expect(write(sender, header(3), bytes(100, 3))).toBe(false);
    b.release(); // out of order: a still holds the front
    expect(write(sender, header(3), bytes(100, 3))).toBe(false);
    a.release();
    expect(write(sender, header(3), bytes(100, 3))).toBe(true);
    expect(receiver.next()?.payload.byteLength).toBe(100);
    sender.close();
  });

  it('a reserved block is written in place and seen only once published; one given up is never seen', () => {
    const { sender, receiver } = pair(4096);
    const view = sender.reserve(header(1), 256);
    expect(view?.byteLength).toBe(256);
    expect(() => sender.reserve(header(2), 8)).toThrow(/reserved and not yet published/);
    view?.set(bytes(256, 7));
    expect(receiver.next()).toBeUndefined();
    sender.publish();
    const got = receiver.next();
    expect(Buffer.compare(got!.payload, Buffer.from(bytes(256, 7)))).toBe(0);
    got?.release();
    sender.reserve(header(3), 100)?.fill(9);
    sender.unreserve();
    expect(receiver.next()).toBeUndefined();
    expect(() => sender.publish()).toThrow(/no ring block is reserved/);
    expect(write(sender, header(4), bytes(100, 4))).toBe(true);
    expect(receiver.next()?.header.toString()).toBe('header 4');
    expect(sender.reserve(header(5), 5000)).toBeUndefined(); // more than the ring holds
    sender.close();
  });

  it('a block that is not a message, or a head past the ring, is a violation, named', () => {
    const { sender, receiver } = pair(4096);
    const words = new Uint32Array(receiver.buffer);
    write(sender, header(1), bytes(100, 1));
    words[1024] = 5000; // the block's header size, past the published bytes and the limit
    expect(() => receiver.next()).toThrow(/block at 0 of 5000 \+ 100 bytes that is not a message/);
    const other = pair(4096);
    write(other.sender, header(1), bytes(100, 1));
    new Uint32Array(other.receiver.buffer)[1025] = 1 << 20; // a payload bigger than the ring
    expect(() => other.receiver.next()).toThrow(/not a message/);
    const third = pair(4096);
    new Uint32Array(third.receiver.buffer)[16] = 8192; // the head, two rings ahead of the tail
    expect(() => third.receiver.next()).toThrow(/8192 bytes ahead, past the ring/);
    for (const s of [sender, other.sender, third.sender]) s.close();
  });

  it('rings its doorbell: the receiver’s event loop wakes for each message, with no timer', async () => {
    let woken!: () => void;
    let rang = new Promise<void>((resolve) => {
      woken = resolve;
    });
    const { sender, receiver } = pair(4096, () => woken());
    for (let i = 0; i < 3; i++) {
      write(sender, header(i), bytes(10, i));
      await rang;
      rang = new Promise<void>((resolve) => {
        woken = resolve;
      });
      const got = receiver.next();
      expect(got?.header.toString()).toBe(`header ${i}`);
      got?.release();
    }
    sender.close();
  });

  it('the ring file and its doorbell are 0600 and gone once unlinked; a sender cannot open what is not a ring', () => {
    const { receiver } = pair(4096);
    expect(statSync(receiver.path).mode & 0o777).toBe(0o600);
    const bell = statSync(`${receiver.path}.bell`);
    expect(bell.isFIFO()).toBe(true);
    expect(bell.mode & 0o777).toBe(0o600);
    receiver.unlink();
    expect(existsSync(receiver.path)).toBe(false);
    expect(existsSync(`${receiver.path}.bell`)).toBe(false);
    expect(() => new ShmSender(binding!, receiver.path)).toThrow(/cannot open .*No such file/);
    expect(() => new ShmSender(binding!, dir)).toThrow(/cannot open .*Is a directory/);
    const small = join(dir, 'small');
    writeFileSync(small, 'not a ring');
    expect(() => new ShmSender(binding!, small)).toThrow(/not a ring owned by this user/);
    // A ring whose doorbell is a plain file: refused before a byte is written to it.
    const ring = pair(4096).receiver;
    rmSync(`${ring.path}.bell`);
    writeFileSync(`${ring.path}.bell`, '');
    expect(() => new ShmSender(binding!, ring.path)).toThrow(/is not a doorbell owned by this user/);
    expect(() => new ShmReceiver(binding!, join(dir, 'odd'), () => {}, 3000)).toThrow(/whole cache lines/);
  });

  it('the native reductions give the bits of the JS loops, NaN included', async () => {
    const { addDivideInto, addDivideTo, reduceIntoJs } = await import('../../src/comm/reduce-op.ts');
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
      // With a copy: the same bits in x and in the copy, from the C and from the JS below the native size.
      const [both, copy] = [x.slice(), new Float32Array(n)];
      binding!.addDivideInto(a, both, divisor, copy);
      expect(new Uint32Array(both.buffer), `addDivideInto+copy / ${divisor}`).toEqual(
        new Uint32Array(js.buffer),
      );
      expect(new Uint32Array(copy.buffer), `the copy / ${divisor}`).toEqual(new Uint32Array(js.buffer));
      // Into a third array: the same bits, neither operand written.
      const [before, to] = [x.slice(), new Float32Array(n)];
      binding!.addDivideTo(a, before, divisor, to);
      expect(new Uint32Array(to.buffer), `addDivideTo / ${divisor}`).toEqual(new Uint32Array(js.buffer));
      expect(before).toEqual(x);
      const jsTo = new Float32Array(1000);
      addDivideTo(a.subarray(0, 1000), x.subarray(0, 1000), divisor, jsTo);
      expect(new Uint32Array(jsTo.buffer), `JS addDivideTo / ${divisor}`).toEqual(
        new Uint32Array(js.buffer, 0, 1000),
      );
      const [jsBoth, jsCopy] = [x.slice(0, 1000), new Float32Array(1000)];
      addDivideInto(a.subarray(0, 1000), jsBoth, divisor, jsCopy);
      expect(new Uint32Array(jsCopy.buffer), `JS copy / ${divisor}`).toEqual(
        new Uint32Array(js.buffer, 0, 1000),
      );
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
      const ring = new ShmReceiver(binding!, join(elsewhere, 'ring'), () => {}, 4096);
      expect(() =>
        t.connect([{ endpoint: t.endpoints[0] }, { endpoint: t.endpoints[1], shmRing: ring.path }]),
      ).toThrow(`rank 1's ring ${ring.path} is not in this node's directory ${dir}`);
      ring.close();
      rmSync(elsewhere, { recursive: true, force: true });
    } finally {
      await t.close();
      for (const s of [0, 1]) rmSync(socket(s).slice('ipc://'.length), { force: true });
    }
  });
});
