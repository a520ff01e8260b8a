/**
 * Layer reduction: which spec a choice of layers makes, which choices are refused, and that the shallower model
 * starts from exactly the chosen layers' trained values (the embeddings, head and output layer kept).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reducedSpec } from '../../src/config/layer-reduction.ts';
import { ModelSpec } from '../../src/config/schema.ts';
import { netParams } from '../../src/engine/net.ts';
import { buildNet } from '../../src/models/build.ts';
import { saveNetModel, startingFrom } from '../../src/models/net-dir.ts';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-layer-reduction-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const transformer = ModelSpec.parse({
  type: 'transformer',
  vocab: 12,
  seq_len: 6,
  dim: 8,
  heads: 2,
  layers: 4,
  ffn: 16,
  classes: 3,
});
const mlp = ModelSpec.parse({ type: 'mlp', layers: [20, 8, 8, 8, 3] });
const issueOf = (spec: ModelSpec, layers: number[]) => {
  const r = reducedSpec(spec, layers);
  return 'issue' in r ? r.issue : `no issue: ${JSON.stringify(r.spec)}`;
};

describe('the spec a reduction makes', () => {
  it('a Transformer keeps as many encoder layers as it names, and their heads', () => {
    expect(reducedSpec(transformer, [1, 3])).toEqual({ spec: { ...transformer, layers: 2 } });
    const pruned = ModelSpec.parse({ ...transformer, layer_heads: [2, 1, 2, 1] });
    expect(reducedSpec(pruned, [0, 3])).toEqual({ spec: { ...pruned, layers: 2, layer_heads: [2, 1] } });
  });

  it('an MLP keeps the chosen hidden layers and its output layer, and their ranks', () => {
    expect(reducedSpec(mlp, [0, 2])).toEqual({ spec: { ...mlp, layers: [20, 8, 8, 3] } });
    const lowRank = ModelSpec.parse({ ...mlp, ranks: [4, null, 2, null] });
    expect(reducedSpec(lowRank, [0])).toEqual({ spec: { ...lowRank, layers: [20, 8, 3], ranks: [4, null] } });
  });

  it('refuses a layer that does not exist, an order, keeping everything, unchained sizes and a CNN', () => {
    expect(issueOf(transformer, [0, 4])).toBe(
      'encoder layer 4 does not exist: the transformer has 4 (0 … 3)',
    );
    expect(issueOf(transformer, [2, 1])).toBe('layers [2, 1] must be in increasing order, each once');
    expect(issueOf(transformer, [1, 1])).toBe('layers [1, 1] must be in increasing order, each once');
    expect(issueOf(mlp, [0, 1, 2])).toBe('layers keeps all 3 hidden layers: nothing is reduced');
    expect(issueOf(ModelSpec.parse({ type: 'mlp', layers: [784, 300, 100, 10] }), [1])).toBe(
      'hidden layer 1 takes 300 inputs where the layers kept before it give 784: an MLP 784-300-100-10 keeps only layers whose sizes chain',
    );
    expect(issueOf(ModelSpec.parse({ type: 'mlp', layers: [784, 300, 100, 10] }), [0])).toBe(
      'the output layer takes 100 inputs where the layers kept before it give 300: an MLP 784-300-100-10 keeps only layers whose sizes chain',
    );
    const cnn = ModelSpec.parse({
      type: 'cnn',
      input: [8, 8, 1],
      conv: [{ filters: 2, kernel: 3 }],
      classes: 3,
    });
    expect(issueOf(cnn, [0])).toBe('layer reduction keeps layers of a transformer or an mlp, not of a cnn');
  });
});

describe('the reduced model starts from the chosen layers’ values', () => {
  /** Each parameter's values by its name, `<block>/<param>`. */
  const byName = (spec: ModelSpec, values: readonly Float32Array[]) =>
    new Map(netParams(buildNet(spec)).map((p, i) => [p.name, values[i]]));

  it('a Transformer: embeddings, layers 1 and 3 as its layers 0 and 1, the head', async () => {
    const dir = join(tmp, 'transformer');
    const trained = buildNet(transformer).init(7);
    await saveNetModel(dir, transformer, trained);
    const { spec, net } = startingFrom(dir, [1, 3]);
    expect(spec).toEqual({ ...transformer, layers: 2 });
    const teacher = byName(transformer, trained);
    const student = byName(spec, net.init(99));
    // Student layer i is teacher layer [1, 3][i]; the embeddings and head keep their names.
    const source = (name: string) =>
      name.replace(/^layer(\d+)\//, (_, i: string) => `layer${[1, 3][Number(i)]}/`);
    const perLayer = [...teacher.keys()].filter((n) => n.startsWith('layer0/')).length;
    expect(perLayer).toBeGreaterThan(0);
    expect(student.size).toBe(teacher.size - 2 * perLayer);
    for (const [name, values] of student) expect(values, name).toEqual(teacher.get(source(name)));
  });

  it('an MLP 20-8-8-8-3 from hidden layers 0 and 2: 20-8-8-3 with those kernels and the output layer', async () => {
    const dir = join(tmp, 'mlp');
    const trained = buildNet(mlp).init(3);
    await saveNetModel(dir, mlp, trained);
    const { spec, net } = startingFrom(dir, [0, 2]);
    expect(spec).toEqual({ ...mlp, layers: [20, 8, 8, 3] });
    const values = net.init(1);
    expect(values).toEqual([trained[0], trained[1], trained[4], trained[5], trained[6], trained[7]]);
  });
});
