/**
 * Slurm's environment read as kd-launch's options (launcher/slurm.ts): the host-list and count parsers, explicit
 * options winning, a bad variable refused in one line naming it, and the real CLI's plan inside a fake allocation.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { expandCounts, expandHostList, withSlurm } from '../../launcher/slurm.ts';

const CLI = fileURLToPath(new URL('../../bin/kd-launch.js', import.meta.url));
const MNIST = fileURLToPath(new URL('../../configs/mnist-train.yaml', import.meta.url));

/** Node 1 of a two-node allocation of 2 tasks per node, as srun's environment has it. */
const ALLOCATION = {
  SLURM_JOB_ID: '1234',
  SLURM_NNODES: '2',
  SLURM_NODEID: '1',
  SLURM_LOCALID: '0',
  SLURM_NTASKS_PER_NODE: '2',
  SLURM_JOB_NODELIST: 'node[01-02]',
};

describe('Slurm host lists', () => {
  it.each([
    ['node01', ['node01']],
    ['node[01-04,07],gpu-a', ['node01', 'node02', 'node03', 'node04', 'node07', 'gpu-a']],
    ['n[8-10]', ['n8', 'n9', 'n10']],
    ['n[098-101]', ['n098', 'n099', 'n100', 'n101']],
    ['a,b[1-2]-ib,c', ['a', 'b1-ib', 'b2-ib', 'c']],
    ['r[1-2]n[1,3]', ['r1n1', 'r1n3', 'r2n1', 'r2n3']],
  ])('%s', (list, hosts) => {
    expect(expandHostList(list)).toEqual(hosts);
  });

  it.each([
    ['node[01-', /never closed/],
    ['node]01', /unbalanced '\]'/],
    ['node[[1]]', /unbalanced '\['/],
    ['node[4-2]', /'4-2' runs backwards/],
    ['node[a-b]', /'a-b' in \[a-b\] is not a number/],
    ['a,,b', /empty host name/],
    ['n[0-999999999]', /more than 65536 hosts/],
    ['r[0-999]n[0-999]', /more than 65536 hosts/],
  ])('%s is refused naming SLURM_JOB_NODELIST', (list, why) => {
    expect(() => expandHostList(list)).toThrow(`SLURM_JOB_NODELIST='${list}'`);
    expect(() => expandHostList(list)).toThrow(why);
  });
});

describe('Slurm per-node counts', () => {
  it.each([
    ['4', [4]],
    ['2,2', [2, 2]],
    ['2(x3)', [2, 2, 2]],
    ['2(x3),1', [2, 2, 2, 1]],
  ])('%s', (value, counts) => {
    expect(expandCounts(value)).toEqual(counts);
  });

  it.each(['two', '2(3)', '2(x)', '2,,2', '-1'])('%s is refused naming the variable', (value) => {
    expect(() => expandCounts(value)).toThrow(`SLURM_NTASKS_PER_NODE='${value}'`);
  });
});

describe('options from Slurm', () => {
  it('outside an allocation nothing changes', () => {
    const options = { nproc: 3 };
    expect(withSlurm(options, { SLURM_NNODES: '2' })).toEqual({ options, note: undefined });
  });

  it('inside one, every option left out comes from Slurm, and one line says so', () => {
    expect(withSlurm({}, ALLOCATION)).toEqual({
      options: { nnodes: 2, nodeRank: 1, nproc: 2, masterAddr: 'node01', nodeAddr: 'node02' },
      note: 'kd-launch: from Slurm job 1234: node 1 of 2, 2 workers per node, master node01',
    });
  });

  it('explicit options win, one by one', () => {
    const { options, note } = withSlurm({ nproc: 4, masterAddr: '10.0.0.1' }, ALLOCATION);
    expect(options).toEqual({ nnodes: 2, nodeRank: 1, nproc: 4, masterAddr: '10.0.0.1', nodeAddr: 'node02' });
    expect(note).toBe('kd-launch: from Slurm job 1234: node 1 of 2');
    // --gpus takes the place of --nproc: Slurm's task count is not added to it.
    expect(withSlurm({ gpus: 2 }, ALLOCATION).options.nproc).toBeUndefined();
  });

  it('an explicit layout needs none of the variables it replaces', () => {
    const given = { nnodes: 2, nodeRank: 0, nproc: 1, masterAddr: 'a', nodeAddr: 'a' };
    expect(withSlurm(given, { SLURM_JOB_ID: '7', SLURM_NODEID: 'x', SLURM_JOB_NODELIST: '[' })).toEqual({
      options: given,
      note: undefined,
    });
  });

  it('a one-node allocation gives the workers only: the job stays on loopback', () => {
    const one = { ...ALLOCATION, SLURM_NNODES: '1', SLURM_NODEID: '0', SLURM_JOB_NODELIST: 'node01' };
    expect(withSlurm({}, one)).toEqual({
      options: { nproc: 2 },
      note: 'kd-launch: from Slurm job 1234: 2 workers per node',
    });
  });

  it('SLURM_JOB_NUM_NODES stands in for SLURM_NNODES', () => {
    const { SLURM_NNODES: _, ...rest } = ALLOCATION;
    expect(withSlurm({}, { ...rest, SLURM_JOB_NUM_NODES: '2' }).options.nnodes).toBe(2);
  });

  it.each([
    [{ SLURM_NNODES: 'two' }, "SLURM_NNODES='two': not a whole number ≥ 1"],
    [{ SLURM_NNODES: undefined }, 'neither SLURM_NNODES nor SLURM_JOB_NUM_NODES'],
    [{ SLURM_NODEID: '2' }, "SLURM_NODEID='2': node 2 of a job of 2 nodes"],
    [{ SLURM_NODEID: undefined }, 'SLURM_NODEID is not set'],
    [{ SLURM_JOB_NODELIST: 'node01' }, "SLURM_JOB_NODELIST='node01': 1 host(s) for a job of 2 nodes"],
    [{ SLURM_NTASKS_PER_NODE: '2(x2),1' }, "SLURM_NTASKS_PER_NODE='2(x2),1': not one task count"],
    [{ SLURM_NTASKS_PER_NODE: '0' }, "SLURM_NTASKS_PER_NODE='0': no task on a node"],
    [{ SLURM_LOCALID: '1' }, 'SLURM_LOCALID=1: srun started more than one kd-launch on this node'],
  ])('%o is refused in one line naming the variable', (change, message) => {
    expect(() => withSlurm({}, { ...ALLOCATION, ...change })).toThrow(message);
  });
});

describe('kd-launch in a Slurm allocation', () => {
  /** The CLI in `slurm`'s environment, none of this process's own Slurm variables leaking in. */
  function kdInSlurm(slurm: Record<string, string>, ...args: string[]) {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SLURM_')));
    const r = spawnSync(process.execPath, [CLI, ...args], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...env, ...slurm, KD_JOB_TOKEN: 'slurm-test-token' },
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  it('--dry-run shows the plan Slurm gives: node 1 of 2, 2 workers each, node01 the master', () => {
    const r = kdInSlurm(ALLOCATION, '--dry-run', '--json', MNIST);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(
      'kd-launch: from Slurm job 1234: node 1 of 2, 2 workers per node, master node01',
    );
    const plan = (JSON.parse(r.stdout.split('\n')[0]) as { plan: Record<string, unknown> }).plan;
    expect(plan).toMatchObject({ nnodes: 2, nodeRank: 1, nprocPerNode: 2, world: 4, master: 'node01:29500' });
  });

  it('a malformed variable is one line naming it, before anything starts', () => {
    const r = kdInSlurm({ ...ALLOCATION, SLURM_JOB_NODELIST: 'node[01-' }, '--dry-run', MNIST);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("kd-launch: SLURM_JOB_NODELIST='node[01-': a '[' is never closed\n");
  });
});
