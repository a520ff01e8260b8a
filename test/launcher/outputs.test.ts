/**
 * Output that is never lost: every training run saves its model (to the run directory unless the job places it),
 * every directory a run writes is probed before any worker starts — a bad one is one line naming its key, with no
 * worker started and no stack —, a rerun of a finished job says so and starts nothing, and a stopped job says
 * where its rerun resumes.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LaunchEvent } from '../../launcher/events.ts';
import { launch } from '../../launcher/launch.ts';
import { probeWritable } from '../../launcher/output-paths.ts';

const CLI = resolve('bin/kd-launch.js');

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-outputs-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

type Job = Record<string, unknown>;

function job(over: Job = {}): Job {
  return {
    name: 'outputs-test',
    backend: 'cpu',
    seed: 5,
    model: { type: 'mlp', layers: [784, 32, 10] },
    data: { dataset: 'mnist' },
    optimizer: { type: 'Adam', params: { lr: 0.001 } },
    train_micro_batch_size_per_gpu: 16,
    steps: 12,
    ...over,
  };
}

/** The job as a YAML-compatible JSON file; the CLI run on it with `args`, from `cwd`. */
function cli(name: string, j: Job, args: string[] = []) {
  const file = join(tmp, `${name}.json`);
  writeFileSync(file, JSON.stringify(j));
  return spawnSync(process.execPath, [CLI, '--nproc', '2', ...args, file], {
    encoding: 'utf8',
    cwd: tmp,
    timeout: 60_000,
  });
}

async function events(j: Job, runDir: string): Promise<LaunchEvent[]> {
  const handle = launch(j, { nproc: 2, runDir });
  const seen: LaunchEvent[] = [];
  for await (const e of handle.events) seen.push(e);
  await handle.result;
  return seen;
}

describe('a bad output path is refused before any worker starts', () => {
  const refused = (r: ReturnType<typeof cli>, says: RegExp) => {
    expect(r.status).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^kd-launch: /);
    expect(lines[0]).toMatch(says);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stdout).not.toMatch(/rendezvous listening|workers joined/);
  };

  it('output_dir under /proc', () => {
    refused(
      cli('proc-out', job({ output_dir: '/proc/kd-x' })),
      /output_dir: \/proc\/kd-x: cannot be created/,
    );
  });

  it('checkpoint.dir under /proc (it used to hang the job)', () => {
    const r = cli('proc-ckpt', job({ checkpoint: { dir: '/proc/kd-x', every_steps: 5 } }));
    refused(r, /checkpoint\.dir: \/proc\/kd-x: cannot be created/);
  });

  it('a file where a directory should be', () => {
    const file = join(tmp, 'a-file');
    writeFileSync(file, 'not a directory\n');
    refused(cli('file-out', job({ output_dir: join(file, 'model') })), /output_dir: .*not a directory/);
    refused(cli('file-run', job(), ['--run-dir', file]), /--run-dir .*not a directory/);
  });

  it('a missing resume path', () => {
    const missing = join(tmp, 'no-such-checkpoint');
    const r = cli('no-resume', job({ checkpoint: { every_steps: 5 }, resume: missing }));
    refused(r, /resume: no checkpoint at .*no-such-checkpoint: it does not exist/);
  });

  it('a read-only directory (a read-only tmpfs in a private mount namespace: root writes through file modes)', (ctx) => {
    const ro = join(tmp, 'read-only');
    mkdirSync(ro, { recursive: true });
    const file = join(tmp, 'ro.json');
    writeFileSync(file, JSON.stringify(job({ output_dir: join(ro, 'model') })));
    const mounted = spawnSync('unshare', ['-m', 'sh', '-c', `mount -t tmpfs -o ro tmpfs ${ro} && echo ok`], {
      encoding: 'utf8',
    });
    if (mounted.stdout.trim() !== 'ok') {
      ctx.skip(`cannot mount a read-only tmpfs here (needs root): ${mounted.stderr.trim()}`);
    }
    const r = spawnSync(
      'unshare',
      [
        '-m',
        'sh',
        '-c',
        `mount -t tmpfs -o ro tmpfs ${ro} && exec "$0" "$@"`,
        process.execPath,
        CLI,
        '--nproc',
        '2',
        file,
      ],
      { encoding: 'utf8', cwd: tmp, timeout: 60_000 },
    );
    refused(r, /output_dir: .*read-only file system/);
  });

  it('the probe leaves no directory behind', () => {
    const dir = join(tmp, 'probe', 'a', 'b');
    expect(probeWritable(dir)).toBeUndefined();
    expect(existsSync(join(tmp, 'probe'))).toBe(false);
  });
});

describe('every training run keeps its model', () => {
  it('in the run directory by default, and nowhere with save: false', async () => {
    const runDir = join(tmp, 'run-default');
    const seen = await events(job(), runDir);
    const plan = seen.find((e) => e.type === 'plan');
    expect(plan?.type === 'plan' && plan.plan.outputs?.model).toBe(join(runDir, 'model'));
    expect(readdirSync(join(runDir, 'model'))).toContain('kd-model.json');
    const summary = seen.find((e) => e.type === 'report' && (e.data as { kind?: string }).kind === 'summary');
    expect(summary?.type === 'report' && (summary.data as { model_dir?: string }).model_dir).toBe(
      join(runDir, 'model'),
    );

    const unsaved = join(tmp, 'run-unsaved');
    const r = cli('unsaved', job({ save: false }), ['--run-dir', unsaved, '--dry-run']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^model\s+not saved \(save: false\)$/m);
    expect(r.stdout).toContain(`run dir    ${unsaved}`);
  });

  it("every job in configs/ saves its model, or its stages' models, in its run directory", () => {
    const configs = readdirSync(resolve('configs')).filter((f) => f.endsWith('.yaml'));
    expect(configs.length).toBeGreaterThanOrEqual(6);
    for (const f of configs) {
      const runDir = join(tmp, 'configs', f);
      const { plan } = launch(resolve('configs', f), { dryRun: true, nproc: 2, runDir });
      expect(plan.outputs?.model, f).toMatch(new RegExp(`^${runDir.replaceAll('/', '\\/')}`));
    }
  });

  it('says a rerun of a finished job is finished, and starts nothing', async () => {
    const runDir = join(tmp, 'run-finished');
    const j = job({ checkpoint: { every_steps: 6 }, resume: 'auto' });
    await events(j, runDir);
    const again = await events(j, runDir);
    expect(again.some((e) => e.type === 'worker-started')).toBe(false);
    const plan = again.find((e) => e.type === 'plan');
    expect(plan?.type === 'plan' && plan.plan.finished).toEqual({
      checkpoint: join(runDir, 'checkpoints', 'step-12'),
      step: 12,
      totalSteps: 12,
    });
  });

  it('a stopped job says where its rerun resumes', async () => {
    const runDir = join(tmp, 'run-stopped');
    const handle = launch(job({ steps: 400, checkpoint: { every_steps: 5 } }), { nproc: 2, runDir });
    let done: LaunchEvent | undefined;
    let stopped = false;
    for await (const e of handle.events) {
      // Steps are recorded paced (src/trainer/record-pacer.ts): the first recorded at or past step 12.
      if (e.type === 'step' && e.record.step >= 12 && !stopped) {
        stopped = true;
        handle.abort('stopped by the test');
      }
      if (e.type === 'done') done = e;
    }
    await expect(handle.result).rejects.toThrow(/stopped by the test/);
    expect(done?.type === 'done' && done.resume).toMatchObject({
      step: expect.any(Number),
      totalSteps: 400,
      set: 'resume=auto',
    });
    const resume = done?.type === 'done' ? done.resume : undefined;
    expect(resume?.step).toBeGreaterThanOrEqual(10);
    expect(resume?.checkpoint).toBe(join(runDir, 'checkpoints', `step-${resume?.step}`));
    expect(resume?.reached).toBeGreaterThanOrEqual(12);
  });
});
