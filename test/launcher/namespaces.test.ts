/**
 * Two hosts for real: two network namespaces joined by a veth pair, one node of the job in each, and a stranger in
 * the second one that finds the first node's open ports and sprays them with frames forged with the right labels
 * (group, sequence, step, segment, the other node's rank) while the job runs 400 all-reduces of known inputs. CURVE
 * refuses the stranger at the handshake: every all-reduce comes out exact. Needs root (ip netns), as CI runs;
 * skipped elsewhere.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { describeOnTwoHosts, outputAndExit } from './netns.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = fileURLToPath(new URL('../../bin/kd-launch.js', import.meta.url));
const JOB = fileURLToPath(new URL('../fixtures/exact-allreduce.yaml', import.meta.url));

const STRANGER = `
const { Push } = require('zeromq');
const { Packr } = require('msgpackr');
const packr = new Packr({ useRecords: false });
const [host, ...ports] = process.argv.slice(1);
const payload = Buffer.alloc(4096 / 2 * 4, 7);
const sockets = ports.map((p) => { const s = new Push({ linger: 0, sendTimeout: 0 }); s.connect('tcp://' + host + ':' + p); return s; });
(async () => {
  for (let round = 0; ; round++) {
    for (const s of sockets) for (let seq = 0; seq < 400; seq += 7)
      s.send([packr.pack([0, 'world', 'allReduce', seq, round % 2, 0, 1, 'fp32']), payload]).catch(() => {});
    await new Promise((r) => setTimeout(r, 5));
  }
})();
`;

describeOnTwoHosts('two hosts (network namespaces), a stranger on the wire', 78, ([A, B]) => {
  it('CURVE: 400 all-reduces of known inputs are exact while the stranger sprays forged frames', async () => {
    const env = { ...process.env, KD_JOB_TOKEN: randomBytes(16).toString('hex') };
    const common = [
      '--nproc',
      '1',
      '--nnodes',
      '2',
      '--master-addr',
      A.addr,
      '--master-port',
      '29400',
      '--json',
    ];
    const [node0, node1] = [A, B].map((host, rank) =>
      host.kdLaunch([...common, '--node-rank', String(rank), '--node-addr', host.addr, JOB], env),
    );
    const exits = [node0, node1].map(outputAndExit);
    // The stranger: once node 0's worker listens, every open port of node 0's address but the master's.
    let stranger: ChildProcess | undefined;
    for (let i = 0; i < 100 && !stranger; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const listening = execFileSync('ip', A.exec('ss', '-Hltn'), { encoding: 'utf8' })
        .split('\n')
        .map((l) => /10\.78\.0\.1:(\d+)/.exec(l)?.[1])
        .filter((p): p is string => p !== undefined && p !== '29400');
      if (listening.length >= 2) {
        stranger = spawn('ip', B.exec(process.execPath, '-e', STRANGER, A.addr, ...listening), {
          cwd: ROOT,
          stdio: 'ignore',
        });
      }
    }
    expect(stranger).toBeDefined();
    const [out0, out1] = await Promise.all(exits);
    stranger?.kill('SIGKILL');
    expect([out0.code, out1.code], out0.stderr + out1.stderr).toEqual([0, 0]);
    const out = out0.stdout;
    const reports = out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { type: string; wrong?: number })
      .filter((e) => e.type === 'report' && e.wrong !== undefined);
    expect(reports).toHaveLength(2);
    for (const r of reports) expect(r.wrong).toBe(0);
  }, 120_000);
});

describe('the data plane on one node', () => {
  it('under umask 000: the job directory is 0700, its sockets 0600 with unguessable names, another user cannot connect, and nothing is left', async () => {
    const job = fileURLToPath(new URL('../fixtures/ipc-modes.yaml', import.meta.url));
    const cli = spawn(
      'sh',
      ['-c', `umask 000; exec "${process.execPath}" "${CLI}" --nproc 2 --json "${job}"`],
      {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    cli.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const code = await new Promise<number | null>((resolve) => cli.on('close', resolve));
    expect(code).toBe(0);
    const reports = out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map(
        (l) =>
          JSON.parse(l) as {
            type: string;
            dir?: string;
            dirMode?: number;
            socketModes?: number[];
            sockets?: string[];
            otherUser?: string;
          },
      )
      .filter((e) => e.type === 'report' && e.dir !== undefined);
    expect(reports).toHaveLength(2);
    for (const r of reports) {
      expect(r.dirMode).toBe(0o700);
      // One receive socket per rank per worker: 2 × 2, each 0600, each named with 18 random hex digits.
      expect(r.socketModes).toEqual([0o600, 0o600, 0o600, 0o600]);
      for (const s of r.sockets ?? []) expect(s).toMatch(/^[0-9a-f]{18}-\d-from-\d\.sock$/);
      // Another local user (when the test runs as root, as CI does: nobody) is refused by the directory's mode.
      if (process.getuid?.() === 0) expect(r.otherUser).toBe('EACCES');
    }
    expect(existsSync(reports[0].dir as string)).toBe(false);
  }, 60_000);
});
