/**
 * A run's files on disk: CRC-32C against RFC 3720's vectors, TensorBoard event files read back by a reader written
 * here from the format's specification (its own bitwise CRC-32C and protobuf decoder, so it shares nothing with
 * the writer), a real two-rank run whose event file and metrics.jsonl must agree record by record, a multi-stage
 * job's one directory per run, and a full disk (/dev/full) that becomes one warning instead of a crash.
 */
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LaunchEvent } from '../../launcher/events.ts';
import { launch } from '../../launcher/launch.ts';
import { crc32c, maskedCrc32c } from '../../launcher/run/crc32c.ts';
import type { EvalLine, MetricsLine, StepLine } from '../../launcher/run/metrics-lines.ts';
import { RunFiles } from '../../launcher/run/run-files.ts';
import { EventFileWriter } from '../../launcher/run/tfevents.ts';
import { validateJob } from '../../src/config/load.ts';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-run-files-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// ── The reader, from the specification ───────────────────────────────────────────────────────────────────────

/** CRC-32C bit by bit (reflected Castagnoli polynomial), independent of the writer's table. */
function crc32cBitwise(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** TFRecord's masking: rotate right by 15, add 0xa282ead8, modulo 2^32. */
function mask(crc: number): number {
  const rotated = ((crc >>> 15) | (crc << 17)) >>> 0;
  return (rotated + 0xa282ead8) % 2 ** 32;
}

interface Field {
  field: number;
  wire: number;
  /** Varint: the value; fixed32/64 and length-delimited: the bytes. */
  varint?: bigint;
  bytes?: Uint8Array;
}

/** Protobuf's wire format: key varint (field << 3 | wire type), then the value as the wire type says. */
function decodeFields(buf: Uint8Array): Field[] {
  const out: Field[] = [];
  let at = 0;
  const varint = (): bigint => {
    let v = 0n;
    for (let shift = 0n; ; shift += 7n) {
      if (at >= buf.length) throw new Error('truncated varint');
      const b = buf[at++];
      v |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return v;
    }
  };
  const take = (n: number): Uint8Array => {
    if (at + n > buf.length) throw new Error('truncated field');
    at += n;
    return buf.subarray(at - n, at);
  };
  while (at < buf.length) {
    const key = Number(varint());
    const field = key >>> 3;
    const wire = key & 7;
    if (wire === 0) out.push({ field, wire, varint: varint() });
    else if (wire === 1) out.push({ field, wire, bytes: take(8) });
    else if (wire === 2) out.push({ field, wire, bytes: take(Number(varint())) });
    else if (wire === 5) out.push({ field, wire, bytes: take(4) });
    else throw new Error(`wire type ${wire}`);
  }
  return out;
}

interface DecodedEvent {
  wallTime: number;
  step: number;
  fileVersion?: string;
  values: { tag: string; value: number }[];
}

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** Event: wall_time = 1 double, step = 2 int64, file_version = 3 string, summary = 5 (Summary: value = 1 {tag = 1, simple_value = 2 float}). */
function decodeEvent(data: Uint8Array): DecodedEvent {
  const e: DecodedEvent = { wallTime: Number.NaN, step: 0, values: [] };
  for (const f of decodeFields(data)) {
    if (f.field === 1 && f.wire === 1) e.wallTime = view(f.bytes!).getFloat64(0, true);
    else if (f.field === 2 && f.wire === 0) e.step = Number(BigInt.asIntN(64, f.varint!));
    else if (f.field === 3 && f.wire === 2) e.fileVersion = new TextDecoder().decode(f.bytes);
    else if (f.field === 5 && f.wire === 2) {
      for (const v of decodeFields(f.bytes!)) {
        if (v.field !== 1 || v.wire !== 2) throw new Error(`unexpected Summary field ${v.field}`);
        let tag = '';
        let value = Number.NaN;
        for (const x of decodeFields(v.bytes!)) {
          if (x.field === 1 && x.wire === 2) tag = new TextDecoder().decode(x.bytes);
          else if (x.field === 2 && x.wire === 5) value = view(x.bytes!).getFloat32(0, true);
        }
        e.values.push({ tag, value });
      }
    } else throw new Error(`unexpected Event field ${f.field} (wire type ${f.wire})`);
  }
  return e;
}

/** Walks the file record by record: uint64 length, masked CRC of it, data, masked CRC of the data. */
function readEventFile(path: string): DecodedEvent[] {
  const buf = new Uint8Array(readFileSync(path));
  const events: DecodedEvent[] = [];
  let at = 0;
  while (at < buf.length) {
    if (at + 12 > buf.length) throw new Error(`truncated header at ${at}`);
    const header = buf.subarray(at, at + 8);
    const length = Number(view(header).getBigUint64(0, true));
    if (view(buf).getUint32(at + 8, true) !== mask(crc32cBitwise(header)))
      throw new Error(`length CRC at ${at}`);
    const start = at + 12;
    if (start + length + 4 > buf.length) throw new Error(`truncated record at ${at}`);
    const data = buf.subarray(start, start + length);
    if (view(buf).getUint32(start + length, true) !== mask(crc32cBitwise(data)))
      throw new Error(`data CRC at ${at}`);
    events.push(decodeEvent(data));
    at = start + length + 4;
  }
  return events;
}

/** The one event file in `dir`, named as TensorFlow names them. */
function eventFileIn(dir: string): string {
  const files = readdirSync(dir).filter((f) => f.startsWith('events.out.tfevents.'));
  expect(files).toHaveLength(1);
  expect(files[0]).toMatch(/^events\.out\.tfevents\.\d{10}\..+$/);
  return join(dir, files[0]);
}

function metricsOf(runDir: string): MetricsLine[] {
  return readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
    .trimEnd()
    .split('\n')
    .map((l) => JSON.parse(l) as MetricsLine);
}

async function finished(events: AsyncIterable<LaunchEvent>): Promise<LaunchEvent[]> {
  const seen: LaunchEvent[] = [];
  for await (const e of events) seen.push(e);
  return seen;
}

// ── The tests ────────────────────────────────────────────────────────────────────────────────────────────────

describe('CRC-32C', () => {
  it("matches RFC 3720's vectors (B.4) and the check value", () => {
    const ascii = (s: string) => new TextEncoder().encode(s);
    const cases: [Uint8Array, number][] = [
      [new Uint8Array(32), 0x8a9136aa],
      [new Uint8Array(32).fill(0xff), 0x62a8ab43],
      [Uint8Array.from({ length: 32 }, (_, i) => i), 0x46dd794e],
      [ascii('123456789'), 0xe3069283],
    ];
    for (const [data, want] of cases) {
      expect(crc32c(data)).toBe(want);
      expect(crc32cBitwise(data)).toBe(want);
    }
  });

  it('masks as TFRecord does', () => {
    for (const data of [new Uint8Array(0), new Uint8Array(8), new TextEncoder().encode('brain.Event:2')]) {
      expect(maskedCrc32c(data)).toBe(mask(crc32cBitwise(data)));
    }
    // The masked CRC of the empty string, worked by hand: crc 0 → rotated 0 → 0xa282ead8.
    expect(maskedCrc32c(new Uint8Array(0))).toBe(0xa282ead8);
  });
});

describe('TensorBoard event files', () => {
  it('reads back record by record: the file version first, then each step with its scalars', () => {
    const dir = join(tmp, 'writer');
    const writer = new EventFileWriter(dir, 1_700_000_000.25);
    writer.scalars(1, 1_700_000_001.5, [
      { tag: 'train/loss', value: 2.3125917 },
      { tag: 'train/lr', value: 1e-3 },
    ]);
    // A step past 2^32 takes a varint of six bytes; a tag of 200 bytes a two-byte length.
    writer.scalars(2 ** 40 + 3, 1_700_000_002, [{ tag: 'x'.repeat(200), value: -0.5 }]);
    writer.close();
    const path = eventFileIn(dir);
    expect(path).toContain('events.out.tfevents.1700000000.');
    expect(readEventFile(path)).toEqual([
      { wallTime: 1_700_000_000.25, step: 0, fileVersion: 'brain.Event:2', values: [] },
      {
        wallTime: 1_700_000_001.5,
        step: 1,
        values: [
          { tag: 'train/loss', value: Math.fround(2.3125917) },
          { tag: 'train/lr', value: Math.fround(1e-3) },
        ],
      },
      { wallTime: 1_700_000_002, step: 2 ** 40 + 3, values: [{ tag: 'x'.repeat(200), value: -0.5 }] },
    ]);
  });

  it('the reader refuses a file with any one byte changed', () => {
    const dir = join(tmp, 'corrupt');
    const writer = new EventFileWriter(dir);
    writer.scalars(7, 1_700_000_000, [{ tag: 'eval/accuracy', value: 0.9 }]);
    writer.close();
    const path = eventFileIn(dir);
    const good = readFileSync(path);
    const copy = join(tmp, 'corrupt-copy');
    copyFileSync(path, copy);
    expect(readEventFile(copy)).toHaveLength(2);
    // Every byte is a length, a CRC, or data under a CRC: flipping any one must be caught.
    for (let i = 0; i < good.length; i++) {
      const bad = Buffer.from(good);
      bad[i] ^= 0x10;
      writeFileSync(copy, bad);
      expect(() => readEventFile(copy), `byte ${i} changed`).toThrow();
    }
  });
});

type Job = Record<string, unknown>;

function mlpJob(over: Job): Job {
  return {
    name: 'run-files-test',
    backend: 'cpu',
    seed: 5,
    model: { type: 'mlp', layers: [784, 16, 10], dropout: 0 },
    data: { dataset: 'mnist', shuffle: true },
    optimizer: { type: 'Adam', params: { lr: 0.002 } },
    train_micro_batch_size_per_gpu: 8,
    steps_per_print: 1000,
    ...over,
  };
}

/** The scalars a step or eval line must have become in the event file. */
function scalarsOf(l: StepLine | EvalLine): { tag: string; value: number }[] {
  if (l.type === 'eval') return [{ tag: 'eval/accuracy', value: Math.fround(l.accuracy) }];
  return [
    ['train/loss', l.loss],
    ['train/lr', l.lr],
    ['train/grad_norm', l.grad_norm],
    ['train/samples_per_s', l.samples_per_s],
    ['train/comm_fraction', l.comm_fraction],
    ['train/rss_mib', l.rss_bytes / 2 ** 20],
  ].map(([tag, value]) => ({ tag: tag as string, value: Math.fround(value as number) }));
}

describe('a run writes metrics.jsonl and TensorBoard files', () => {
  it('two ranks, 40 steps, an evaluation every 20: the event file holds exactly the lines of metrics.jsonl', async () => {
    const STEPS = 40;
    const runDir = join(tmp, 'run');
    const handle = launch(mlpJob({ steps: STEPS, eval: { every_steps: 20 }, trace: {} }), {
      nproc: 2,
      runDir,
    });
    const [events] = await Promise.all([finished(handle.events), handle.result]);
    expect(events.filter((e) => e.type === 'warning')).toEqual([]);

    const lines = metricsOf(runDir);
    const first = lines[0];
    const last = lines[lines.length - 1];
    expect(first.type).toBe('run');
    if (first.type !== 'run') return;
    expect([first.job, first.world, first.nodes, first.job_file]).toEqual([
      'run-files-test',
      2,
      1,
      undefined,
    ]);
    expect((first.config as { steps: number }).steps).toBe(STEPS);
    expect(first.memory_estimate?.params).toBeGreaterThan(0);
    expect(last).toMatchObject({ type: 'end', ok: true });

    const steps = lines.filter((l): l is StepLine => l.type === 'step');
    // Paced (src/trainer/record-pacer.ts): the first step, the evaluated and the last ones at least, in order.
    const stepNumbers = steps.map((l) => l.step);
    expect(stepNumbers).toEqual([...stepNumbers].sort((a, b) => a - b));
    for (const step of [1, 20, STEPS]) expect(stepNumbers).toContain(step);
    const evals = lines.filter((l): l is EvalLine => l.type === 'eval');
    expect(evals.map((l) => l.step)).toEqual([20, 40]);
    const memory = lines.filter((l) => l.type === 'memory');
    expect(memory.map((l) => l.rank).sort()).toEqual([0, 1]);
    for (const m of memory) {
      expect(m.state_bytes).toBe(m.params_bytes + m.grads_bytes + m.optimizer_bytes);
      expect(m.estimate_bytes).toBeGreaterThan(0);
      expect(m.peak_rss_bytes).toBeGreaterThan(0);
    }
    expect(lines.filter((l) => l.type === 'summary')).toHaveLength(1);
    const timeline = lines.find((l) => l.type === 'timeline');
    expect(timeline?.ranks.map((r) => r.rank)).toEqual([0, 1]);
    for (const r of timeline?.ranks ?? []) expect(r.busy + r.idle).toBeCloseTo(1, 9);

    // The event file, record by record, against the step and eval lines in the order they were written.
    const [version, ...scalarEvents] = readEventFile(eventFileIn(join(runDir, 'tb')));
    expect(version.fileVersion).toBe('brain.Event:2');
    expect(version.wallTime).toBeGreaterThan(first.started ? Date.parse(first.started) / 1000 - 1 : 0);
    const recorded = lines.filter((l): l is StepLine | EvalLine => l.type === 'step' || l.type === 'eval');
    expect(scalarEvents.map((e) => ({ step: e.step, wallTime: e.wallTime, values: e.values }))).toEqual(
      recorded.map((l) => ({ step: l.step, wallTime: l.time, values: scalarsOf(l) })),
    );
  }, 60_000);

  it('a multi-stage job writes one TensorBoard directory per run', async () => {
    const runDir = join(tmp, 'staged');
    const handle = launch(
      mlpJob({
        name: 'staged-files',
        steps: 10,
        stages: [{ name: 'first' }, { name: 'second', seeds: [1, 2] }],
      }),
      { nproc: 2, runDir },
    );
    await Promise.all([finished(handle.events), handle.result]);
    expect(readdirSync(join(runDir, 'tb')).sort()).toEqual(['first', 'second']);
    for (const dir of ['first', 'second/seed-1', 'second/seed-2']) {
      const [version, ...rest] = readEventFile(eventFileIn(join(runDir, 'tb', dir)));
      expect(version.fileVersion).toBe('brain.Event:2');
      const train = rest.filter((e) => e.values[0].tag === 'train/loss').map((e) => e.step);
      // Each run's own steps, 1 to 10 (paced: the first, the logged and the last at least).
      expect([train[0], train.at(-1)], dir).toEqual([1, 10]);
      expect(train, dir).toEqual([...train].sort((a, b) => a - b));
      expect(
        rest.filter((e) => e.values[0].tag === 'eval/accuracy').map((e) => e.step),
        dir,
      ).toEqual([10]);
    }
    const lines = metricsOf(runDir);
    expect(lines.filter((l) => l.type === 'stage').map((l) => [l.label.stage, l.label.seed])).toEqual([
      ['first', undefined],
      ['second', 1],
      ['second', 2],
    ]);
    expect(lines.filter((l) => l.type === 'stages')).toHaveLength(1);
    expect(lines[lines.length - 1]).toMatchObject({ type: 'end', ok: true });
  }, 60_000);
});

describe('RunFiles on its own', () => {
  const job = validateJob(mlpJob({ steps: 3, fp16: { enabled: true } }));
  const plan = launch(mlpJob({ steps: 3, fp16: { enabled: true } }), { dryRun: true }).plan;
  const step = (n: number): LaunchEvent => ({
    type: 'step',
    record: {
      kind: 'step',
      step: n,
      total_steps: 3,
      epoch: 1,
      epochs: 1,
      loss: 2,
      lr: 0.001,
      grad_norm: 1,
      loss_scale: 65536,
      skipped: 1,
      samples_per_s: 100,
      comm_fraction: 0.1,
      rss_bytes: 2 ** 27,
      time: 1_700_000_000 + n,
    },
  });

  it('an fp16 step carries the loss scale and the skipped steps', () => {
    const runDir = join(tmp, 'fp16');
    const files = new RunFiles({ runDir, plan, job, warn: (m) => expect.fail(m) });
    files.event(step(1));
    files.close();
    const [, event] = readEventFile(eventFileIn(join(runDir, 'tb')));
    expect(event.values.slice(-3)).toEqual([
      { tag: 'train/rss_mib', value: 128 },
      { tag: 'train/loss_scale', value: 65536 },
      { tag: 'train/skipped', value: 1 },
    ]);
  });

  it('a full disk is one warning, and writing stops', () => {
    const runDir = join(tmp, 'full');
    mkdirSync(runDir);
    // Every write to /dev/full fails with ENOSPC, as on a full disk.
    symlinkSync('/dev/full', join(runDir, 'metrics.jsonl'));
    const warnings: string[] = [];
    const files = new RunFiles({ runDir, plan, job, warn: (m) => warnings.push(m) });
    files.event(step(1));
    files.event(step(2));
    files.close();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/could not write the run's metrics in .*ENOSPC/);
    // It stopped before the first step's event file.
    expect(readdirSync(runDir)).toEqual(['metrics.jsonl']);
  });
});
