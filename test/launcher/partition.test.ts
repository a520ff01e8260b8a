/**
 * A network partition between two hosts (network namespaces joined by veth, the link cut mid-job): each node names
 * the other as lost within seconds — node 0 because the other agent's forwarded heartbeats stop, node 1 because
 * the master's ticks stop — and both exit non-zero with that line. Needs root (ip netns), as CI runs; skipped
 * elsewhere, saying so.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeOnTwoHosts, outputAndExit } from './netns.ts';

const BUSY = fileURLToPath(new URL('../fixtures/busy.worker.ts', import.meta.url));

describeOnTwoHosts('a partition between two hosts', 81, ([A, B]) => {
  let tmp: string;
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'kd-partition-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('both nodes report the lost node within 15 s of the cut', async () => {
    const jobFile = join(tmp, 'job.yaml');
    writeFileSync(jobFile, JSON.stringify({ name: 'partition', script: BUSY, comm: { timeout_s: 300 } }));
    const env = { ...process.env, KD_JOB_TOKEN: randomBytes(16).toString('hex') };
    const layout = ['--nnodes', '2', '--nproc', '1', '--master-addr', A.addr, '--run-dir', tmp];
    const nodes = [A, B].map((host, rank) =>
      host.kdLaunch([...layout, '--node-rank', String(rank), '--node-addr', host.addr, jobFile], env),
    );
    const ended = nodes.map(outputAndExit);
    // The job runs once both ranks have reported from inside their all-reduces (busy.worker's round 2).
    let cutAt = 0;
    await new Promise<void>((resolve) => {
      let seen = '';
      nodes[0].stdout?.on('data', (d: Buffer) => {
        seen += d.toString();
        if (!cutAt && /all 2 workers joined/.test(seen)) {
          setTimeout(() => {
            execFileSync('ip', ['-n', B.ns, 'link', 'set', 'dev', B.dev, 'down']);
            cutAt = Date.now();
            resolve();
          }, 2000);
        }
      });
    });
    const [node0, node1] = await Promise.all(ended);
    const took = Date.now() - cutAt;
    expect(took).toBeLessThan(15_000);
    expect(node0.code).not.toBe(0);
    expect(node1.code).not.toBe(0);
    expect(node0.stdout + node0.stderr, node0.stdout + node0.stderr).toMatch(
      /node 1 is lost: no word from its agent for [\d.]+ s \(ranks 1–1\); a network partition or a dead host/,
    );
    expect(node1.stdout + node1.stderr, node1.stdout + node1.stderr).toMatch(
      /node 0 \(the master at 10\.81\.0\.1:\d+\) is lost: no word for [\d.]+ s; a network partition or a dead host/,
    );
  }, 60_000);
});
