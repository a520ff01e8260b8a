import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import { expectReferenceResults } from './collective-reference.ts';

const JOB = fileURLToPath(new URL('../fixtures/collectives.yaml', import.meta.url));

describe('two nodes on one machine (tcp data plane, one rendezvous)', () => {
  beforeEach(() => {
    process.env['KD_JOB_TOKEN'] = 'test-secret';
  });
  afterEach(() => {
    delete process.env['KD_JOB_TOKEN'];
  });

  it('node 0 and node 1 form one world of 4 whose every collective equals the single-process reference', async () => {
    const port = 29_000 + Math.floor(Math.random() * 1000);
    const common = { nproc: 2, nnodes: 2, masterAddr: '127.0.0.1', masterPort: port };
    const node0 = launch(JOB, { ...common, nodeRank: 0 });
    const node1 = launch(JOB, { ...common, nodeRank: 1 });
    const [r0] = await Promise.all([node0.result, node1.result]);
    // Ranks 0–1 and 2–3 share memory, 1 → 2 and 3 → 0 cross over tcp: both planes in one ring.
    expectReferenceResults(r0.reports, 4);
  });

  it('refuses a multi-node job without a shared KD_JOB_TOKEN', () => {
    delete process.env['KD_JOB_TOKEN'];
    expect(() => launch(JOB, { nproc: 1, nnodes: 2, masterAddr: '127.0.0.1' })).toThrow(/KD_JOB_TOKEN/);
  });
});
