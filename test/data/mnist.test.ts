import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { gatherBatch } from '../../src/data/labeled-set.ts';
import { loadMnist, MNIST_CLASSES, MNIST_PIXELS, readDigits } from '../../src/data/mnist.ts';

describe('mnist split', () => {
  const { train, test, perDigit } = loadMnist();

  it('is the project split: 7,996 train / 2,004 test', () => {
    expect(train.length).toBe(7996);
    expect(test.length).toBe(2004);
    expect(train.inputs.length).toBe(7996 * MNIST_PIXELS);
    expect(test.inputs.length).toBe(2004 * MNIST_PIXELS);
  });

  it('splits each digit at floor(80%) of its images, train first', () => {
    for (const { train: nTrain, test: nTest } of perDigit) {
      expect(nTrain).toBe(Math.floor((nTrain + nTest) * 0.8));
    }
    // Digits lie back to back in each split: the label changes exactly at the per-digit boundaries.
    let at = 0;
    for (const { digit, train: nTrain } of perDigit) {
      expect(train.labels[at]).toBe(digit);
      expect(train.labels[at + nTrain - 1]).toBe(digit);
      at += nTrain;
    }
    at = 0;
    for (const { digit, test: nTest } of perDigit) {
      expect(test.labels[at]).toBe(digit);
      expect(test.labels[at + nTest - 1]).toBe(digit);
      at += nTest;
    }
    expect(new Set(train.labels).size).toBe(MNIST_CLASSES);
  });

  it('keeps pixels in [0, 1] and caches the parse', () => {
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of test.inputs) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    expect(lo).toBeGreaterThanOrEqual(0);
    expect(hi).toBeLessThanOrEqual(1);
    expect(loadMnist().train).toBe(train);
  });

  it('gathers a batch by indices', () => {
    const b = gatherBatch(test, [5, 2003], 0, 2);
    expect(b.labels).toEqual(new Int32Array([test.labels[5], test.labels[2003]]));
    expect(b.inputs.subarray(MNIST_PIXELS)).toEqual(test.inputs.subarray(2003 * MNIST_PIXELS));
    expect(() => gatherBatch(test, [1, 2], 1, 2)).toThrow(RangeError);
  });
});

describe('mnist cache', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kd-mnist-cache-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('parses once, then reads the same values from the cache file, which only the user can read', () => {
    const parsed = readDigits(dir);
    expect(parsed.from).toBe('json');
    const [file] = readdirSync(dir);
    expect(file).toMatch(/^mnist-.*\.bin$/);
    expect(statSync(join(dir, file)).mode & 0o777).toBe(0o600);
    const read = readDigits(dir);
    expect(read.from).toBe('cache');
    // Compared as bytes: a deep equality over 7.8 M numbers takes vitest most of a minute.
    const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
    expect(read.digits.map((d) => d.length)).toEqual(parsed.digits.map((d) => d.length));
    for (const [d, digit] of read.digits.entries())
      expect(bytes(digit).equals(bytes(parsed.digits[d]))).toBe(true);
    // The split the jobs see is built from these digits.
    const { train, perDigit } = loadMnist();
    const zeros = perDigit[0].train * MNIST_PIXELS;
    expect(bytes(train.inputs.subarray(0, zeros)).equals(bytes(read.digits[0].subarray(0, zeros)))).toBe(
      true,
    );
  });

  it('parses again over a truncated or foreign cache file and replaces it', () => {
    const [file] = readdirSync(dir);
    const whole = readFileSync(join(dir, file));
    for (const bad of [whole.subarray(0, whole.length - 4), Buffer.from('not a cache'), Buffer.alloc(0)]) {
      writeFileSync(join(dir, file), bad);
      expect(readDigits(dir).from).toBe('json');
      expect(readFileSync(join(dir, file)).equals(whole)).toBe(true);
    }
  });

  it('works without a writable cache directory', () => {
    const notADir = join(dir, 'plain-file');
    writeFileSync(notADir, '');
    const r = readDigits(notADir);
    expect(r.from).toBe('json');
    expect(r.digits.reduce((a, d) => a + d.length, 0)).toBe(10_000 * MNIST_PIXELS);
  });
});
