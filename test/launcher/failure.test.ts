import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { JobFailedError } from '../../launcher/errors.ts';
import { launch } from '../../launcher/launch.ts';

const BUSY = fileURLToPath(new URL('../fixtures/busy.yaml', import.meta.url));
const CLI = fileURLToPath(new URL('../../bin/kd-launch.js', import.meta.url));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function workerPidsAlive(pids: number[]): number[] {
  return pids.filter(alive);
}

describe('a failing worker stops the whole job', () => {
  it('kill -9 of one worker of three mid-collective: non-zero within 10 s, naming that rank; no worker remains', async () => {
    const handle = launch(BUSY, { nproc: 3 });
    const pids = new Map<number, number>();
    let killedAt = 0;
    for await (const e of handle.events) {
      if (e.type === 'worker-started') pids.set(e.rank, e.pid);
      if (e.type === 'report' && e.rank === 1 && killedAt === 0) {
        killedAt = performance.now();
        process.kill(pids.get(1)!, 'SIGKILL');
      }
    }
    const err = await handle.result.catch((x: unknown) => x);
    const elapsed = performance.now() - killedAt;
    expect(err).toBeInstanceOf(JobFailedError);
    const failure = (err as JobFailedError).failure!;
    expect(failure.rank).toBe(1);
    expect(failure.signal).toBe('SIGKILL');
    expect(failure.lastCollective).toMatch(/allReduce #\d+/);
    expect((err as Error).message).toMatch(/rank 1 .*SIGKILL.*allReduce/);
    expect(elapsed).toBeLessThan(10_000);
    expect(workerPidsAlive([...pids.values()])).toEqual([]);
  });

  it('a worker that exits non-zero is reported with its code and its last stderr lines', async () => {
    const handle = launch(
      {
        name: 'fails',
        script: fileURLToPath(new URL('../fixtures/busy.worker.ts', import.meta.url)),
        args: { fail_rank: 0, exit_code: 7 },
      },
      { nproc: 2 },
    );
    const err = (await handle.result.catch((x: unknown) => x)) as JobFailedError;
    expect(err).toBeInstanceOf(JobFailedError);
    expect(err.failure?.rank).toBe(0);
    expect(err.failure?.exitCode).toBe(7);
    expect(err.failure?.stderrTail.join('\n')).toContain('rank 0 gives up on purpose');
  });

  it('abort() from the program stops every worker and rejects the result with the reason', async () => {
    const handle = launch(BUSY, { nproc: 2 });
    const pids: number[] = [];
    for await (const e of handle.events) {
      if (e.type === 'worker-started') pids.push(e.pid);
      if (e.type === 'report') handle.abort('enough');
    }
    await expect(handle.result).rejects.toThrow(/enough/);
    expect(workerPidsAlive(pids)).toEqual([]);
  });

  it('a worker that computes for seconds without yielding keeps its link to the master', async () => {
    const script = fileURLToPath(new URL('../fixtures/blocking.worker.ts', import.meta.url));
    const handle = launch({ name: 'blocking', script, args: { block_ms: 6000 } }, { nproc: 2 });
    const { reports } = await handle.result;
    expect(reports.map((r) => r.rank).sort()).toEqual([0, 1]);
  });

  it('SIGTERM to the launcher leaves no worker behind', async () => {
    const { cli, pids } = await startCliUntilReport(BUSY);
    cli.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => cli.on('close', resolve));
    expect(code).not.toBe(0);
    expect(pids).toHaveLength(2);
    expect(workerPidsAlive(pids)).toEqual([]);
  });

  it('SIGKILL of the launcher itself: its workers notice and exit, and take the job’s socket and ring directories with them', async () => {
    const { cli, pids } = await startCliUntilReport(BUSY);
    // The job's private socket directory, from a worker's environment.
    const environ = readFileSync(`/proc/${pids[0]}/environ`, 'utf8').split('\0');
    const dir = (environ.find((v) => v.startsWith('KD_DATA_PLANE=ipc:')) ?? '').slice(
      'KD_DATA_PLANE=ipc:'.length,
    );
    expect(existsSync(dir)).toBe(true);
    // And the node's shared-memory ring directory, which the launcher can no longer remove.
    const shmDir = (environ.find((v) => v.startsWith('KD_SHM_DIR=')) ?? '').slice('KD_SHM_DIR='.length);
    expect(shmDir).toMatch(/^\/dev\/shm\/kd-launch-/);
    expect(existsSync(shmDir)).toBe(true);
    cli.kill('SIGKILL');
    const deadline = Date.now() + 10_000;
    while (workerPidsAlive(pids).length > 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    expect(pids).toHaveLength(2);
    expect(workerPidsAlive(pids)).toEqual([]);
    expect(existsSync(dir)).toBe(false);
    expect(existsSync(shmDir)).toBe(false);
  });
});

/** Runs the CLI with --json on 2 workers and returns once a worker has reported, with the worker pids. */
async function startCliUntilReport(job: string): Promise<{ cli: ChildProcess; pids: number[] }> {
  const cli = spawn(process.execPath, [CLI, '--nproc', '2', '--json', job], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const pids: number[] = [];
  let buffered = '';
  await new Promise<void>((resolve) => {
    cli.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        const e = JSON.parse(line) as { type: string; pid?: number };
        if (e.type === 'worker-started' && e.pid) pids.push(e.pid);
        if (e.type === 'report') resolve();
      }
    });
  });
  return { cli, pids };
}

describe('out of memory', () => {
  it('a worker whose heap fills up is reported as out of memory, with its last RSS', async () => {
    process.env['KD_WORKER_EXEC_ARGV'] = '--max-old-space-size=96';
    try {
      const script = fileURLToPath(new URL('../fixtures/hungry.worker.ts', import.meta.url));
      const err = (await launch({ name: 'hungry', script }, { nproc: 2 }).result.catch(
        (x: unknown) => x,
      )) as Error;
      expect(err).toBeInstanceOf(JobFailedError);
      expect(err.message).toMatch(
        /^rank 1 \(node 0\) ran out of memory \((killed by SIG[A-Z]+|exit code \d+); its last RSS \d+ MiB\)/,
      );
    } finally {
      delete process.env['KD_WORKER_EXEC_ARGV'];
    }
  }, 60_000);
});

describe('launch options', () => {
  const job = {
    name: 'options',
    script: fileURLToPath(new URL('../fixtures/busy.worker.ts', import.meta.url)),
  };
  it('bad ones are refused in one line before anything starts', () => {
    expect(() => launch(job, { nproc: 0 })).toThrow(/^--nproc must be an integer in 1\.\.1024, got 0$/);
    expect(() => launch(job, { nproc: 1, nnodes: 2, nodeRank: 2, masterAddr: '10.0.0.1' })).toThrow(
      /^--node-rank 2 must be below --nnodes 2$/,
    );
    expect(() => launch(job, { nproc: 1, hangTimeoutS: 0.5 })).toThrow(/^--hang-timeout must be an integer/);
    expect(() => launch(job, { nproc: 1, maxRestarts: -1 })).toThrow(/^--max-restarts must be an integer/);
  });

  it('a multi-node job without KD_JOB_TOKEN is refused, naming the variable', () => {
    const saved = process.env['KD_JOB_TOKEN'];
    delete process.env['KD_JOB_TOKEN'];
    try {
      expect(() => launch(job, { nproc: 1, nnodes: 2, nodeRank: 0, masterAddr: '127.0.0.1' })).toThrow(
        /needs the same KD_JOB_TOKEN \(a secret\) in every node's environment/,
      );
    } finally {
      if (saved !== undefined) process.env['KD_JOB_TOKEN'] = saved;
    }
  });
});
