/**
 * The README's worker-program examples (the engine, and a loop of your own with `prepare()`), run as the README
 * shows them (worker scripts on 2 ranks): the snippets are read from README.md at test time, so the documentation
 * cannot drift from the API.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import { ZeroShards } from '../../src/engine/zero-shards.ts';
import { loadNetModel } from '../../src/models/net-dir.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
// Inside the repository, so that the script's imports resolve against its node_modules.
const dir = mkdtempSync(join(ROOT, 'test', 'fixtures', '.readme-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The first TypeScript block after `heading` in README.md, importing kd-launch from this checkout. */
function snippet(heading: string): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf(heading));
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  if (!code) throw new Error(`README.md has no example under '${heading}'`);
  return code.replace("from 'kd-launch'", `from '${join(ROOT, 'src', 'index.ts')}'`);
}

describe('README', () => {
  it('the engine example trains a step with ZeRO-2 on 2 ranks and reports its memory', async () => {
    writeFileSync(join(dir, 'engine.ts'), snippet('### The engine in your own worker program'));
    const { reports } = await launch({ name: 'readme-engine', script: join(dir, 'engine.ts') }, { nproc: 2 })
      .result;
    const data = reports.map((r) => r.data as { loss: number; memory: { grads: number } });
    expect(data).toHaveLength(2);
    for (const d of data) {
      expect(Math.abs(d.loss - Math.log(10))).toBeLessThan(1e-6); // zero weights: uniform logits
      expect(d.memory.grads).toBe(new ZeroShards(7850, 2).shardLength * 4); // ZeRO-2: its shard of the gradient
    }
  }, 60_000);

  it('the prepare() loop trains an MLP on MNIST for an epoch at ZeRO-2 on 2 ranks and saves it', async () => {
    writeFileSync(join(dir, 'train.ts'), snippet('### Your own training loop: `prepare()`'));
    // A job file beside the script, as the README runs it: the script's relative paths resolve there.
    writeFileSync(join(dir, 'job.yaml'), 'name: readme-prepare\nscript: ./train.ts\n');
    const { reports } = await launch(join(dir, 'job.yaml'), { nproc: 2 }).result;
    const data = reports.map((r) => r.data as { accuracy: number; steps: number });
    expect(data).toHaveLength(2);
    for (const d of data) {
      // One epoch of 7,996 digits in global batches of 64: 124 whole steps.
      expect(d.steps).toBe(124);
      expect(d.accuracy).toBeGreaterThan(0.85);
    }
    expect(data[0].accuracy).toBe(data[1].accuracy);
    expect(loadNetModel(join(dir, 'model-out')).values).toHaveLength(4);
  }, 120_000);
});
