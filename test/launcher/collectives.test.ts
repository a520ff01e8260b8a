import { fileURLToPath } from 'node:url';
import { describe, it } from 'vitest';
import { launch } from '../../launcher/launch.ts';
import { expectReferenceResults } from './collective-reference.ts';

const JOB = fileURLToPath(new URL('../fixtures/collectives.yaml', import.meta.url));

describe.each([1, 2, 3, 4])('collectives over %i real worker processes', (world) => {
  it('match a single-process reference for every op, wire dtype and odd length', async () => {
    const { reports } = await launch(JOB, { nproc: world }).result;
    expectReferenceResults(reports, world);
  });
});
