/**
 * Checkpoints of data-parallel training, DeepSpeed's layout:
 *
 *   DIR/step-N/rank-R.bin   what rank R owns at step N: its flat parameter range, its optimizer state
 *   DIR/latest              "step-N": the newest complete checkpoint
 *
 * Each rank file is one binary record: an 8-byte magic, a little-endian u32 header length, a u32 CRC-32 of
 * everything after it, a JSON header (step, rank, world, owned range, tensor layout, optimizer scalars, the
 * caller's `meta`), padding to 4 bytes, then the Float32 payloads back to back (never as JSON numbers). The
 * checksum covers the header too: a flipped step or optimizer counter is caught like a flipped weight.
 *
 * Crash safety: every file is written under a temporary name, fsynced, and renamed; `latest` is written by
 * rank 0 only after a barrier that every rank reaches once its file is in place, and only then are old
 * checkpoints pruned. A process killed at any point leaves `latest` naming a complete checkpoint.
 *
 * The engine knows nothing of models or data: what the training job needs to restart (model spec, sampler
 * position…) travels in `meta`, a JSON object this module stores and returns untouched.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { endianness } from 'node:os';
import { basename, join } from 'node:path';
import { crc32 } from 'node:zlib';
import { fsyncDir, writeFileSynced } from '../base/durable-file.ts';
import type { Collectives } from '../comm/types.ts';
import type { FlatRange, TensorSlot } from './flat-params.ts';
import type { OptimizerState } from './optimizer.ts';

const MAGIC = Buffer.from('KDCKPT\u0000\u0002', 'latin1');
const FORMAT = 2;
/** The first checkpoint format, whose header the checksum did not cover: refused with a line saying so. */
const MAGIC_1 = Buffer.from('KDCKPT\u0000\u0001', 'latin1');
export const LATEST = 'latest';

/**
 * Test-only: milliseconds each rank sleeps after its checkpoint file is written under its temporary name and
 * before the rename, so a test can kill a worker in the middle of a save. Read here and nowhere else.
 */
const WRITE_DELAY_ENV = 'KD_TEST_CHECKPOINT_WRITE_DELAY_MS';

/** What one rank saves and restores. */
export interface RankState {
  /** Optimizer steps taken. */
  step: number;
  rank: number;
  world: number;
  /** The flat elements this rank owns (stage 0: all of them). */
  range: FlatRange;
  /** The whole flat layout (names and shapes), so that a consolidated export needs nothing else. */
  slots: readonly TensorSlot[];
  /** params[range]. */
  params: Float32Array;
  optimizer: { type: string; state: OptimizerState };
  /** The caller's JSON: model spec, sampler position, RNG scheme… */
  meta: Record<string, unknown>;
}

export function stepDirName(step: number): string {
  return `step-${step}`;
}

export function rankFileName(rank: number): string {
  return `rank-${rank}.bin`;
}

interface ArrayEntry {
  name: string;
  length: number;
}

interface Header {
  format: number;
  endianness: 'LE';
  step: number;
  rank: number;
  world: number;
  range: FlatRange;
  slots: TensorSlot[];
  optimizer: { type: string; scalars: Record<string, number> };
  meta: Record<string, unknown>;
  /** Float32 arrays in payload order: `params`, then `optimizer.<name>` for each state buffer. */
  arrays: ArrayEntry[];
  payload_bytes: number;
}

function encode(state: RankState): Buffer {
  const arrays: { name: string; data: Float32Array }[] = [{ name: 'params', data: state.params }];
  const scalars: Record<string, number> = {};
  for (const [name, v] of Object.entries(state.optimizer.state)) {
    if (typeof v === 'number') scalars[name] = v;
    else arrays.push({ name: `optimizer.${name}`, data: v });
  }
  const payloadBytes = arrays.reduce((n, a) => n + a.data.byteLength, 0);
  const payload = Buffer.allocUnsafe(payloadBytes);
  let at = 0;
  for (const { data } of arrays) {
    payload.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    at += data.byteLength;
  }
  const header: Header = {
    format: FORMAT,
    endianness: 'LE',
    step: state.step,
    rank: state.rank,
    world: state.world,
    range: { start: state.range.start, end: state.range.end },
    slots: state.slots.map((s) => ({ ...s, shape: [...s.shape] })),
    optimizer: { type: state.optimizer.type, scalars },
    meta: state.meta,
    arrays: arrays.map((a) => ({ name: a.name, length: a.data.length })),
    payload_bytes: payloadBytes,
  };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const headerEnd = MAGIC.length + 8 + json.length;
  const pad = (4 - (headerEnd % 4)) % 4;
  // Padding with spaces keeps the header valid JSON.
  const body = Buffer.concat([json, Buffer.alloc(pad, 0x20), payload]);
  const fields = Buffer.alloc(8);
  fields.writeUInt32LE(json.length + pad, 0);
  fields.writeUInt32LE(crc32(body), 4);
  return Buffer.concat([MAGIC, fields, body]);
}

export class CorruptCheckpoint extends Error {
  constructor(file: string, why: string) {
    super(`checkpoint ${file} is corrupt or not a kd-launch checkpoint: ${why}`);
    this.name = 'CorruptCheckpoint';
  }
}

/** Refuses a file that does not begin as this format's checkpoint; `start` holds at least its first bytes. */
function checkMagic(file: string, start: Buffer): void {
  const magic = start.subarray(0, MAGIC.length);
  if (magic.equals(MAGIC_1)) {
    throw new CorruptCheckpoint(
      file,
      'it is in the first checkpoint format, whose header no checksum covers: resume it with the kd-launch that wrote it and save again',
    );
  }
  if (start.length < MAGIC.length + 8 || !magic.equals(MAGIC)) throw new CorruptCheckpoint(file, 'bad magic');
}

function parseHeader(file: string, json: Buffer): Header {
  let header: Header;
  try {
    header = JSON.parse(json.toString('utf8')) as Header;
  } catch {
    throw new CorruptCheckpoint(file, 'unreadable header');
  }
  if (header.format !== FORMAT)
    throw new CorruptCheckpoint(file, `format ${header.format}, expected ${FORMAT}`);
  return header;
}

function decode(file: string, bytes: Buffer): RankState {
  checkMagic(file, bytes);
  const headerLen = bytes.readUInt32LE(MAGIC.length);
  const body = bytes.subarray(MAGIC.length + 8);
  const payloadStart = MAGIC.length + 8 + headerLen;
  if (payloadStart > bytes.length) throw new CorruptCheckpoint(file, 'truncated header');
  if (crc32(body) !== bytes.readUInt32LE(MAGIC.length + 4)) {
    throw new CorruptCheckpoint(
      file,
      'checksum mismatch (header or payload changed, or the file is truncated)',
    );
  }
  const header = parseHeader(file, bytes.subarray(MAGIC.length + 8, payloadStart));
  if (endianness() !== 'LE') throw new Error(`${file}: checkpoints are little-endian; this machine is not`);
  const payload = bytes.subarray(payloadStart);
  if (payload.length !== header.payload_bytes) {
    throw new CorruptCheckpoint(
      file,
      `payload is ${payload.length} bytes, the header says ${header.payload_bytes}`,
    );
  }
  // One aligned copy of the payload; the arrays are views of it.
  const floats = new Float32Array(payload.length / 4);
  new Uint8Array(floats.buffer).set(payload);
  const arrays = new Map<string, Float32Array>();
  let at = 0;
  for (const { name, length } of header.arrays) {
    arrays.set(name, floats.subarray(at, at + length));
    at += length;
  }
  const params = arrays.get('params');
  if (!params || params.length !== header.range.end - header.range.start) {
    throw new CorruptCheckpoint(file, 'params do not match the owned range');
  }
  const state: OptimizerState = { ...header.optimizer.scalars };
  for (const [name, data] of arrays) if (name.startsWith('optimizer.')) state[name.slice(10)] = data;
  return {
    step: header.step,
    rank: header.rank,
    world: header.world,
    range: header.range,
    slots: header.slots,
    params,
    optimizer: { type: header.optimizer.type, state },
    meta: header.meta,
  };
}

/** Writes `bytes` to `path` atomically: a temporary sibling, fsynced, renamed over `path`. */
async function writeAtomic(path: string, bytes: Uint8Array, delayMs = 0): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  writeFileSynced(tmp, bytes);
  if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
  renameSync(tmp, path);
}

function testWriteDelayMs(): number {
  const v = Number(process.env[WRITE_DELAY_ENV] ?? 0);
  return Number.isFinite(v) && v > 0 ? v : 0;
}

/** Writes this rank's file of checkpoint `state.step` under `dir` (atomic; no barrier, no `latest`). */
export async function writeRankCheckpoint(dir: string, state: RankState): Promise<string> {
  const stepDir = join(dir, stepDirName(state.step));
  mkdirSync(stepDir, { recursive: true });
  const name = rankFileName(state.rank);
  // Leftovers of a save that was killed before its rename.
  for (const f of readdirSync(stepDir)) {
    if (f.startsWith(`${name}.tmp-`)) rmSync(join(stepDir, f), { force: true });
  }
  const file = join(stepDir, name);
  await writeAtomic(file, encode(state), testWriteDelayMs());
  fsyncDir(stepDir);
  return file;
}

/** Rank 0, after every rank's file is in place: points `latest` at `step`, then prunes beyond `keep`. */
export async function commitCheckpoint(dir: string, step: number, keep: number): Promise<void> {
  await writeAtomic(join(dir, LATEST), Buffer.from(`${stepDirName(step)}\n`, 'utf8'));
  fsyncDir(dir);
  pruneCheckpoints(dir, step, keep);
}

/**
 * Removes checkpoints older than the newest `keep` up to `latestStep`. Newer step directories (left by an
 * earlier run that was later resumed from an older checkpoint) are not touched: the next save there
 * overwrites them.
 */
export function pruneCheckpoints(dir: string, latestStep: number, keep: number): void {
  const steps = listStepDirs(dir).filter((s) => s <= latestStep);
  steps.sort((a, b) => b - a);
  for (const s of steps.slice(Math.max(1, keep)))
    rmSync(join(dir, stepDirName(s)), { recursive: true, force: true });
}

/** Step numbers of the `step-N` directories under `dir`. */
export function listStepDirs(dir: string): number[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .map((f) => /^step-(\d+)$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]));
}

/**
 * Every rank writes its file; once all have (a barrier), rank 0 commits `latest` and prunes; a second barrier
 * makes the save complete on every rank when this returns.
 */
export async function saveCheckpoint(
  dir: string,
  keep: number,
  state: RankState,
  pg: Pick<Collectives, 'barrier'>,
): Promise<string> {
  await writeRankCheckpoint(dir, state);
  await pg.barrier();
  if (state.rank === 0) await commitCheckpoint(dir, state.step, keep);
  await pg.barrier();
  return join(dir, stepDirName(state.step));
}

/** The step directory `dir/latest` names, or undefined when `dir` has no `latest` (nothing saved yet). */
export function latestCheckpoint(dir: string): string | undefined {
  const file = join(dir, LATEST);
  if (!existsSync(file)) return undefined;
  const name = readFileSync(file, 'utf8').trim();
  if (!/^step-\d+$/.test(name))
    throw new CorruptCheckpoint(file, `it names '${name}', not a step-N directory`);
  const stepDir = join(dir, name);
  if (!existsSync(stepDir)) throw new Error(`checkpoint ${file} names ${stepDir}, which does not exist`);
  return stepDir;
}

/**
 * A checkpoint path as users give it: a checkpoint directory (its `latest` is followed) or one `step-N`
 * directory. Throws naming the path when it is neither.
 */
export function resolveCheckpoint(path: string): string {
  if (!existsSync(path)) throw new Error(`no checkpoint at ${path}: it does not exist`);
  if (!statSync(path).isDirectory()) throw new Error(`checkpoint ${path} is not a directory`);
  const latest = latestCheckpoint(path);
  if (latest) return latest;
  if (existsSync(join(path, rankFileName(0)))) return path;
  throw new Error(
    `no checkpoint at ${path}: it holds neither '${LATEST}' nor ${rankFileName(0)} (give a checkpoint dir or a step-N dir)`,
  );
}

/** `read(file)`, with a missing or unreadable file an error naming it. */
function readingFile<T>(file: string, read: (file: string) => T): T {
  try {
    return read(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(
      code === 'ENOENT'
        ? `checkpoint file ${file} is missing`
        : `cannot read checkpoint file ${file}: ${code}`,
    );
  }
}

/** A step directory renamed (or a file copied into another) says one step and holds another. */
function checkStepDir(file: string, stepDir: string, step: number): void {
  const named = /^step-(\d+)$/.exec(basename(stepDir));
  if (named && Number(named[1]) !== step) {
    throw new CorruptCheckpoint(file, `it holds step ${step}, its directory says ${named[1]}`);
  }
}

/** Reads rank `rank`'s file of the step directory `stepDir`; missing or corrupt files are errors naming them. */
export function readRankCheckpoint(stepDir: string, rank: number): RankState {
  const file = join(stepDir, rankFileName(rank));
  const state = decode(
    file,
    readingFile(file, (f) => readFileSync(f)),
  );
  if (state.rank !== rank) throw new CorruptCheckpoint(file, `it holds rank ${state.rank}`);
  checkStepDir(file, stepDir, state.step);
  return state;
}

/** What a checkpoint's header says of it, read without any payload. */
export interface CheckpointHeader {
  readonly stepDir: string;
  readonly step: number;
  /** The world size that wrote it. */
  readonly world: number;
  /** The caller's JSON, as saved. */
  readonly meta: Record<string, unknown>;
}

/**
 * Rank 0's header of the step directory `stepDir`, its payload left unread: what the launcher plans with, for a
 * few KiB whatever the model's size. The checksum covers the payload too, so it is not verified here: loading the
 * checkpoint (readRankCheckpoint) verifies it.
 */
export function readCheckpointHeader(stepDir: string): CheckpointHeader {
  const file = join(stepDir, rankFileName(0));
  const fd = readingFile(file, (f) => openSync(f, 'r'));
  try {
    const start = Buffer.alloc(MAGIC.length + 8);
    checkMagic(file, start.subarray(0, readSync(fd, start, 0, start.length, 0)));
    const length = start.readUInt32LE(MAGIC.length);
    if (start.length + length > fstatSync(fd).size) throw new CorruptCheckpoint(file, 'truncated header');
    const json = Buffer.alloc(length);
    readSync(fd, json, 0, length, start.length);
    const header = parseHeader(file, json);
    checkStepDir(file, stepDir, header.step);
    return { stepDir, step: header.step, world: header.world, meta: header.meta };
  } finally {
    closeSync(fd);
  }
}

/** Every rank's file of one step directory (rank 0's header says how many there are). */
export function readAllRanks(stepDir: string): RankState[] {
  const first = readRankCheckpoint(stepDir, 0);
  const all = [first];
  for (let r = 1; r < first.world; r++) {
    const s = readRankCheckpoint(stepDir, r);
    if (s.step !== first.step || s.world !== first.world) {
      throw new CorruptCheckpoint(
        join(stepDir, rankFileName(r)),
        `step ${s.step} of world ${s.world}, rank 0 has step ${first.step} of world ${first.world}`,
      );
    }
    all.push(s);
  }
  return all;
}

/** A checkpoint as one whole: every parameter and every per-element optimizer buffer over the whole flat space. */
export interface Consolidated {
  step: number;
  slots: readonly TensorSlot[];
  params: Float32Array;
  optimizer: { type: string; state: OptimizerState };
  meta: Record<string, unknown>;
}

/**
 * Joins the ranks' owned ranges (any world size, any ZeRO stage: at stage 0 every rank owns everything) into the
 * whole flat space, parameters and optimizer buffers alike; scalar counters must agree across ranks. A job of
 * another world size then takes its own ranges of it: that is how a checkpoint resumes at N = 2 → 3 or 1.
 */
export function consolidate(ranks: readonly RankState[]): Consolidated {
  const first = ranks[0];
  const last = first.slots.at(-1);
  const length = last ? last.offset + last.size : 0;
  const covered = new Uint8Array(length);
  const params = new Float32Array(length);
  const state: OptimizerState = {};
  for (const r of ranks) {
    if (r.optimizer.type !== first.optimizer.type) {
      throw new Error(`rank ${r.rank} saved optimizer ${r.optimizer.type}, rank 0 ${first.optimizer.type}`);
    }
    params.set(r.params, r.range.start);
    covered.fill(1, r.range.start, r.range.end);
    for (const [name, v] of Object.entries(r.optimizer.state)) {
      if (typeof v === 'number') {
        const seen = state[name];
        if (seen !== undefined && seen !== v) {
          throw new Error(`optimizer counter '${name}' is ${v} on rank ${r.rank}, ${seen} on another rank`);
        }
        state[name] = v;
        continue;
      }
      const whole =
        state[name] instanceof Float32Array ? (state[name] as Float32Array) : new Float32Array(length);
      whole.set(v, r.range.start);
      state[name] = whole;
    }
  }
  const hole = covered.indexOf(0);
  if (hole >= 0)
    throw new Error(`the checkpoint's ranks do not cover parameter element ${hole} of ${length}`);
  return {
    step: first.step,
    slots: first.slots,
    params,
    optimizer: { type: first.optimizer.type, state },
    meta: first.meta,
  };
}

/** A checkpoint to resume from, verified, and the newer ones passed over for it (each with what was wrong). */
export interface Resumable {
  readonly stepDir: string;
  readonly state: Consolidated;
  readonly passedOver: readonly string[];
  /** The directory has step directories but no `latest`. */
  readonly noLatest: boolean;
}

/**
 * The newest checkpoint under `dir` that verifies whole (every rank's file present, checksummed, of its step, and
 * consistent across ranks): `latest` first, then the step directories newest first. Undefined when there is
 * none; passed-over checkpoints are listed with what was wrong with them.
 */
export function newestVerified(dir: string): Resumable | undefined {
  const { candidates, passedOver, noLatest } = resumeCandidates(dir);
  for (const stepDir of candidates) {
    try {
      return { stepDir, state: consolidate(readAllRanks(stepDir)), passedOver, noLatest };
    } catch (err) {
      passedOver.push((err as Error).message);
    }
  }
  return undefined;
}

/**
 * The header of the checkpoint `resume: auto` will load from `dir` (newestVerified), read as readCheckpointHeader
 * reads it: the first candidate whose header reads. Undefined when none does. A checkpoint whose payload is
 * corrupt is passed over only by the load, which then takes an older one (of the same job, most often written
 * with the same batch; the load checks that it was).
 */
export function newestHeader(dir: string): CheckpointHeader | undefined {
  for (const stepDir of resumeCandidates(dir).candidates) {
    try {
      return readCheckpointHeader(stepDir);
    } catch {
      // Passed over, as the load will pass over it (and say why).
    }
  }
  return undefined;
}

/**
 * The step directories `resume: auto` tries, in its order: `latest`, then the step directories newest first; and
 * what was wrong with `latest` when it names none.
 */
function resumeCandidates(dir: string): { candidates: string[]; passedOver: string[]; noLatest: boolean } {
  const candidates: string[] = [];
  const passedOver: string[] = [];
  // Step directories newer than `latest` are an abandoned run's (resumed from an older checkpoint since).
  let below = Number.POSITIVE_INFINITY;
  const noLatest = !existsSync(join(dir, LATEST)) && listStepDirs(dir).length > 0;
  if (!noLatest) {
    try {
      const latest = latestCheckpoint(dir);
      if (latest) {
        candidates.push(latest);
        below = Number(/(\d+)$/.exec(latest)?.[1]);
      }
    } catch (err) {
      passedOver.push((err as Error).message);
    }
  }
  for (const step of listStepDirs(dir).sort((a, b) => b - a)) {
    if (step < below) candidates.push(join(dir, stepDirName(step)));
  }
  return { candidates, passedOver, noLatest };
}

/**
 * Why a run that does not resume must not start over `dir`: it already holds checkpoints (nothing retrains from
 * step 0 over them unless the job says `resume: never`), or it is a file, where none can be written. Undefined
 * when `dir` holds none.
 */
export function checkpointsHeld(dir: string): string | undefined {
  if (existsSync(dir) && !statSync(dir).isDirectory()) {
    return `${dir} is not a directory: checkpoints are written into step-N directories inside it`;
  }
  const held = listStepDirs(dir);
  if (held.length === 0) return undefined;
  return `${dir} already holds checkpoints (newest step-${Math.max(...held)}): give resume: auto to continue from it, resume: never to start over it, or another checkpoint.dir`;
}
