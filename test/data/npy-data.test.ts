/**
 * NumPy data of the user's own (`format: npy`): every dtype and header version read, .npz stored (read in place
 * from the file, per batch) and deflated (inflated), ZIP64, splits as index views, and every kind of bad data
 * refused with the file, the member and the field. Fixtures are written by test/fixtures/npy.ts.
 */
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataSpec } from '../../src/config/schema.ts';
import { datasetInfo } from '../../src/data/dataset-info.ts';
import { gatherBatch, IndexView, type LabeledSet } from '../../src/data/labeled-set.ts';
import { readNpyData } from '../../src/data/npy-data.ts';
import { encode, npy, npz, zip } from '../fixtures/npy.ts';
import { refusal } from './refusal.ts';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kd-npy-data-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, bytes: Uint8Array): string {
  writeFileSync(join(dir, name), bytes);
  return name;
}

const spec = (over: Record<string, unknown>) => DataSpec.parse({ format: 'npy', ...over });
const read = (over: Record<string, unknown>) => {
  const s = spec(over);
  if (s.dataset !== 'npy') throw new Error('not an npy spec');
  return readNpyData(s, dir);
};

/** Every sample's inputs, in order. */
function inputsOf(set: LabeledSet): number[] {
  return Array.from(
    set.readInputs(
      Int32Array.from({ length: set.length }, (_, i) => i),
      0,
      set.length,
    ),
  );
}

/** x: n samples of 2 × 3 values, sample i's values 10·i + 0 … 5; y: i mod 3. */
function xy(n: number) {
  const x = Array.from({ length: n * 6 }, (_, k) => 10 * Math.floor(k / 6) + (k % 6));
  const y = Array.from({ length: n }, (_, i) => i % 3);
  return { x, y };
}

describe('.npy arrays', () => {
  it('reads x of every supported dtype as fp32, y of every integer dtype and of floats holding integers', () => {
    const values = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    const labels = [0, 1, 2, 1];
    const xs: [string, number[]][] = [
      ['<f4', values.map((v) => v / 4)],
      ['<f8', values.map((v) => v / 8 - 0.5)],
      ['|i1', values.map((v) => v - 6)],
      ['<i1', values.map((v) => 6 - v)],
      ['|u1', values.map((v) => 255 - v)],
      ['<i2', values.map((v) => (v - 6) * 1000)],
      ['<u2', values.map((v) => v * 5000)],
      ['<i4', values.map((v) => (v - 6) * 100_000)],
      ['<u4', values.map((v) => v * 300_000_000)],
      ['<i8', values.map((v) => (v - 6) * 2 ** 40)],
      ['<u8', values.map((v) => v * 2 ** 40)],
    ];
    const ys = ['|i1', '|u1', '<i2', '<u2', '<i4', '<u4', '<i8', '<u8', '<f4', '<f8'];
    xs.forEach(([descr, v], i) => {
      const yDescr = ys[i % ys.length];
      file(`x-${i}.npy`, npy({ descr, shape: [4, 3], values: v }));
      file(`y-${i}.npy`, npy({ descr: yDescr, shape: [4], values: labels }));
      const data = read({
        train: { x: `x-${i}.npy`, y: `y-${i}.npy` },
        test: { x: `x-${i}.npy`, y: `y-${i}.npy` },
      });
      expect(data.sampleShape).toEqual([3]);
      expect(data.train.featureSize).toBe(3);
      expect(data.train.numClasses).toBe(3);
      expect(inputsOf(data.train), descr).toEqual(Array.from(Float32Array.from(v)));
      expect(Array.from(data.train.labels), yDescr).toEqual(labels);
    });
  });

  it('reads format versions 1.0, 2.0 and 3.0, and a 1-D x as samples of one value', () => {
    for (const version of [1, 2, 3] as const) {
      file(`x-v${version}.npy`, npy({ version, shape: [4], values: [1.5, 2.5, 3.5, 4.5] }));
      file(`y-v${version}.npy`, npy({ version, descr: '<i8', shape: [4], values: [0, 1, 0, 1] }));
      const pair = { x: `x-v${version}.npy`, y: `y-v${version}.npy` };
      const data = read({ train: pair, test: pair });
      expect(data.sampleShape).toEqual([1]);
      expect(inputsOf(data.test)).toEqual([1.5, 2.5, 3.5, 4.5]);
    }
  });

  it('reads a batch by any indices, in their order, and refuses an index outside the set', () => {
    const { x, y } = xy(10);
    file('batch-x.npy', npy({ shape: [10, 2, 3], values: x }));
    file('batch-y.npy', npy({ descr: '<i8', shape: [10], values: y }));
    const pair = { x: 'batch-x.npy', y: 'batch-y.npy' };
    const { train } = read({ train: pair, test: pair });
    const order = [7, 8, 9, 2, 3, 0, 5];
    // order[1 … 6): 8, 9 (one read: they follow each other in the file), 2, 3 (another), 0.
    const batch = gatherBatch(train, order, 1, 5);
    expect(Array.from(batch.inputs)).toEqual([8, 9, 2, 3, 0].flatMap((s) => x.slice(s * 6, s * 6 + 6)));
    expect(Array.from(batch.labels)).toEqual([2, 0, 2, 0, 0]);
    expect(() => train.readInputs([9, 10], 0, 2)).toThrow(RangeError);
  });
});

describe('.npz archives', () => {
  const { x, y } = xy(50);
  const arrays = {
    x: npy({ shape: [50, 2, 3], values: x }),
    y: npy({ descr: '<i8', shape: [50], values: y }),
  };

  it('reads a stored (np.savez), a deflated (np.savez_compressed) and a ZIP64 archive alike', () => {
    const stored = file('stored.npz', npz(arrays));
    const deflated = file('deflated.npz', npz(arrays, { method: 'deflated' }));
    const zip64 = file('zip64.npz', npz(arrays, { zip64: true }));
    const zip64Deflated = file('zip64-deflated.npz', npz(arrays, { zip64: true, method: 'deflated' }));
    const both = { train: stored, test: stored };
    const expected = read(both);
    expect(expected.train.length).toBe(50);
    expect(expected.sampleShape).toEqual([2, 3]);
    expect(inputsOf(expected.train)).toEqual(x);
    expect(Array.from(expected.train.labels)).toEqual(y);
    for (const f of [deflated, zip64, zip64Deflated]) {
      const data = read({ train: f, test: f });
      expect(inputsOf(data.train), f).toEqual(x);
      expect(Array.from(data.test.labels), f).toEqual(y);
    }
    expect(datasetInfo(spec(both), dir)).toEqual({
      features: 6,
      sampleShape: [2, 3],
      classes: 3,
      trainSize: 50,
      testSize: 50,
    });
  });

  it('reads a stored member in place: each batch from the file, not from a copy taken when opened', () => {
    const path = file('in-place.npz', npz(arrays));
    const { train } = read({ train: path, test: path });
    expect(Array.from(train.readInputs([4], 0, 1))).toEqual([40, 41, 42, 43, 44, 45]);
    // Sample 4's first value, rewritten in the file after it was opened: the next read sees it.
    const header = arrays.x.length - 50 * 6 * 4;
    const at = 30 + 'x.npy'.length + header + 4 * 6 * 4;
    const fd = openSync(join(dir, path), 'r+');
    writeSync(fd, encode('<f4', [-1]), 0, 4, at);
    closeSync(fd);
    expect(Array.from(train.readInputs([4], 0, 1))).toEqual([-1, 41, 42, 43, 44, 45]);
  });

  it('takes the members x: and y: name, and classes: as given', () => {
    const path = file('named.npz', npz({ images: arrays.x, digits: arrays.y }));
    const data = read({ path, x: 'images', y: 'digits', classes: 5, test_fraction: 0.1 });
    expect(data.train.numClasses).toBe(5);
    expect(data.train.length + data.test.length).toBe(50);
  });

  it('splits one source by test_fraction into index views, every sample in one split, the same for a seed', () => {
    const path = file('split.npz', npz(arrays));
    const data = read({ path, test_fraction: 0.2, split_seed: 3 });
    expect(data.train).toBeInstanceOf(IndexView);
    expect(data.train.length).toBe(40);
    expect(data.test.length).toBe(10);
    const firsts = (set: LabeledSet) => inputsOf(set).filter((_, k) => k % 6 === 0);
    const all = [...firsts(data.train), ...firsts(data.test)].sort((a, b) => a - b);
    expect(all).toEqual(Array.from({ length: 50 }, (_, i) => 10 * i));
    // Each sample keeps its own label; each split keeps the file's order.
    firsts(data.test).forEach((v, i) => {
      expect(data.test.labels[i]).toBe((v / 10) % 3);
    });
    expect(firsts(data.train)).toEqual([...firsts(data.train)].sort((a, b) => a - b));
    expect(firsts(read({ path, test_fraction: 0.2, split_seed: 3 }).test)).toEqual(firsts(data.test));
    expect(firsts(read({ path, test_fraction: 0.2, split_seed: 4 }).test)).not.toEqual(firsts(data.test));
    // A split of a split is a view of the file too.
    const sub = data.train.subset([39, 0]);
    expect(inputsOf(sub)).toEqual([
      ...inputsOf(data.train).slice(39 * 6),
      ...inputsOf(data.train).slice(0, 6),
    ]);
  });
});

describe('bad data is refused, naming the file, the member and the field', () => {
  const at = (name: string) => `${join(dir, name)}: `;
  const { x, y } = xy(4);
  const goodX = npy({ shape: [4, 2, 3], values: x });
  const goodY = npy({ descr: '<i8', shape: [4], values: y });

  it('arrays that do not fit together', async () => {
    file(
      'long.npz',
      npz({
        x: npy({ shape: [100, 1], values: new Array(100).fill(0) }),
        y: npy({ descr: '<i8', shape: [99], values: y.concat(new Array(95).fill(1)) }),
      }),
    );
    expect(await refusal(() => read({ path: 'long.npz' }))).toBe(
      `${at('long.npz')}x has 100 samples, y has 99`,
    );
    file('pair-x.npy', goodX);
    file('pair-y3.npy', npy({ descr: '<i8', shape: [3], values: [0, 1, 2] }));
    expect(await refusal(() => read({ path: { x: 'pair-x.npy', y: 'pair-y3.npy' } }))).toBe(
      `${at('pair-y3.npy')}x has 4 samples, y has 3 (x: ${join(dir, 'pair-x.npy')})`,
    );
    file('y2d.npz', npz({ x: goodX, y: npy({ descr: '<i8', shape: [4, 1], values: y }) }));
    expect(await refusal(() => read({ path: 'y2d.npz' }))).toBe(
      `${at('y2d.npz')}member 'y.npy': 'shape' is (4, 1): y holds one class index per sample, a 1-D array (y.reshape(-1))`,
    );
    file('scalar.npz', npz({ x: npy({ shape: [], values: [1] }), y: goodY }));
    expect(await refusal(() => read({ path: 'scalar.npz' }))).toBe(
      `${at('scalar.npz')}member 'x.npy': 'shape' is (): x needs a first axis, the samples`,
    );
    file('test-shape.npz', npz({ x: npy({ shape: [4, 3, 2], values: x }), y: goodY }));
    file('train-shape.npz', npz({ x: goodX, y: goodY }));
    expect(await refusal(() => read({ train: 'train-shape.npz', test: 'test-shape.npz' }))).toBe(
      `${at('test-shape.npz')}member 'x.npy': the samples are (3, 2), the training set's (2, 3)`,
    );
  });

  it('a missing member, a missing file, a file that is not an archive or not an array', async () => {
    file('no-y.npz', npz({ x: goodX, labels: goodY }));
    expect(await refusal(() => read({ path: 'no-y.npz' }))).toBe(
      `${at('no-y.npz')}no member 'y.npy' (the archive holds x, labels): name the arrays with x: and y:`,
    );
    expect(await refusal(() => read({ path: 'nowhere.npz' }))).toBe(`${at('nowhere.npz')}no such file`);
    file('single.npy', goodX);
    expect(await refusal(() => read({ path: 'single.npy' }))).toBe(
      `${at('single.npy')}a .npy holds one array: give {x: X.npy, y: Y.npy}, or an .npz holding both`,
    );
    file('text.npz', new TextEncoder().encode('x,y\n1,0\n'));
    expect(await refusal(() => read({ path: 'text.npz' }))).toBe(
      `${at('text.npz')}not an .npz (a zip archive): no end of central directory record (or the file was cut short); give an .npz, or {x: X.npy, y: Y.npy}`,
    );
    file('not-npy.npz', zip({ 'x.npy': new TextEncoder().encode('hello'), 'y.npy': goodY }));
    expect(await refusal(() => read({ path: 'not-npy.npz' }))).toBe(
      `${at('not-npy.npz')}member 'x.npy': not a .npy array (it does not start with \\x93NUMPY)`,
    );
  });

  it('dtypes and layouts it does not read', async () => {
    const withX = async (name: string, o: Parameters<typeof npy>[0]) => {
      file(name, npz({ x: npy(o), y: goodY }));
      return refusal(() => read({ path: name }));
    };
    const raw = new Uint8Array(24 * 8);
    expect(await withX('big.npz', { descr: '>f4', shape: [4, 6], values: x })).toBe(
      `${at('big.npz')}member 'x.npy': 'descr' is '>f4' (big-endian): save it little-endian (a.astype('<f4'))`,
    );
    expect(await withX('object.npz', { descr: '|O', shape: [4, 6], raw })).toBe(
      `${at('object.npz')}member 'x.npy': 'descr' is '|O' (Python objects): kd-launch reads float32, float64 and integer arrays (<f4, <f8, <i1 … <i8, <u1 … <u8)`,
    );
    expect(await withX('str.npz', { descr: '<U2', shape: [4, 6], raw })).toMatch(
      /str\.npz: member 'x\.npy': 'descr' is '<U2' \(unicode strings\): kd-launch reads/,
    );
    expect(await withX('half.npz', { descr: '<f2', shape: [4, 6], raw })).toMatch(
      /'descr' is '<f2' \(float16\)/,
    );
    expect(await withX('bool.npz', { descr: '|b1', shape: [4, 6], raw })).toMatch(
      /'descr' is '\|b1' \(booleans\)/,
    );
    expect(
      await withX('record.npz', {
        header: "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (4,), }",
        shape: [4],
        raw,
      }),
    ).toBe(
      `${at('record.npz')}member 'x.npy': 'descr' is a structured dtype: save a plain numeric array (not a record array)`,
    );
    expect(await withX('fortran.npz', { shape: [4, 6], values: x, fortran: true })).toBe(
      `${at('fortran.npz')}member 'x.npy': 'fortran_order' is True: save a C-order array (np.ascontiguousarray(a))`,
    );
    file('big-y.npy', npy({ descr: '>i8', shape: [4], values: y }));
    file('x.npy', goodX);
    expect(await refusal(() => read({ path: { x: 'x.npy', y: 'big-y.npy' } }))).toBe(
      `${at('big-y.npy')}'descr' is '>i8' (big-endian): save it little-endian (a.astype('<i8'))`,
    );
    expect(
      await withX('no-shape.npz', { header: "{'descr': '<f4', 'fortran_order': False}", shape: [], raw }),
    ).toMatch(/no-shape\.npz: member 'x\.npy': the header has no 'shape': \{'descr'/);
    expect(
      await withX('garbled.npz', { header: "{'descr': '<f4', 'fortran_order': Fals", shape: [], raw }),
    ).toMatch(
      /garbled\.npz: member 'x\.npy': the header is not a Python dict literal \(no value at character \d+\)/,
    );
    const v4 = npy({ shape: [4, 6], values: x });
    v4[6] = 4;
    file('v4.npy', v4);
    expect(await refusal(() => read({ path: { x: 'v4.npy', y: 'big-y.npy' } }))).toBe(
      `${at('v4.npy')}.npy format version 4.0: kd-launch reads 1.0, 2.0 and 3.0`,
    );
  });

  it('a truncated file, member or archive', async () => {
    file('cut.npy', goodX.subarray(0, goodX.length - 5));
    file('y.npy', goodY);
    expect(await refusal(() => read({ path: { x: 'cut.npy', y: 'y.npy' } }))).toBe(
      `${at('cut.npy')}truncated: 'shape' (4, 2, 3) of '<f4' needs 96 bytes of data, the file has 91`,
    );
    file('cut-header.npy', goodX.subarray(0, 40));
    expect(await refusal(() => read({ path: { x: 'cut-header.npy', y: 'y.npy' } }))).toBe(
      `${at('cut-header.npy')}truncated: the file ends inside its header`,
    );
    file('short-member.npz', npz({ x: goodX.subarray(0, goodX.length - 8), y: goodY }));
    expect(await refusal(() => read({ path: 'short-member.npz' }))).toBe(
      `${at('short-member.npz')}member 'x.npy': truncated: 'shape' (4, 2, 3) of '<f4' needs 96 bytes of data, the member has 88`,
    );
    const whole = npz({ x: goodX, y: goodY });
    file('cut.npz', whole.subarray(0, whole.length - 30));
    expect(await refusal(() => read({ path: 'cut.npz' }))).toBe(
      `${at('cut.npz')}not an .npz (a zip archive): no end of central directory record (or the file was cut short); give an .npz, or {x: X.npy, y: Y.npy}`,
    );
    // 100 bytes lost from the middle: the directory at the end points past the end of the file.
    const tail = 2 * (46 + 'x.npy'.length) + 22;
    const holed = new Uint8Array(whole.length - 100);
    holed.set(whole.subarray(0, whole.length - tail - 100));
    holed.set(whole.subarray(whole.length - tail), whole.length - tail - 100);
    file('holed.npz', holed);
    expect(await refusal(() => read({ path: 'holed.npz' }))).toBe(
      `${at('holed.npz')}truncated: the zip central directory is past the end of the file`,
    );
    // A deflated member whose CRC-32 in the directory is not its data's.
    const damaged = npz({ x: goodX, y: goodY }, { method: 'deflated' });
    const central = Buffer.from(damaged).indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
    damaged[central + 16] ^= 0xff;
    file('damaged.npz', damaged);
    expect(await refusal(() => read({ path: 'damaged.npz' }))).toBe(
      `${at('damaged.npz')}member 'x.npy': its CRC-32 does not match the archive’s: the file is damaged`,
    );
  });

  it('labels that are not class indices', async () => {
    const withY = async (
      name: string,
      descr: string,
      values: number[],
      over: Record<string, unknown> = {},
    ) => {
      file(name, npz({ x: goodX, y: npy({ descr, shape: [4], values }) }));
      return refusal(() => read({ path: name, ...over }));
    };
    expect(await withY('half-label.npz', '<f8', [0, 1, 2.5, 1])).toBe(
      `${at('half-label.npz')}member 'y.npy': y[2] is 2.5: a label is a class index, a whole number ≥ 0`,
    );
    expect(await withY('nan-label.npz', '<f4', [0, Number.NaN, 1, 1])).toBe(
      `${at('nan-label.npz')}member 'y.npy': y[1] is NaN: a label is a class index, a whole number ≥ 0`,
    );
    expect(await withY('negative.npz', '<i4', [0, 1, -1, 1])).toBe(
      `${at('negative.npz')}member 'y.npy': y[2] is -1: a label is a class index, a whole number ≥ 0`,
    );
    expect(await withY('outside.npz', '<i8', [0, 1, 2, 3], { classes: 3 })).toBe(
      `${at('outside.npz')}member 'y.npy': y[3] is 3, outside classes: 3 (labels 0 … 2)`,
    );
    expect(await withY('wide.npz', '<i2', [0, 1, 300, 1])).toBe(
      `${at('wide.npz')}member 'y.npy': y[2] is 300: labels are stored as bytes, at most 256 classes`,
    );
    expect(await withY('one-class.npz', '<i8', [0, 0, 0, 0])).toBe(
      `${at('one-class.npz')}member 'y.npy': every label is 0: a classifier needs at least 2 classes`,
    );
    expect(await withY('few.npz', '<i8', [0, 1, 0, 1], { test_fraction: 0.01 })).toBe(
      `${at('few.npz')}4 samples cannot be split with test_fraction 0.01`,
    );
  });

  it('names what is missing or wrong in the data section', () => {
    expect(() => DataSpec.parse({ format: 'npy' })).toThrow(
      /give path \(an \.npz, or \{x: X\.npy, y: Y\.npy\}/,
    );
    const pathless = DataSpec.safeParse({ format: 'npy', path: { x: 'a.npy' } });
    expect(pathless.success).toBe(false);
    expect(pathless.error?.issues.map((i) => i.path.join('.'))).toEqual(['path']);
    expect(() => DataSpec.parse({ format: 'npy', path: 'a.npz', x: 'a', y: 'a' })).toThrow(
      /x and y name the same member 'a'/,
    );
    expect(() => DataSpec.parse({ format: 'npy', path: 'a.npz', classes: 1 })).toThrow(/at least 2 classes/);
    expect(() => DataSpec.parse({ format: 'npy', path: 'a.npz', label: 'y' })).toThrow(/label/);
  });
});
