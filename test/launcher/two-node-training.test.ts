/**
 * A training job on two hosts as a cluster runs it: two network namespaces joined by veth, one kd-launch per host
 * (node 0 the master, the job token in the environment, each node's own address for the data plane), 2 nodes × 2
 * ranks. Its trained weights are the same bytes as the same job's at world 4 on one node: the ranks, their samples
 * and the ring's order of sums are the same, only the transport differs (tcp with CURVE between the hosts, socket
 * files on one). Needs root (ip netns), as CI runs; skipped elsewhere, saying so.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import { WEIGHTS_BIN } from '../../src/models/save.ts';
import { describeOnTwoHosts, outputAndExit } from './netns.ts';

/** A few seconds of training: MLP 784-32-10 on MNIST, 10 steps of global batch 32. */
const JOB = {
  name: 'two-node-training',
  backend: 'cpu',
  seed: 11,
  model: { type: 'mlp', layers: [784, 32, 10], dropout: 0 },
  data: { dataset: 'mnist', shuffle: true },
  train_micro_batch_size_per_gpu: 8,
  optimizer: { type: 'Adam', params: { lr: 0.002 } },
  steps: 10,
  steps_per_print: 1000,
};

describeOnTwoHosts('a training job on two hosts (network namespaces)', 79, ([A, B]) => {
  let tmp: string;
  beforeAll(() => {
    tmp = mkdtempSync(join(tmpdir(), 'kd-two-node-'));
  });
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('2 nodes × 2 ranks train the same weights as world 4 on one node, to the bit', async () => {
    // The job as a file, as each node's kd-launch reads it (JSON is YAML); rank 0, on node 0, writes the model.
    const jobFile = join(tmp, 'job.yaml');
    writeFileSync(jobFile, JSON.stringify({ ...JOB, output_dir: join(tmp, 'two-nodes') }));
    const env = { ...process.env, KD_JOB_TOKEN: randomBytes(16).toString('hex') };
    const layout = ['--nnodes', '2', '--nproc', '2', '--master-addr', A.addr];
    const nodes = [A, B].map((host, rank) =>
      host.kdLaunch([...layout, '--node-rank', String(rank), '--node-addr', host.addr, jobFile], env),
    );
    const [node0, node1] = await Promise.all(nodes.map(outputAndExit));
    expect([node0.code, node1.code], node0.stderr + node1.stderr).toEqual([0, 0]);
    expect(node0.stdout).toMatch(/2 × 2 CPU workers = world 4; this is node 0/);

    await launch({ ...JOB, output_dir: join(tmp, 'one-node') }, { nproc: 4 }).result;
    const weights = (run: string) => readFileSync(join(tmp, run, WEIGHTS_BIN));
    expect(weights('two-nodes').length).toBe((784 * 32 + 32 + 32 * 10 + 10) * 4);
    expect(weights('two-nodes').equals(weights('one-node'))).toBe(true);
  }, 120_000);

  it('kill -9 of a worker on node 1 with --max-restarts 1: both agents restart theirs, the weights stay the same', async () => {
    // Long enough to be killed in: 40 steps with a checkpoint every 5, each save slowed by the test hook.
    const job = { ...JOB, steps: 40, checkpoint: { dir: join(tmp, 'ckpt'), every_steps: 5 } };
    const jobFile = join(tmp, 'restart.yaml');
    writeFileSync(jobFile, JSON.stringify({ ...job, output_dir: join(tmp, 'restarted') }));
    const env = {
      ...process.env,
      KD_JOB_TOKEN: randomBytes(16).toString('hex'),
      KD_TEST_CHECKPOINT_WRITE_DELAY_MS: '300',
    };
    const layout = ['--nnodes', '2', '--nproc', '2', '--master-addr', A.addr, '--max-restarts', '1'];
    // Node 1 gives no --node-addr: it finds its own address on the route to the master.
    const node0 = A.kdLaunch([...layout, '--node-rank', '0', '--node-addr', A.addr, jobFile], env);
    const node1 = B.kdLaunch([...layout, '--node-rank', '1', '--json', jobFile], env);
    const ended = [node0, node1].map(outputAndExit);
    let killed = false;
    let lines = '';
    node1.stdout?.on('data', (d: Buffer) => {
      lines += d.toString();
      const started = /"type":"worker-started","rank":3,"pid":(\d+)/.exec(lines);
      if (started && !killed) {
        killed = true;
        setTimeout(() => process.kill(Number(started[1]), 'SIGKILL'), 3000);
      }
    });
    const [r0, r1] = await Promise.all(ended);
    expect([r0.code, r1.code], r0.stdout + r0.stderr + r1.stderr).toEqual([0, 0]);
    expect(r0.stdout).toMatch(
      /restarting the job \(restart 1 of 1\) after: rank 3 \(node 1\) was killed by SIGKILL/,
    );
    expect(r1.stdout).toMatch(/"type":"restart","round":1,"maxRestarts":1/);

    await launch({ ...job, checkpoint: undefined, output_dir: join(tmp, 'straight') }, { nproc: 4 }).result;
    const weights = (run: string) => readFileSync(join(tmp, run, WEIGHTS_BIN));
    expect(weights('restarted').equals(weights('straight'))).toBe(true);
  }, 180_000);
});
