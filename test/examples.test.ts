/**
 * Every example of examples/ runs as documented, for a few steps: its data or model made by its own script, its
 * job file launched on 2 workers. Each runs in a copy inside the repository (so that `kd-launch` resolves to this
 * checkout), with `steps: 3` in place of its epochs.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { launch } from '../launcher/launch.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const dir = mkdtempSync(join(ROOT, 'test', 'fixtures', '.examples-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A copy of examples/NAME whose job trains 3 steps (each job stage too) and writes under the copy. */
function shortCopy(name: string): string {
  const copy = join(dir, name);
  cpSync(join(ROOT, 'examples', name), copy, { recursive: true });
  const file = join(copy, 'job.yaml');
  const job = parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const short = (j: Record<string, unknown>) => {
    if (j['epochs'] !== undefined) {
      delete j['epochs'];
      j['steps'] = 3;
    }
  };
  short(job);
  for (const stage of (job['stages'] as Record<string, unknown>[] | undefined) ?? []) short(stage);
  if (job['output_dir'] !== undefined) job['output_dir'] = './out';
  if (job['args'] !== undefined) job['args'] = { epochs: 1, out: './out' };
  writeFileSync(file, stringify(job));
  return file;
}

/** Runs an example's own preparation script in the copy, as its job file's comment says. */
function run(command: string, args: string[]): void {
  const r = spawnSync(command, args, { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  expect(r.status, r.stderr).toBe(0);
}

async function reports(file: string): Promise<Record<string, unknown>[]> {
  const { reports } = await launch(file, { nproc: 2 }).result;
  return reports.map((r) => r.data as Record<string, unknown>);
}

describe('examples/', () => {
  it('csv-classifier: the MLP trains on the CSV file', async () => {
    const file = shortCopy('csv-classifier');
    const summary = (await reports(file)).find((d) => d['kind'] === 'summary');
    expect(summary?.['steps']).toBe(3);
  });

  it('image-folder: make-images.mjs writes the PNG folder, the CNN trains on it', async () => {
    const file = shortCopy('image-folder');
    run(process.execPath, [join(dir, 'image-folder', 'make-images.mjs')]);
    const summary = (await reports(file)).find((d) => d['kind'] === 'summary');
    expect(summary?.['steps']).toBe(3);
  });

  it('user-model: make-model.ts saves a tfjs model, the job trains it and distils an MLP from it', async () => {
    const file = shortCopy('user-model');
    run(process.execPath, ['--import', 'tsx', join(dir, 'user-model', 'make-model.ts')]);
    const table = (await reports(file)).find((d) => d['kind'] === 'stages') as { rows: { stage: string }[] };
    expect(table.rows.map((r) => r.stage)).toEqual(['teacher', 'distilled', 'scratch']);
  });

  it('keras-teacher: make-teacher.mjs writes a converted Keras 3 model, fine-tuned and distilled by layer name', async () => {
    const file = shortCopy('keras-teacher');
    run(process.execPath, [join(dir, 'keras-teacher', 'make-teacher.mjs')]);
    const table = (await reports(file)).find((d) => d['kind'] === 'stages') as { rows: { stage: string }[] };
    expect(table.rows.map((r) => r.stage)).toEqual(['teacher', 'distilled', 'scratch']);
  });

  it('custom-loop: the prepare() loop trains an epoch and reports its accuracy', async () => {
    const file = shortCopy('custom-loop');
    const data = await reports(file);
    expect(data.map((d) => d['epoch'])).toEqual([1, 1]);
  });
});
