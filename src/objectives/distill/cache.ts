/**
 * Cached teacher logits: the teacher runs once over the data set, its logits go to one binary file, and training
 * reads them back by sample index instead of running the teacher (TextBrewer's is_caching_logits, kept on disk so
 * every rank and every later run share it).
 *
 * File layout, little-endian:
 *
 *   magic "KDTLOGIT" (8) · u32 version · u32 count · u32 classes · u32 k · u32 dtype (0 fp32, 1 fp16) · u32 0
 *   values   count × k            (dtype)    row r: sample r's k largest logits (all of them when k = classes)
 *   indices  count × k            (u16 when classes ≤ 65536, else u32; absent when k = classes)
 *   tails    count                (dtype)    the mean of the logits left out (absent when k = classes)
 *
 * With k = classes in fp32 the logits read back are the teacher's bit for bit, so the loss equals the live
 * teacher's. With k < classes the left-out classes are restored at their mean, which keeps their total softmax
 * mass near the original and the mse term's error minimal for one stored number.
 */
import { readFileSync, renameSync } from 'node:fs';
import { endianness } from 'node:os';
import { tf } from '../../backend/tf.ts';
import { writeFileSynced } from '../../base/durable-file.ts';
import { wireCodec } from '../../comm/wire-dtype.ts';
import type { Adaptor, FeatureRef, Teacher, TeacherSource } from './teacher.ts';

const MAGIC = Buffer.from('KDTLOGIT', 'latin1');
const VERSION = 1;
const HEADER_BYTES = 32;
const DTYPES = ['fp32', 'fp16'] as const;
export type CacheDtype = (typeof DTYPES)[number];

export interface TeacherCacheOptions {
  /** Keep each sample's `topK` largest logits; omitted: every class. */
  readonly topK?: number;
  readonly dtype?: CacheDtype;
}

interface Layout {
  count: number;
  classes: number;
  k: number;
  dtype: CacheDtype;
  valueBytes: number;
  indexBytes: number;
  indicesAt: number;
  tailsAt: number;
  totalBytes: number;
}

function layout(count: number, classes: number, k: number, dtype: CacheDtype): Layout {
  const valueBytes = dtype === 'fp32' ? 4 : 2;
  const sparse = k < classes;
  const indexBytes = sparse ? (classes <= 0x10000 ? 2 : 4) : 0;
  const indicesAt = HEADER_BYTES + count * k * valueBytes;
  const tailsAt = indicesAt + count * k * indexBytes;
  const totalBytes = tailsAt + (sparse ? count * valueBytes : 0);
  return { count, classes, k, dtype, valueBytes, indexBytes, indicesAt, tailsAt, totalBytes };
}

function checkHost(): void {
  // Values and indices are written as the host's typed arrays; the format is little-endian.
  if (endianness() !== 'LE') throw new Error('teacher logit caches are little-endian; this host is not');
}

/**
 * The cache file's bytes for `logits` ([count, classes] row-major fp32, row r = sample index r).
 */
export function encodeTeacherLogits(
  logits: Float32Array,
  count: number,
  classes: number,
  options: TeacherCacheOptions = {},
): Uint8Array {
  checkHost();
  if (logits.length !== count * classes) {
    throw new RangeError(
      `${count} samples × ${classes} classes need ${count * classes} logits, got ${logits.length}`,
    );
  }
  const k = options.topK === undefined ? classes : Math.min(options.topK, classes);
  if (!(Number.isInteger(k) && k >= 1))
    throw new RangeError(`top_k must be a positive integer, got ${options.topK}`);
  const dtype = options.dtype ?? 'fp32';
  const l = layout(count, classes, k, dtype);
  const out = new Uint8Array(l.totalBytes);
  out.set(MAGIC, 0);
  const header = new DataView(out.buffer, 0, HEADER_BYTES);
  [VERSION, count, classes, k, DTYPES.indexOf(dtype), 0].forEach((v, i) => {
    header.setUint32(8 + 4 * i, v, true);
  });

  const values = new Float32Array(count * k);
  const indices = l.indexBytes === 2 ? new Uint16Array(count * k) : new Uint32Array(count * k);
  const tails = new Float32Array(count);
  const order = new Int32Array(classes);
  for (let r = 0; r < count; r++) {
    const row = logits.subarray(r * classes, (r + 1) * classes);
    if (k === classes) {
      values.set(row, r * k);
      continue;
    }
    for (let c = 0; c < classes; c++) order[c] = c;
    // Largest first; ties by class index, so the file does not depend on the sort's stability.
    order.sort((a, b) => row[b] - row[a] || a - b);
    let rest = 0;
    for (let j = 0; j < classes; j++) {
      if (j < k) {
        values[r * k + j] = row[order[j]];
        indices[r * k + j] = order[j];
      } else {
        rest += row[order[j]];
      }
    }
    tails[r] = rest / (classes - k);
  }
  const codec = wireCodec(dtype);
  codec.encode(values, out.subarray(HEADER_BYTES, l.indicesAt));
  if (k < classes) {
    out.set(new Uint8Array(indices.buffer, 0, indices.byteLength), l.indicesAt);
    codec.encode(tails, out.subarray(l.tailsAt, l.totalBytes));
  }
  return out;
}

/** Where `cacheTeacherLogits` gets the data set's inputs: `count` samples, a batch of them by index. */
export interface SampleSource {
  readonly count: number;
  inputs(indices: Int32Array): tf.Tensor;
}

/**
 * Runs `teacher` over every sample of `samples` (in batches of `batchSize`, inference only) and writes its logits
 * to `path`: through a temporary name, fsynced, then renamed, so a reader never sees half a file.
 */
export async function cacheTeacherLogits(
  path: string,
  teacher: Teacher,
  adaptor: Adaptor,
  samples: SampleSource,
  options: TeacherCacheOptions & { readonly batchSize?: number } = {},
): Promise<void> {
  const batchSize = options.batchSize ?? 256;
  let classes = 0;
  let all = new Float32Array(0);
  for (let from = 0; from < samples.count; from += batchSize) {
    const n = Math.min(batchSize, samples.count - from);
    const indices = Int32Array.from({ length: n }, (_, i) => from + i);
    const logits = tf.tidy(() => {
      const inputs = samples.inputs(indices);
      return tf.reshape(adaptor.logits(teacher.run(inputs)), [n, -1]) as tf.Tensor2D;
    });
    const data = (await logits.data()) as Float32Array;
    if (from === 0) {
      classes = logits.shape[1];
      all = new Float32Array(samples.count * classes);
    }
    logits.dispose();
    all.set(data, from * classes);
  }
  const bytes = encodeTeacherLogits(all, samples.count, classes, options);
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSynced(tmp, bytes);
  renameSync(tmp, path);
}

/** Teacher logits read from a cache file by sample index: a TeacherSource that never runs a model. */
export class CachedTeacher implements TeacherSource {
  readonly count: number;
  readonly classes: number;
  readonly topK: number;
  readonly dtype: CacheDtype;
  readonly #bytes: Uint8Array;
  readonly #layout: Layout;

  constructor(bytes: Uint8Array, source = 'teacher logit cache') {
    checkHost();
    if (bytes.length < HEADER_BYTES || !Buffer.from(bytes.subarray(0, 8)).equals(MAGIC)) {
      throw new Error(`${source} is not a teacher logit cache (bad magic)`);
    }
    const header = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
    const [version, count, classes, k, dtypeCode] = [0, 1, 2, 3, 4].map((i) =>
      header.getUint32(8 + 4 * i, true),
    );
    if (version !== VERSION)
      throw new Error(`${source}: format version ${version}, this build reads ${VERSION}`);
    const dtype = DTYPES[dtypeCode];
    if (dtype === undefined || k < 1 || k > classes) {
      throw new Error(`${source}: corrupt header (k ${k}, classes ${classes}, dtype ${dtypeCode})`);
    }
    const l = layout(count, classes, k, dtype);
    if (bytes.length !== l.totalBytes) {
      throw new Error(`${source}: ${bytes.length} bytes, its header describes ${l.totalBytes} (truncated?)`);
    }
    this.count = count;
    this.classes = classes;
    this.topK = k;
    this.dtype = dtype;
    this.#bytes = bytes;
    this.#layout = l;
  }

  static open(path: string): CachedTeacher {
    return new CachedTeacher(readFileSync(path), path);
  }

  /** The logits of the samples `indices`, [indices.length, classes] fp32. */
  logits(indices: Int32Array): tf.Tensor2D {
    const { classes, k, valueBytes, indexBytes, indicesAt, tailsAt } = this.#layout;
    const codec = wireCodec(this.dtype);
    const out = new Float32Array(indices.length * classes);
    const values = new Float32Array(k);
    const tail = new Float32Array(1);
    const b = this.#bytes;
    for (let i = 0; i < indices.length; i++) {
      const r = indices[i];
      if (!(r >= 0 && r < this.count)) {
        throw new RangeError(`sample ${r} is outside the ${this.count} cached samples`);
      }
      const start = HEADER_BYTES + r * k * valueBytes;
      codec.decodeInto(b.subarray(start, start + k * valueBytes), values);
      const row = out.subarray(i * classes, (i + 1) * classes);
      if (k === classes) {
        row.set(values);
        continue;
      }
      codec.decodeInto(b.subarray(tailsAt + r * valueBytes, tailsAt + (r + 1) * valueBytes), tail);
      row.fill(tail[0]);
      const at = indicesAt + r * k * indexBytes;
      const view = new DataView(b.buffer, b.byteOffset + at, k * indexBytes);
      for (let j = 0; j < k; j++) {
        row[indexBytes === 2 ? view.getUint16(2 * j, true) : view.getUint32(4 * j, true)] = values[j];
      }
    }
    return tf.tensor2d(out, [indices.length, classes]);
  }

  outputs(
    _inputs: tf.Tensor,
    indices: Int32Array,
    features: readonly FeatureRef[],
  ): Readonly<Record<string, tf.Tensor>> {
    if (features.length > 0) {
      throw new Error('a cached teacher holds logits only: intermediate matches need the live teacher');
    }
    return { logits: this.logits(indices) };
  }
}
