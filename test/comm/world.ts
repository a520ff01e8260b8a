/** In-process worlds for the comm tests: N transports on fresh ipc sockets, one ProcessGroup each. */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { curveKeys } from '../../src/comm/curve.ts';
import { ProcessGroup } from '../../src/comm/process-group.ts';
import { loadShmBinding } from '../../src/comm/shm-ring.ts';
import { Transport } from '../../src/comm/transport.ts';

export interface World {
  groups: ProcessGroup[];
  transports: Transport[];
  /** Every rank's receive endpoints, rank by rank (`endpoints[r * size + source]`). */
  endpoints: string[];
  /** Every rank's CURVE public key, with `curve`. */
  publicKeys: (string | undefined)[];
  close(): Promise<void>;
}

export async function makeWorld(
  size: number,
  opts: {
    timeoutMs?: number;
    segmentBytes?: number;
    tcp?: boolean;
    curve?: boolean;
    windowBytes?: number;
    /** Messages through shared-memory rings of this many data bytes (whole cache lines; small ones wrap often). */
    shmRingBytes?: number;
  } = {},
): Promise<World> {
  const tag = randomBytes(6).toString('hex');
  const shmDir = opts.shmRingBytes ? mkdtempSync('/dev/shm/kd-comm-test-') : undefined;
  const binding = loadShmBinding().binding;
  if (shmDir && !binding) throw new Error('shared-memory worlds need native/build/kd_shm.node');
  const shm = shmDir && binding ? { dir: shmDir, binding, ringBytes: opts.shmRingBytes } : undefined;
  const endpoint = (r: number, source: number) =>
    opts.tcp ? 'tcp://127.0.0.1:*' : `ipc://${join(tmpdir(), `kd-comm-${tag}-${r}-${source}.sock`)}`;
  const keys = Array.from({ length: size }, () => (opts.curve ? curveKeys() : undefined));
  const transports = await Promise.all(
    Array.from({ length: size }, (_, r) =>
      Transport.bind({
        rank: r,
        world: size,
        bind: (source) => endpoint(r, source),
        curve: keys[r],
        windowBytes: opts.windowBytes,
        shm,
      }),
    ),
  );
  // Rank r pushes to rank j's socket for r.
  transports.forEach((t, r) => {
    t.connect(
      transports.map((peer, j) => ({
        endpoint: peer.endpoints[r],
        publicKey: keys[j]?.publicKey,
        shmRing: peer.shmRings[r] || undefined,
      })),
    );
  });
  const groups = transports.map((transport) =>
    ProcessGroup.create({ transport, timeoutMs: opts.timeoutMs ?? 10_000, segmentBytes: opts.segmentBytes }),
  );
  const endpoints = transports.flatMap((t) => t.endpoints);
  const close = async () => {
    await Promise.all(groups.map((g) => g.close()));
    // ZeroMQ leaves ipc socket files behind when it closes with linger 0.
    for (const e of endpoints) if (e.startsWith('ipc://')) rmSync(e.slice('ipc://'.length), { force: true });
    if (shmDir) rmSync(shmDir, { recursive: true, force: true });
  };
  return { groups, transports, endpoints, publicKeys: keys.map((k) => k?.publicKey), close };
}

/** Deterministic pseudo-random fp32 values in [-scale, scale) (mulberry32). */
export function randomValues(n: number, seed: number, scale = 10): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

/** The bit patterns of `a` (so that `toEqual` compares bits, NaN and −0 included). */
export function bits(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length).slice();
}
