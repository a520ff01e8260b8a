/**
 * Data sets of the user's own (CSV, JSON Lines): what is read, how it is split, and every kind of bad data refused
 * with the file and the line. Fixtures are generated here.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataSpec } from '../../src/config/schema.ts';
import { datasetInfo } from '../../src/data/dataset-info.ts';
import { readFileData } from '../../src/data/file-data.ts';
import { refusal } from './refusal.ts';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kd-file-data-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  writeFileSync(join(dir, name), text);
  return name;
}

const spec = (over: Record<string, unknown>) => DataSpec.parse({ format: 'csv', label: 'y', ...over });
const read = (over: Record<string, unknown>) => {
  const s = spec(over);
  if (s.dataset !== 'file') throw new Error('not a file spec');
  return readFileData(s, dir);
};

describe('CSV', () => {
  it('reads named features and class names; one file is split by test_fraction with a seed', () => {
    const rows = Array.from({ length: 50 }, (_, i) => `${i},${i * 0.5},"${i % 3 === 0 ? 'cat' : 'dog'}"`);
    const path = file('pets.csv', `id,weight,y\n${rows.join('\n')}\n`);
    const data = read({ path, features: ['weight'], test_fraction: 0.2, split_seed: 3 });
    expect(data.train.length).toBe(40);
    expect(data.test.length).toBe(10);
    expect(data.featureNames).toEqual(['weight']);
    expect(data.classNames).toEqual(['cat', 'dog']);
    // Every row lands in exactly one split, with its own label.
    const all = [...data.train.inputs, ...data.test.inputs].sort((a, b) => a - b);
    expect(all).toEqual(Array.from({ length: 50 }, (_, i) => i * 0.5));
    data.train.inputs.forEach((w, i) => {
      expect(data.train.labels[i]).toBe((w * 2) % 3 === 0 ? 0 : 1);
    });
    // The same seed splits the same way; another seed otherwise.
    expect(read({ path, features: ['weight'], test_fraction: 0.2, split_seed: 3 }).test.inputs).toEqual(
      data.test.inputs,
    );
    expect(read({ path, features: ['weight'], test_fraction: 0.2, split_seed: 4 }).test.inputs).not.toEqual(
      data.test.inputs,
    );
  });

  it('takes every other column as a feature, class indices as given, and the splits as files', () => {
    const train = file('train.csv', 'a,b,y\n1,2,0\n3,4,2\n5,6,1\n');
    const test = file('test.csv', 'a,b,y\n7,8,2\n');
    const data = read({ train, test });
    expect(data.featureNames).toEqual(['a', 'b']);
    expect(data.classNames).toEqual(['0', '1', '2']);
    expect(Array.from(data.train.inputs)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(Array.from(data.train.labels)).toEqual([0, 2, 1]);
    expect(Array.from(data.test.labels)).toEqual([2]);
    expect(datasetInfo(spec({ train, test }), dir)).toEqual({
      features: 2,
      sampleShape: [2],
      classes: 3,
      trainSize: 3,
      testSize: 1,
    });
  });

  it('refuses bad data naming the file and the line', async () => {
    const at = (name: string, line: number) => `${join(dir, name)}:${line}: `;
    file('ragged.csv', 'a,b,y\n1,2,x\n3,x2\n');
    expect(await refusal(() => read({ train: 'ragged.csv', test: 'ragged.csv' }))).toBe(
      `${at('ragged.csv', 3)}the row has 2 values, the header 3`,
    );
    file('text.csv', 'a,b,y\n1,2,x\n\n3,four,z\n');
    expect(await refusal(() => read({ path: 'text.csv' }))).toBe(
      `${at('text.csv', 4)}feature 'b' is "four", not a finite number`,
    );
    file('classes.csv', 'a,y\n1,cat\n2,dog\n3,cow\n');
    expect(await refusal(() => read({ path: 'classes.csv', classes: ['cat', 'dog'] }))).toBe(
      `${at('classes.csv', 4)}label 'cow' is not one of the classes (cat, dog)`,
    );
    expect(await refusal(() => read({ path: 'classes.csv', label: 'kind' }))).toBe(
      `${at('classes.csv', 1)}no label column 'kind' (columns: a, y)`,
    );
    expect(await refusal(() => read({ path: 'classes.csv', features: ['a', 'b'] }))).toBe(
      `${at('classes.csv', 1)}no feature column 'b' (columns: a, y)`,
    );
    file('quote.csv', 'a,y\n1,cat\n"2,dog\n');
    expect(await refusal(() => read({ path: 'quote.csv' }))).toMatch(
      /quote\.csv:3: not readable as CSV: Quote Not Closed/,
    );
    file('one.csv', 'a,y\n1,cat\n2,cat\n');
    expect(await refusal(() => read({ path: 'one.csv' }))).toBe(
      `${join(dir, 'one.csv')}: every sample has label 'cat': a classifier needs at least 2 classes`,
    );
    file('empty.csv', '');
    expect(await refusal(() => read({ path: 'empty.csv' }))).toMatch(/empty\.csv: the file is empty/);
    expect(await refusal(() => read({ path: 'nowhere.csv' }))).toBe(
      `${join(dir, 'nowhere.csv')}: no such file`,
    );
  });
});

describe('JSON Lines', () => {
  it('reads objects whose features may be arrays (flattened), labels as names', () => {
    const lines = [
      { pixels: [0, 1, 0], bias: 1, y: 'b' },
      { pixels: [1, 1, 1], bias: 0, y: 'a' },
      { pixels: [0, 0, 1], bias: 2, y: 'b' },
      { pixels: [1, 0, 0], bias: 3, y: 'a' },
    ];
    const path = file('set.jsonl', `${lines.map((l) => JSON.stringify(l)).join('\n')}\n`);
    const data = read({ format: 'jsonl', path, test_fraction: 0.25 });
    expect(data.featureNames).toEqual(['pixels[0]', 'pixels[1]', 'pixels[2]', 'bias']);
    expect(data.classNames).toEqual(['a', 'b']);
    expect(data.train.featureSize).toBe(4);
    expect(data.train.length + data.test.length).toBe(4);
  });

  it('refuses bad records naming the file and the line', async () => {
    const at = (name: string, line: number) => `${join(dir, name)}:${line}: `;
    file('bad.jsonl', '{"x": 1, "y": 0}\n{"x": 2, "y": 1\n');
    expect(await refusal(() => read({ format: 'jsonl', path: 'bad.jsonl' }))).toMatch(
      new RegExp(`^${at('bad.jsonl', 2).replace(/[.]/g, '\\.')}not JSON: `),
    );
    file('array.jsonl', '{"x": 1, "y": 0}\n[1, 2]\n');
    expect(await refusal(() => read({ format: 'jsonl', path: 'array.jsonl' }))).toBe(
      `${at('array.jsonl', 2)}each line must be one JSON object ({"feature": …, "label": …})`,
    );
    file('width.jsonl', '{"x": [1, 2], "y": 0}\n{"x": [1], "y": 1}\n{"x": [3, 4], "y": 1}\n');
    expect(await refusal(() => read({ format: 'jsonl', path: 'width.jsonl' }))).toBe(
      `${at('width.jsonl', 2)}feature 'x' has 1 values, the first record 2`,
    );
    file('missing.jsonl', '{"x": 1, "y": 0}\n{"y": 1}\n{"x": 3, "y": 1}\n');
    expect(await refusal(() => read({ format: 'jsonl', path: 'missing.jsonl' }))).toBe(
      `${at('missing.jsonl', 2)}no 'x' in this record`,
    );
  });
});

describe('the data section', () => {
  it('names what is missing or wrong in a format: section', () => {
    expect(() => DataSpec.parse({ format: 'csv', label: 'y' })).toThrow(/give path/);
    expect(() => DataSpec.parse({ format: 'xml', path: 'a', label: 'y' })).toThrow(
      /format is csv, jsonl, images or npy/,
    );
    expect(() => DataSpec.parse({ format: 'csv', path: 'a', train: 'b', label: 'y' })).toThrow(/not both/);
    expect(() => DataSpec.parse({ format: 'csv', path: 'a', label: 'y', features: ['y'] })).toThrow(
      /the label 'y' is not a feature/,
    );
    expect(() => DataSpec.parse({ dataset: 'imagenet' })).toThrow(/give dataset: mnist \| seqcls, or format/);
  });
});
