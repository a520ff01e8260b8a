/**
 * Classification sets of the user's own as NumPy arrays (`format: npy`): samples x, whose first axis is the samples
 * and the rest one sample's shape, and class indices y, one per sample. The launcher reads every header and every
 * label before any worker starts and refuses what it cannot train on, naming the file and the member; x's values
 * are read only as batches need them. A `.npy` file, or a member an `.npz` stores (np.savez), stays on disk: each
 * batch's samples are read by position from the open file (Node has no mmap; this is what a memory map would page
 * in), so a set larger than memory trains, and a split of it is a view by index. A member np.savez_compressed
 * deflates is inflated into memory once.
 */
import { resolve } from 'node:path';
import type { NpyDataSpec, NpySource } from '../config/npy-data.ts';
import { checkedIndex, IndexView, type LabeledSet } from './labeled-set.ts';
import {
  decodeInto,
  forEachChunk,
  type NpyArray,
  Npz,
  openBytes,
  pyShape,
  readNpy,
  refuseArray,
} from './npy.ts';
import { ReadOnce } from './read-once.ts';
import { refuse } from './refuse.ts';
import { splitByFraction } from './split.ts';

/** A source's splits, with one sample's shape. */
export interface NpyData {
  readonly train: LabeledSet;
  readonly test: LabeledSet;
  /** x's shape after the first axis (`[1]` when x is 1-D): what a model of the data takes. */
  readonly sampleShape: readonly number[];
}

/** The samples of one source: x read from its file per batch (as fp32), the labels in memory. */
class NpySet implements LabeledSet {
  readonly length: number;
  readonly featureSize: number;
  readonly numClasses: number;
  readonly labels: Uint8Array;
  readonly #x: NpyArray;
  readonly #sampleBytes: number;

  constructor(x: NpyArray, featureSize: number, numClasses: number, labels: Uint8Array) {
    this.#x = x;
    this.#sampleBytes = featureSize * x.dtype.size;
    this.length = labels.length;
    this.featureSize = featureSize;
    this.numClasses = numClasses;
    this.labels = labels;
  }

  readInputs(indices: ArrayLike<number>, from: number, count: number): Float32Array {
    const b = this.#sampleBytes;
    const raw = new Uint8Array(count * b);
    // Samples that follow each other in the file are one read (an evaluation's, an unshuffled epoch's).
    for (let i = 0; i < count; ) {
      const first = checkedIndex(this, indices[from + i]);
      let run = 1;
      while (i + run < count && first + run < this.length && indices[from + i + run] === first + run) run++;
      this.#x.bytes.readInto(raw, i * b, this.#x.offset + first * b, run * b);
      i += run;
    }
    const out = new Float32Array(count * this.featureSize);
    decodeInto(raw, this.#x.dtype, out);
    return out;
  }

  subset(rows: ArrayLike<number>): LabeledSet {
    return new IndexView(this, rows);
  }
}

/** One source's two arrays, and the name that stands for the source in messages. */
interface Source {
  readonly name: string;
  readonly pair: boolean;
  readonly x: NpyArray;
  readonly y: NpyArray;
}

function openSource(
  spec: NpyDataSpec,
  source: NpySource,
  jobDir: string,
  opened: { close(): void }[],
): Source {
  const open = (path: string) => {
    const file = resolve(jobDir, path);
    const bytes = openBytes(file);
    opened.push(bytes);
    return { file, bytes };
  };
  if (typeof source === 'string') {
    const { file, bytes } = open(source);
    const npz = new Npz(file, bytes);
    return { name: file, pair: false, x: npz.array(spec.x), y: npz.array(spec.y) };
  }
  const x = open(source.x);
  const y = open(source.y);
  return {
    name: x.file,
    pair: true,
    x: readNpy({ file: x.file }, x.bytes),
    y: readNpy({ file: y.file }, y.bytes),
  };
}

/** One sample's shape and values; x and y agree on the samples. */
function checkShapes(s: Source): { sampleShape: number[]; featureSize: number } {
  const { x, y } = s;
  if (x.shape.length === 0) refuseArray(x.where, "'shape' is (): x needs a first axis, the samples");
  if (y.shape.length !== 1) {
    refuseArray(
      y.where,
      `'shape' is ${pyShape(y.shape)}: y holds one class index per sample, a 1-D array (y.reshape(-1))`,
    );
  }
  const n = x.shape[0];
  if (n === 0) refuseArray(x.where, `no samples ('shape' is ${pyShape(x.shape)})`);
  if (y.shape[0] !== n) {
    refuse(
      s.pair ? y.where.file : s.name,
      undefined,
      `x has ${n} samples, y has ${y.shape[0]}${s.pair ? ` (x: ${x.where.file})` : ''}`,
    );
  }
  const sampleShape = x.shape.length === 1 ? [1] : x.shape.slice(1);
  const featureSize = sampleShape.reduce((a, d) => a * d, 1);
  if (featureSize === 0) refuseArray(x.where, `samples of no values ('shape' is ${pyShape(x.shape)})`);
  return { sampleShape, featureSize };
}

/** Every label of `y`, each a class index: a whole number ≥ 0, below `classes` when it is given, and below 256. */
function readLabels(y: NpyArray, classes: number | undefined): { labels: Uint8Array; max: number } {
  const labels = new Uint8Array(y.shape[0]);
  let max = 0;
  forEachChunk(y, (values, first) => {
    values.forEach((v, j) => {
      const at = `y[${first + j}] is ${v}`;
      if (!Number.isInteger(v) || v < 0)
        refuseArray(y.where, `${at}: a label is a class index, a whole number ≥ 0`);
      if (classes !== undefined && v >= classes) {
        refuseArray(y.where, `${at}, outside classes: ${classes} (labels 0 … ${classes - 1})`);
      }
      if (v > 255) refuseArray(y.where, `${at}: labels are stored as bytes, at most 256 classes`);
      labels[first + j] = v;
      max = Math.max(max, v);
    });
  });
  return { labels, max };
}

function read(spec: NpyDataSpec, jobDir: string): NpyData {
  const sources: NpySource[] = spec.path !== undefined ? [spec.path] : [spec.train ?? '', spec.test ?? ''];
  const opened: { close(): void }[] = [];
  try {
    const arrays = sources.map((s) => openSource(spec, s, jobDir, opened));
    const shapes = arrays.map(checkShapes);
    const { sampleShape, featureSize } = shapes[0];
    shapes.slice(1).forEach((s, i) => {
      if (pyShape(s.sampleShape) !== pyShape(sampleShape)) {
        refuseArray(
          arrays[i + 1].x.where,
          `the samples are ${pyShape(s.sampleShape)}, the training set's ${pyShape(sampleShape)}`,
        );
      }
    });
    const labels = arrays.map((a) => readLabels(a.y, spec.classes));
    const max = Math.max(...labels.map((l) => l.max));
    if (spec.classes === undefined && max < 1) {
      refuseArray(arrays[0].y.where, `every label is 0: a classifier needs at least 2 classes`);
    }
    const classes = spec.classes ?? max + 1;
    const sets = arrays.map((a, i) => new NpySet(a.x, featureSize, classes, labels[i].labels));
    const { train, test } =
      sets.length === 1 ? splitByFraction(spec, arrays[0].name, sets[0]) : { train: sets[0], test: sets[1] };
    return { train, test, sampleShape };
  } catch (err) {
    for (const f of opened) f.close();
    throw err;
  }
}

/**
 * The splits a `format: npy` data section describes, paths relative to `jobDir`. Read once per process for the
 * same spec and unchanged files (the launcher's check and the job stages of one job share it); the files stay
 * open for the batches to be read from them.
 */
export function readNpyData(spec: NpyDataSpec, jobDir: string): NpyData {
  const files = [spec.path, spec.train, spec.test]
    .filter((s): s is NpySource => s !== undefined)
    .flatMap((s) => (typeof s === 'string' ? [s] : [s.x, s.y]));
  return once.get(spec, jobDir, files);
}

const once = new ReadOnce(read);
