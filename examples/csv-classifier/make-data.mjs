// Writes data.csv: 900 flowers of 3 species, 4 measurements each, drawn around each species' typical sizes
// (a seeded generator: the same file on every run). Run: node examples/csv-classifier/make-data.mjs
import { writeFileSync } from 'node:fs';

let s = 7;
/** A linear congruential generator in [0, 1). */
const next = () => {
  s = (s * 1103515245 + 12345) % 2147483648;
  return s / 2147483648;
};
const gauss = () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
const species = {
  setosa: [5.0, 3.4, 1.5, 0.25],
  versicolor: [5.9, 2.8, 4.3, 1.3],
  virginica: [6.6, 3.0, 5.6, 2.0],
};
const rows = ['sepal_length,sepal_width,petal_length,petal_width,species'];
for (let i = 0; i < 900; i++) {
  const [name, mean] = Object.entries(species)[i % 3];
  rows.push([...mean.map((m) => (m + 0.35 * gauss()).toFixed(2)), name].join(','));
}
writeFileSync(new URL('./data.csv', import.meta.url), `${rows.join('\n')}\n`);
