/**
 * What a person sees: a real two-stage training job (world 2, 150 steps of an MLP on MNIST per stage) run by the
 * CLI inside a detached tmux session of fixed size, its screen captured while it runs and at the end; and the
 * same job with its output piped. The CLI runs dist/ when present: `npm run build` after changing launcher code.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = join(ROOT, 'bin', 'kd-launch.js');
const STAGES = ['first', 'second'];
const hasTmux = spawnSync('tmux', ['-V']).status === 0;

/** A bar: its stage, percent, at least ten cells of bar, step/total. */
const BAR = /^(\S+)\s+\d+% [█░]{10,} \d+\/150 /;
const BAR_CELLS = /[█░]{10}/;

let tmp: string;
let job: string;

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-tty-'));
  job = join(tmp, 'job.yaml');
  const stage = (name: string) => [
    `  - name: ${name}`,
    '    model: {type: mlp, layers: [784, 512, 512, 10]}',
  ];
  writeFileSync(
    job,
    [
      'name: tty-progress',
      'backend: cpu',
      'seed: 1',
      'data: {dataset: mnist}',
      'train_micro_batch_size_per_gpu: 32',
      'optimizer: {type: Adam, params: {lr: 0.002}}',
      'steps: 150',
      'steps_per_print: 50',
      'output_dir: out',
      'stages:',
      ...STAGES.flatMap(stage),
      '',
    ].join('\n'),
  );
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const terminal = hasTmux ? 'in a terminal (tmux 160×40)' : 'in a terminal: skipped, tmux is not installed';

describe.skipIf(!hasTmux)(terminal, () => {
  // A server of its own: the test neither sees nor touches a user's tmux sessions.
  const tmux = (...args: string[]) =>
    spawnSync('tmux', ['-L', `kd-tty-${process.pid}`, ...args], { encoding: 'utf8' });

  afterAll(() => {
    tmux('kill-server');
  });

  it('one bar per stage with an ETA, log lines above the bars and never on a bar’s line; exit 0', async () => {
    const exitFile = join(tmp, 'exit-code');
    const command = `node ${CLI} --nproc 2 ${job}; echo $? > ${exitFile}`;
    const started = tmux('new-session', '-d', '-s', 'run', '-x', '160', '-y', '40', '-c', tmp, command);
    expect(started.status, started.stderr).toBe(0);
    // The pane stays after the CLI exits, so that its last screen can be read.
    tmux('set-option', '-t', 'run', 'remain-on-exit', 'on');

    const screens: string[][] = [];
    const capture = (...history: string[]) =>
      tmux('capture-pane', '-p', '-t', 'run', ...history)
        .stdout.split('\n')
        .map((l) => l.trimEnd());
    while (!existsSync(exitFile)) {
      screens.push(capture());
      await new Promise((r) => setTimeout(r, 100));
    }
    const whole = capture('-S', '-');
    screens.push(whole);
    expect(readFileSync(exitFile, 'utf8').trim(), whole.join('\n')).toBe('0');

    // While a stage trains, its bar says how long is left.
    for (const stage of STAGES) {
      const live = screens.flat().filter((l) => BAR.exec(l)?.[1] === stage && /ETA \d+:\d\d/.test(l));
      expect(live.length, `${stage}: no bar with an ETA in ${screens.length} screens`).toBeGreaterThan(0);
    }
    for (const screen of screens) {
      const bars = screen.flatMap((l, i) => (BAR_CELLS.test(l) ? [i] : []));
      const logs = screen.flatMap((l, i) => (l.includes('[rank ') ? [i] : []));
      for (const i of bars) expect(screen[i], screen.join('\n')).toMatch(BAR);
      for (const i of logs) expect(screen[i], screen.join('\n')).not.toMatch(BAR_CELLS);
      if (bars.length > 0 && logs.length > 0) expect(Math.max(...logs)).toBeLessThan(Math.min(...bars));
      // One bar per stage: the bars are redrawn in place, never left behind as copies.
      expect(new Set(bars.map((i) => BAR.exec(screen[i])?.[1])).size, screen.join('\n')).toBe(bars.length);
    }
    // At the end both bars stay, complete, and the comparison table follows them.
    const finalBars = whole.filter((l) => BAR.test(l));
    expect(finalBars.map((l) => BAR.exec(l)?.[1])).toEqual(STAGES);
    for (const l of finalBars) expect(l).toMatch(/ 100% .* 150\/150 .*done in \d+:\d\d/);
    expect(whole.findIndex((l) => /^stage\s+model\s+objective/.test(l))).toBeGreaterThan(
      whole.indexOf(finalBars[1]),
    );
  });
});

describe('piped', () => {
  it('no escape codes; timestamped lines, with progress lines that give step, epoch, loss, samples/s and ETA', async () => {
    const cli = spawn(process.execPath, [CLI, '--nproc', '2', job], {
      cwd: tmp,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    cli.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
    });
    cli.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    const code = await new Promise((resolve) => cli.on('close', resolve));
    expect(code, stderr).toBe(0);
    // No escape sequence (ESC) and no carriage return redrawing a line.
    expect(stdout + stderr).not.toContain('\u001b');
    expect(stdout + stderr).not.toContain('\r');
    const lines = stdout.split('\n');
    expect(lines.filter((l) => /^\d\d:\d\d:\d\d \[rank 0\] /.test(l)).length).toBeGreaterThan(0);
    for (const stage of STAGES) {
      const progress = lines.filter((l) => l.slice(9).startsWith(`${stage} step `));
      // The first step, each tenth of the run and its end; more only where a tenth took over 30 s.
      expect(progress.length, stdout).toBeGreaterThanOrEqual(11);
      for (const l of progress) {
        expect(l).toMatch(
          /^\d\d:\d\d:\d\d \S+ step \d+\/150 \(\d+%\) {2}epoch \d\/\d {2}loss \d+\.\d{4} {2}[\d,]+ samples\/s {2}(ETA (\d+:\d\d|-:--)|done in \d+:\d\d)$/,
        );
      }
    }
  });
});
