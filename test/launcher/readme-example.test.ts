/**
 * The README's engine example, run as the README shows it (a worker script on 2 ranks): the snippet is read from
 * README.md at test time, so the documentation cannot drift from the API.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import { ZeroShards } from '../../src/engine/zero-shards.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
// Inside the repository, so that the script's imports resolve against its node_modules.
const dir = mkdtempSync(join(ROOT, 'test', 'fixtures', '.readme-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function engineSnippet(): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('### The engine in your own worker program'));
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  if (!code) throw new Error('README.md has no engine example');
  return code.replace("from 'kd-launch'", `from '${join(ROOT, 'src', 'index.ts')}'`);
}

describe('README', () => {
  it('the engine example trains a step with ZeRO-2 on 2 ranks and reports its memory', async () => {
    writeFileSync(join(dir, 'engine.ts'), engineSnippet());
    const { reports } = await launch({ name: 'readme-engine', script: join(dir, 'engine.ts') }, { nproc: 2 })
      .result;
    const data = reports.map((r) => r.data as { loss: number; memory: { grads: number } });
    expect(data).toHaveLength(2);
    for (const d of data) {
      expect(Math.abs(d.loss - Math.log(10))).toBeLessThan(1e-6); // zero weights: uniform logits
      expect(d.memory.grads).toBe(new ZeroShards(7850, 2).shardLength * 4); // ZeRO-2: its shard of the gradient
    }
  }, 60_000);
});
