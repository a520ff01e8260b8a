/**
 * An image folder of the user's own: one sub-folder per class holding PNG and JPEG files, decoded by pngjs and
 * jpeg-js (pure JavaScript, nothing to compile), resized bilinearly to one size, reduced to RGB or grey, scaled to
 * [0, 1] and optionally normalised per channel. Samples are NHWC (height × width × channels). Every problem (an
 * empty class folder, a file that is not an image, an undecodable image) is a ConfigError naming the file or the
 * folder, so that the launcher refuses it before any worker starts.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join, resolve } from 'node:path';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import type { ImageDataSpec } from '../config/image-data.ts';
import { MemorySet } from './labeled-set.ts';
import { ReadOnce } from './read-once.ts';
import { refuse } from './refuse.ts';
import { splitByFraction } from './split.ts';

/** A decoded image: RGBA bytes, row after row. */
interface Rgba {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array;
}

export interface ImageFolder {
  readonly train: MemorySet;
  readonly test: MemorySet;
  /** One sample: [height, width, channels]. */
  readonly sampleShape: readonly [number, number, number];
  readonly classNames: readonly string[];
}

const EXTENSIONS = new Set(['.png', '.jpg', '.jpeg']);

function decode(file: string): Rgba {
  const bytes = readFileSync(file);
  const ext = extname(file).toLowerCase();
  try {
    if (ext === '.png') {
      const png = PNG.sync.read(bytes);
      return { width: png.width, height: png.height, data: png.data };
    }
    const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true });
    return { width: img.width, height: img.height, data: img.data };
  } catch (err) {
    refuse(
      file,
      undefined,
      `not a readable ${ext === '.png' ? 'PNG' : 'JPEG'} image: ${(err as Error).message}`,
    );
  }
}

/** `img` resized to height × width, bilinearly (pixel centres aligned), still RGBA, as floats. */
function resized(img: Rgba, height: number, width: number): Float32Array {
  const out = new Float32Array(height * width * 4);
  const sy = img.height / height;
  const sx = img.width / width;
  for (let y = 0; y < height; y++) {
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), img.height - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, img.height - 1);
    const wy = fy - y0;
    for (let x = 0; x < width; x++) {
      const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), img.width - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, img.width - 1);
      const wx = fx - x0;
      for (let c = 0; c < 4; c++) {
        const p = (yy: number, xx: number) => img.data[(yy * img.width + xx) * 4 + c];
        const top = p(y0, x0) * (1 - wx) + p(y0, x1) * wx;
        const bottom = p(y1, x0) * (1 - wx) + p(y1, x1) * wx;
        out[(y * width + x) * 4 + c] = top * (1 - wy) + bottom * wy;
      }
    }
  }
  return out;
}

/** One image as a sample: resized, RGB or grey (BT.601 luma), scaled to [0, 1], normalised. */
function sample(
  spec: ImageDataSpec,
  img: Rgba,
  height: number,
  width: number,
  out: Float32Array,
  at: number,
): void {
  const same = img.height === height && img.width === width;
  const rgba = same ? img.data : resized(img, height, width);
  const { channels, mean, std } = spec;
  for (let i = 0; i < height * width; i++) {
    const [r, g, b] = [rgba[i * 4], rgba[i * 4 + 1], rgba[i * 4 + 2]];
    const values = channels === 1 ? [0.299 * r + 0.587 * g + 0.114 * b] : [r, g, b];
    values.forEach((v, c) => {
      const unit = v / 255;
      out[at + i * channels + c] = mean && std ? (unit - mean[c]) / std[c] : unit;
    });
  }
}

/** The class folders of `root`, in index order: `classes` as given (each must exist), or every folder sorted. */
function classFolders(spec: ImageDataSpec, root: string): string[] {
  let entries: string[];
  try {
    entries = readdirSync(root).filter((f) => !f.startsWith('.'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    refuse(root, undefined, code === 'ENOENT' ? 'no such folder' : `cannot read it (${code})`);
  }
  // A dangling link (or an entry gone since the listing) is no folder either.
  const folders = entries
    .filter((f) => statSync(join(root, f), { throwIfNoEntry: false })?.isDirectory() === true)
    .sort();
  const names = spec.classes ?? folders;
  for (const f of folders) {
    if (!names.includes(f))
      refuse(join(root, f), undefined, `a folder of no class (classes: ${names.join(', ')})`);
  }
  if (names.length < 2)
    refuse(root, undefined, `${names.length} class folder(s): a classifier needs at least 2`);
  return names;
}

/** Every image of `root`, by class, in file-name order; an empty or missing class folder is refused. */
function imageFiles(
  root: string,
  classes: readonly string[],
  required: boolean,
): { file: string; label: number }[] {
  return classes.flatMap((name, label) => {
    const dir = join(root, name);
    let files: string[];
    try {
      files = readdirSync(dir)
        .filter((f) => !f.startsWith('.'))
        .sort();
    } catch {
      if (required) refuse(dir, undefined, `class '${name}' has no folder`);
      return [];
    }
    for (const f of files) {
      if (!EXTENSIONS.has(extname(f).toLowerCase())) {
        refuse(join(dir, f), undefined, 'not a PNG or JPEG file (kd-launch reads .png, .jpg, .jpeg)');
      }
    }
    if (files.length === 0 && required) refuse(dir, undefined, `class '${name}' has no images`);
    return files.map((f) => ({ file: join(dir, f), label }));
  });
}

function toSet(
  spec: ImageDataSpec,
  items: readonly { file: string; label: number }[],
  size: readonly [number, number],
  classes: number,
): MemorySet {
  const [height, width] = size;
  const featureSize = height * width * spec.channels;
  const inputs = new Float32Array(items.length * featureSize);
  const labels = new Uint8Array(items.length);
  items.forEach(({ file, label }, i) => {
    sample(spec, decode(file), height, width, inputs, i * featureSize);
    labels[i] = label;
  });
  return new MemorySet({ featureSize, numClasses: classes, inputs, labels });
}

function read(spec: ImageDataSpec, jobDir: string): ImageFolder {
  const roots = (spec.path !== undefined ? [spec.path] : [spec.train ?? '', spec.test ?? '']).map((r) =>
    resolve(jobDir, r),
  );
  const classes = classFolders(spec, roots[0]);
  const lists = roots.map((root, i) => {
    if (i > 0) classFolders({ ...spec, classes }, root);
    return imageFiles(root, classes, i === 0);
  });
  if (lists[1]?.length === 0) refuse(roots[1], undefined, 'the test folder has no images');
  const first = decode(lists[0][0].file);
  const size: [number, number] = spec.size ?? [first.height, first.width];
  const sets = lists.map((items) => toSet(spec, items, size, classes.length));
  const { train, test } =
    sets.length === 1 ? splitByFraction(spec, roots[0], sets[0]) : { train: sets[0], test: sets[1] };
  return { train, test, sampleShape: [size[0], size[1], spec.channels], classNames: classes };
}

/**
 * The splits a `format: images` section describes, roots relative to `jobDir`. Read once per process for the same
 * spec (the launcher's check and the job stages of one job share it).
 */
export function readImageFolder(spec: ImageDataSpec, jobDir: string): ImageFolder {
  return once.get(spec, jobDir, []);
}

const once = new ReadOnce(read);
