import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { type ChromeTrace, chromeTraceProblems } from '../../src/trace/chrome-trace.ts';

const CLI = fileURLToPath(new URL('../../bin/kd-launch.js', import.meta.url));
const MNIST = fileURLToPath(new URL('../../configs/mnist-train.yaml', import.meta.url));
const BUSY = fileURLToPath(new URL('../fixtures/busy.yaml', import.meta.url));
const COLLECTIVES = fileURLToPath(new URL('../fixtures/collectives.yaml', import.meta.url));

function kd(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** One clear line on stderr, no stack trace. */
function expectOneClearLine(stderr: string, pattern: RegExp): void {
  const lines = stderr.trim().split('\n');
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
  expect(stderr).not.toMatch(/^\s+at /m);
}

describe('kd-launch CLI', () => {
  it('--help explains the options with examples', () => {
    const r = kd('--help');
    expect(r.code).toBe(0);
    for (const word of [
      '--nproc',
      '--gpus',
      '--nnodes',
      '--node-rank',
      '--master-addr',
      '--master-port',
      '--dry-run',
      '--json',
      'Examples:',
    ]) {
      expect(r.stdout).toContain(word);
    }
  });

  it('env --json prints the package version, run from dist/ as from the sources', () => {
    const r = kd('env', '--json');
    expect(r.code, r.stderr).toBe(0);
    const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    expect((JSON.parse(r.stdout) as Record<string, string>)['kd-launch']).toBe(version);
  });

  it('a bad job path is one line', () => {
    const r = kd('--nproc', '2', 'no/such/job.yaml');
    expect(r.code).toBe(2);
    expectOneClearLine(r.stderr, /no\/such\/job\.yaml.*no such job file/);
  });

  it('a bad flag is one line', () => {
    const r = kd('--nprocs', '2', MNIST);
    expect(r.code).toBe(2);
    expectOneClearLine(r.stderr, /Unknown argument: nprocs/);
  });

  it('a port already in use is one line', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      const r = kd('--nproc', '2', '--master-port', String(port), BUSY);
      expect(r.code).toBe(2);
      expectOneClearLine(r.stderr, new RegExp(`master port ${port} is already in use`));
    } finally {
      blocker.close();
    }
  });

  it('--gpus without tfjs-node-gpu says what to install, or to use --nproc', () => {
    const r = kd('--gpus', '2', MNIST);
    expect(r.code).toBe(2);
    expectOneClearLine(r.stderr, /@tensorflow\/tfjs-node-gpu.*--nproc/);
  });

  it('a bad config names the field and its line, and starts nothing', () => {
    const r = kd('--nproc', '2', fileURLToPath(new URL('../fixtures/bad-lr.yaml', import.meta.url)));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/bad-lr\.yaml:\d+:\d+: optimizer\.params\.lr: the learning rate must be > 0/);
    expect(r.stdout).not.toMatch(/rendezvous/);
  });

  it('--set changes the job before it is validated, and a bad one is refused naming the --set', () => {
    const set = kd('--nproc', '2', '--dry-run', '--set', 'epochs=2', '--set', 'name=tuned', MNIST);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toMatch(/schedule\s+2 epochs/);
    expect(set.stdout).toMatch(/runs[/\\]tuned[/\\]model/);

    const refused: [string, RegExp][] = [
      ['optimizer.params.lr=0', /--set optimizer\.params\.lr: the learning rate must be > 0$/],
      ['steps=50', /--set steps: give 'steps' or 'epochs', not both$/],
      ['optimizer.params.lr', /--set optimizer\.params\.lr: give KEY\.PATH=VALUE/],
      ['model.layers.nine=1', /--set model\.layers\.nine: model\.layers is a list: 'nine' is not an index$/],
      // Found after parsing (the launcher's checks of paths), and still the --set's, not a line of the file.
      [
        'checkpoint={dir: /proc/kd-set, every_steps: 5}',
        /--set checkpoint: checkpoint\.dir: \/proc\/kd-set: cannot be created$/,
      ],
      [
        'resume=/nonexistent/kd-ckpt',
        /--set resume: no checkpoint at \/nonexistent\/kd-ckpt: it does not exist$/,
      ],
    ];
    for (const [override, pattern] of refused) {
      const r = kd('--nproc', '2', '--dry-run', '--set', override, MNIST);
      expect(r.code, override).toBe(2);
      expectOneClearLine(r.stderr, pattern);
    }
  });

  it('says before a training job starts that it will run without the BLAS kernels, and how much slower', () => {
    const r = spawnSync(process.execPath, [CLI, '--nproc', '2', '--dry-run', MNIST], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, KD_BLAS: 'off' },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      /^warning +the fast CPU path is off: KD_BLAS=off; a CNN trains about 11× slower without it$/m,
    );
  });

  it('--dry-run prints nodes, ranks and the batch arithmetic, and starts nothing', () => {
    const r = kd('--nproc', '2', '--dry-run', MNIST);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/1 × 2 CPU workers = world 2/);
    expect(r.stdout).toMatch(/train_batch_size \d+ = micro \d+ × accumulation \d+ × data-parallel 2/);
    expect(r.stdout).not.toMatch(/rendezvous listening/);
  });

  it('--json prints every event as one JSON object per line', () => {
    const r = kd('--nproc', '2', '--dry-run', '--json', MNIST);
    const events = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string });
    expect(events.map((e) => e.type)).toEqual(['plan', 'done']);
  });

  it('--trace FILE writes the run’s timeline and says where', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kd-cli-trace-'));
    const path = join(dir, 'run.json');
    const r = kd('--nproc', '2', '--trace', path, COLLECTIVES);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`written to ${path}`);
    const trace = JSON.parse(readFileSync(path, 'utf8')) as ChromeTrace;
    expect(chromeTraceProblems(trace, { ranks: [0, 1] })).toEqual([]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('a reader that goes away (`kd-launch … | head`) stops the job cleanly: one line, no stack, nothing left', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'kd-cli-epipe-'));
    const child = spawn(process.execPath, [CLI, '--nproc', '2', '--set', 'epochs=50', MNIST], {
      env: { ...process.env, TMPDIR: tmp },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d;
    });
    // Gone once training prints its steps, as `head` goes after its lines; the next line written meets EPIPE.
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
      if (stdout.includes(' step ')) child.stdout.destroy();
    });
    const code = await new Promise<number | null>((done) => child.on('exit', done));
    expect(code, stderr).toBe(1);
    expect(stderr).toContain('its output was closed (EPIPE): the job stopped');
    expect(stderr).not.toMatch(/^\s+at |Unhandled/m);
    // The job's private socket directory went with the launcher's teardown.
    expect(readdirSync(tmp)).toEqual([]);
    rmSync(tmp, { recursive: true, force: true });
  });
});
