/**
 * `kd-launch export --onnx` as a user meets its refusals: a model without a layers form (a Transformer) is refused
 * in one line naming it, before anything is written; so is an output directory that is the source itself.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TransformerSpec } from '../../src/config/transformer.ts';
import { buildNet } from '../../src/models/build.ts';
import { saveNetModel } from '../../src/models/net-dir.ts';

const CLI = fileURLToPath(new URL('../../bin/kd-launch.js', import.meta.url));
let tmp: string;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-export-onnx-'));
  const spec = TransformerSpec.parse({
    type: 'transformer',
    vocab: 12,
    seq_len: 6,
    dim: 8,
    heads: 2,
    layers: 1,
    ffn: 16,
    classes: 3,
  });
  await saveNetModel(join(tmp, 'transformer'), spec, buildNet(spec).init(1));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const exportCli = (...args: string[]) =>
  spawnSync(process.execPath, [CLI, 'export', ...args], { encoding: 'utf8', timeout: 60_000 });

describe('kd-launch export --onnx refuses what it cannot write', () => {
  it('a Transformer: one line naming it and what has a layers form; nothing written', () => {
    const out = join(tmp, 'out');
    const r = exportCli(join(tmp, 'transformer'), out, '--onnx');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(
      /^kd-launch export: \S+transformer: a transformer has no tfjs layers form to write as ONNX \(the MLP, the CNN and a tfjs model of your own have one\)\n$/,
    );
    expect(existsSync(out)).toBe(false);
    // Without --onnx the same model exports as its kd-launch model directory.
    expect(exportCli(join(tmp, 'transformer'), out).status).toBe(0);
    expect(existsSync(join(out, 'kd-model.json'))).toBe(true);
  });

  it('a source that does not exist, named as what it should be', () => {
    const r = exportCli(join(tmp, 'missing'), join(tmp, 'out2'), '--onnx');
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(
      `kd-launch export: ${join(tmp, 'missing')} does not exist (a checkpoint or a model directory to export)\n`,
    );
  });

  it('an output directory that is the source itself', () => {
    const src = join(tmp, 'transformer');
    const r = exportCli(src, src);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(`kd-launch export: ${src}: the output directory is the source itself\n`);
  });
});
