// Writes images/<class>/<n>.png: 150 16×16 RGB images per class of three shapes (a filled square, a ring, a cross)
// in a random colour at a random place, on noise (a seeded generator: the same files on every run).
// Run: node examples/image-folder/make-images.mjs
import { mkdirSync, writeFileSync } from 'node:fs';
import { PNG } from 'pngjs';

let s = 3;
/** A linear congruential generator in [0, 1). */
const next = () => {
  s = (s * 1103515245 + 12345) % 2147483648;
  return s / 2147483648;
};
const root = new URL('./images/', import.meta.url);
const inside = {
  square: (dx, dy) => Math.abs(dx) <= 3 && Math.abs(dy) <= 3,
  ring: (dx, dy) => Math.abs(Math.hypot(dx, dy) - 4) < 1.2,
  cross: (dx, dy) => (Math.abs(dx) <= 1 && Math.abs(dy) <= 5) || (Math.abs(dy) <= 1 && Math.abs(dx) <= 5),
};
for (const [shape, hit] of Object.entries(inside)) {
  mkdirSync(new URL(`${shape}/`, root), { recursive: true });
  for (let n = 0; n < 150; n++) {
    const png = new PNG({ width: 16, height: 16 });
    const [cx, cy] = [5 + Math.floor(next() * 6), 5 + Math.floor(next() * 6)];
    const colour = [100 + next() * 155, 100 + next() * 155, 100 + next() * 155];
    for (let y = 0; y < 16; y++) {
      for (let x = 0; x < 16; x++) {
        const on = hit(x - cx, y - cy);
        const px = colour.map((c) => Math.floor((on ? c : 0) + next() * 60));
        png.data.set([...px, 255], (y * 16 + x) * 4);
      }
    }
    writeFileSync(new URL(`${shape}/${n}.png`, root), PNG.sync.write(png));
  }
}
