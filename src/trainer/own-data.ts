/**
 * prepare()'s data as objects of the user's own instead of a job file's data section: a `Dataset` (`{length,
 * get(i)}`), a finite tf.data.Dataset, or `{dataset | train + test, test_fraction, split_seed, shuffle, drop_last}`
 * with those as its sources — the data section's source keys and their meaning (one set split by a seeded
 * `test_fraction`, or both splits), objects in place of paths. Every rank reads its own objects, which must hold the
 * same samples in the same order, as Accelerate's dataloaders do; the ranks compare their sets before the first
 * step. The sets are checked against the model here, as the launcher checks a job file's data before any worker
 * starts.
 */
import type * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { sourceFields } from '../config/data-sources.ts';
import { ConfigError } from '../config/errors.ts';
import type { ModelSpec } from '../config/schema.ts';
import {
  type Dataset,
  isDataset,
  isTfDataset,
  type OwnSet,
  readDataset,
  readTfDataset,
  valuesOf,
} from '../data/dataset.ts';
import type { LabeledSet } from '../data/labeled-set.ts';
import type { LoadedData } from '../data/load.ts';
import { refuse } from '../data/refuse.ts';
import { splitByFraction } from '../data/split.ts';
import { modelInputShape, modelOutputSize } from '../models/shapes.ts';
import type { WorkerContext } from './context.ts';

/** One set of the user's own. */
export type OwnSource = Dataset | tf.data.Dataset<tf.TensorContainer>;

/** `data:` as objects: a set split by `test_fraction`, or the keys with the set(s) in place of paths. */
export type OwnData =
  | OwnSource
  | {
      readonly dataset?: OwnSource;
      readonly train?: OwnSource;
      readonly test?: OwnSource;
      readonly test_fraction?: number;
      readonly split_seed?: number;
      readonly shuffle?: boolean;
      readonly drop_last?: boolean;
    };

/**
 * The schema asks a training job for a data section, which objects are not: this one holds the place while the
 * other keys are validated, and is dropped after.
 */
export const STAND_IN = { dataset: 'mnist' } as const;

const isSource = (v: unknown): v is OwnSource => isDataset(v) || isTfDataset(v);

const source = z.custom<OwnSource>(isSource, 'give a Dataset ({length, get(i)}) or a tf.data.Dataset');

const OwnDataSpec = z.strictObject({
  dataset: source.optional(),
  train: source.optional(),
  test: source.optional(),
  test_fraction: sourceFields.test_fraction,
  split_seed: sourceFields.split_seed,
  shuffle: sourceFields.shuffle,
  drop_last: sourceFields.drop_last,
});

/** Whether `data` is objects of the user's own (else it is a job file's data section). */
export function isOwnData(data: unknown): data is OwnData {
  if (isSource(data)) return true;
  if (typeof data !== 'object' || data === null) return false;
  const keys = data as Record<string, unknown>;
  return [keys['dataset'], keys['train'], keys['test']].some(isSource);
}

const where = (path: string) => `prepare(): ${path}`;

/** The sets `data` gives, checked against `model` and against the other ranks' (collective). */
export async function readOwnData(
  ctx: WorkerContext,
  data: OwnData,
  model: ModelSpec | undefined,
): Promise<LoadedData> {
  if (!model) throw new Error('a training job needs a model');
  const parsed = OwnDataSpec.safeParse(isSource(data) ? { dataset: data } : data);
  if (!parsed.success) {
    throw new ConfigError(
      'prepare()',
      parsed.error.issues.map((i) => ({
        path: ['data', ...i.path.map(String)].join('.'),
        line: undefined,
        message: i.message,
      })),
    );
  }
  const spec = parsed.data;
  const classes = modelOutputSize(model);
  const read = (ds: OwnSource, path: string): Promise<OwnSet> | OwnSet => {
    if (!isDataset(ds)) return readTfDataset(ds, where(path), classes);
    if (ds.numClasses !== undefined && ds.numClasses !== classes) {
      refuse(where(path), undefined, `numClasses is ${ds.numClasses} but the model has ${classes} outputs`);
    }
    return readDataset(ds, where(path), classes);
  };

  let sets: { train: LabeledSet; test: LabeledSet };
  let first: OwnSet & { path: string };
  if (spec.dataset !== undefined) {
    if (spec.train !== undefined || spec.test !== undefined) {
      refuse(where('data.dataset'), undefined, 'give dataset, or train and test, not both');
    }
    first = { ...(await read(spec.dataset, 'data')), path: 'data' };
    sets = splitByFraction(spec, where('data'), first.set);
  } else if (spec.train !== undefined && spec.test !== undefined) {
    first = { ...(await read(spec.train, 'data.train')), path: 'data.train' };
    const test = await read(spec.test, 'data.test');
    if (test.set.featureSize !== first.set.featureSize) {
      refuse(
        where('data.test'),
        undefined,
        `its samples have ${valuesOf(test.sampleShape)} values, data.train's ${valuesOf(first.sampleShape)}`,
      );
    }
    sets = { train: first.set, test: test.set };
  } else {
    refuse(
      where(spec.train === undefined ? 'data.train' : 'data.test'),
      undefined,
      'give dataset (one set, split by test_fraction), or both train and test',
    );
  }

  const takes = modelInputShape(model);
  if (takes.reduce((a, d) => a * d, 1) !== first.set.featureSize) {
    refuse(
      where('model'),
      undefined,
      `the model takes ${valuesOf(takes)} values per sample but ${first.path}'s samples have ${valuesOf(first.sampleShape)}`,
    );
  }
  await agree(ctx, sets.train, sets.test);
  return { ...sets, shuffle: spec.shuffle, drop_last: spec.drop_last };
}

/**
 * A set's length and a 24-bit hash of its length, sample size and labels, exact in fp32 (a length beyond 2^24 is
 * told apart by the hash).
 */
function fingerprint(set: LabeledSet): [number, number] {
  // FNV-1a, a value per step, then its top 24 bits.
  let h = 0x811c9dc5;
  const mix = (v: number) => {
    h = Math.imul(h ^ v, 0x01000193);
  };
  mix(set.length);
  mix(set.featureSize);
  for (const label of set.labels) mix(label);
  return [set.length, h >>> 8];
}

/**
 * Refuses sets that differ between the ranks (in length, sample size or labels): each rank built its own, and shares
 * the sampler draws from different sets neither cover one set nor keep apart. One all-reduce of maxima over the
 * values and their negations gives every rank the maximum and the minimum.
 */
async function agree(ctx: WorkerContext, train: LabeledSet, test: LabeledSet): Promise<void> {
  const mine = [...fingerprint(train), ...fingerprint(test)];
  const r = await ctx.pg.allReduce(Float32Array.from([...mine, ...mine.map((v) => -v)]), { op: 'max' });
  const range = (k: number) => ({ max: r[k], min: -r[k + mine.length] });
  const splits = [
    { name: 'training', length: range(0), hash: range(1) },
    { name: 'test', length: range(2), hash: range(3) },
  ];
  for (const s of splits) {
    if (s.length.max !== s.length.min || s.hash.max !== s.hash.min) {
      const what =
        s.length.max !== s.length.min
          ? `the ranks hold ${s.length.min} to ${s.length.max} ${s.name} samples`
          : `the ranks' ${s.name} samples differ (their labels or sizes)`;
      refuse(where('data'), undefined, `${what}: every rank must build the same samples in the same order`);
    }
  }
}
