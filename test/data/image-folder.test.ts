/**
 * Image folders of the user's own: PNG and JPEG decoded, resized, reduced to RGB or grey and normalised; classes
 * from the folders; every kind of bad folder refused naming the file or folder. Fixtures are encoded here.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/errors.ts';
import { DataSpec } from '../../src/config/schema.ts';
import { datasetInfo } from '../../src/data/dataset-info.ts';
import { readImageFolder } from '../../src/data/image-folder.ts';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kd-images-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A width × height image of one RGB colour, as PNG or JPEG bytes. */
function solid(format: 'png' | 'jpg', width: number, height: number, rgb: [number, number, number]): Buffer {
  const data = Buffer.alloc(width * height * 4);
  for (let i = 0; i < width * height; i++) data.set([...rgb, 255], i * 4);
  if (format === 'png') {
    const png = new PNG({ width, height });
    data.copy(png.data);
    return PNG.sync.write(png);
  }
  return jpeg.encode({ data, width, height }, 100).data;
}

function folder(root: string, files: Record<string, Buffer | string>): string {
  for (const [name, bytes] of Object.entries(files)) {
    mkdirSync(join(dir, root, name, '..'), { recursive: true });
    writeFileSync(join(dir, root, name), bytes);
  }
  return root;
}

const spec = (over: Record<string, unknown>) => {
  const s = DataSpec.parse({ format: 'images', ...over });
  if (s.dataset !== 'images') throw new Error('not an images spec');
  return s;
};

function refusal(over: Record<string, unknown>): string {
  try {
    readImageFolder(spec(over), dir);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('the folder was accepted');
}

describe('an image folder', () => {
  it('decodes PNG and JPEG into NHWC samples in [0, 1], one class per folder, resized to one size', () => {
    const root = folder('colours', {
      'red/a.png': solid('png', 4, 4, [255, 0, 128]),
      'red/b.PNG': solid('png', 8, 6, [255, 0, 128]),
      'blue/c.jpg': solid('jpg', 4, 4, [0, 0, 255]),
      'blue/d.jpeg': solid('jpg', 4, 4, [0, 0, 255]),
    });
    const data = readImageFolder(spec({ train: root, test: root }), dir);
    expect(data.classNames).toEqual(['blue', 'red']);
    expect(data.sampleShape).toEqual([4, 4, 3]);
    expect(Array.from(data.train.labels)).toEqual([0, 0, 1, 1]);
    const px = (i: number) => Array.from(data.train.inputs.subarray(i * 48, i * 48 + 3));
    // PNG is lossless; the 8×6 one was resized to 4×4, which keeps a solid colour.
    for (const i of [2, 3]) {
      px(i).forEach((v, c) => {
        expect(v).toBeCloseTo([1, 0, 128 / 255][c], 6);
      });
    }
    // JPEG at quality 100 is close to its colour.
    px(0).forEach((v, c) => {
      expect(Math.abs(v - [0, 0, 1][c])).toBeLessThan(0.02);
    });
    expect(datasetInfo(spec({ train: root, test: root }), dir)).toMatchObject({
      features: 48,
      sampleShape: [4, 4, 3],
      classes: 2,
    });
  });

  it('reduces to grey (BT.601 luma), normalises per channel, follows the given class order and splits by fraction', () => {
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 10; i++) {
      files[`light/${i}.png`] = solid('png', 3, 3, [200, 200, 200]);
      files[`dark/${i}.png`] = solid('png', 3, 3, [30, 60, 90]);
    }
    const root = folder('greys', files);
    const data = readImageFolder(
      spec({
        path: root,
        channels: 1,
        mean: [0.5],
        std: [0.25],
        classes: ['light', 'dark'],
        test_fraction: 0.3,
      }),
      dir,
    );
    expect(data.classNames).toEqual(['light', 'dark']);
    expect(data.train.length).toBe(14);
    expect(data.test.length).toBe(6);
    const luma = (0.299 * 30 + 0.587 * 60 + 0.114 * 90) / 255;
    for (const set of [data.train, data.test]) {
      set.labels.forEach((label, i) => {
        const v = set.inputs[i * 9];
        expect(v).toBeCloseTo(((label === 0 ? 200 / 255 : luma) - 0.5) / 0.25, 5);
      });
    }
  });

  it('refuses bad folders naming the file or the folder', () => {
    const ok = solid('png', 2, 2, [1, 2, 3]);
    folder('empty-class', { 'a/x.png': ok, 'b/.keep': '' });
    expect(refusal({ path: 'empty-class' })).toBe(
      `${join(dir, 'empty-class', 'b')}: class 'b' has no images`,
    );
    folder('stray', { 'a/x.png': ok, 'b/y.png': ok, 'b/notes.txt': 'hello' });
    expect(refusal({ path: 'stray' })).toBe(
      `${join(dir, 'stray', 'b', 'notes.txt')}: not a PNG or JPEG file (kd-launch reads .png, .jpg, .jpeg)`,
    );
    folder('corrupt', { 'a/x.png': ok, 'b/y.png': 'not a png' });
    expect(refusal({ path: 'corrupt' })).toMatch(/corrupt\/b\/y\.png: not a readable PNG image: /);
    folder('unknown', { 'a/x.png': ok, 'b/y.png': ok, 'c/z.png': ok });
    expect(refusal({ path: 'unknown', classes: ['a', 'b'] })).toBe(
      `${join(dir, 'unknown', 'c')}: a folder of no class (classes: a, b)`,
    );
    expect(refusal({ path: 'nowhere' })).toBe(`${join(dir, 'nowhere')}: no such folder`);
    expect(() => DataSpec.parse({ format: 'images', path: 'x', channels: 1, mean: [0.5, 0.5] })).toThrow(
      /one value per channel \(1\), not 2/,
    );
  });
});
