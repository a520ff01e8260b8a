/**
 * The shared-memory data plane as an operator sees it: ranks on one node use it unless told not to, a rank
 * killed while the others wait on it ends the job within seconds naming it, and nothing is left in /dev/shm.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { JobFailedError } from '../../launcher/errors.ts';
import { launch } from '../../launcher/launch.ts';
import { loadShmBinding } from '../../src/comm/shm-ring.ts';

const BUSY = fileURLToPath(new URL('../fixtures/busy.yaml', import.meta.url));
const COLLECTIVES = fileURLToPath(new URL('../fixtures/collectives.worker.ts', import.meta.url));

const jobDirs = () => new Set(readdirSync('/dev/shm').filter((f) => f.startsWith('kd-launch-')));

/** The ring files a process has mapped (unlinked once their sender's first frame came: "(deleted)"). */
function mappedRings(pid: number, dir: string): string[] {
  return readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .filter((line) => line.includes(`${dir}/`));
}

describe.skipIf(!loadShmBinding().binding || !existsSync('/dev/shm'))(
  'shared memory between the ranks of a node',
  () => {
    it('kill -9 of a worker while the others wait in a shared-memory all-reduce: the job ends naming it, and /dev/shm is clean', async () => {
      const before = jobDirs();
      const handle = launch(BUSY, { nproc: 3 });
      const pids = new Map<number, number>();
      let killed = false;
      let rings: string[] = [];
      // Rank 1's own report carries its last collective: killed before its first status from inside the loop,
      // the launcher would have no collective to name.
      const reported = new Set<number>();
      for await (const e of handle.events) {
        if (e.type === 'worker-started') pids.set(e.rank, e.pid);
        if (e.type === 'report') reported.add(e.rank);
        if (reported.has(0) && reported.has(1) && !killed) {
          const environ = readFileSync(`/proc/${pids.get(0)}/environ`, 'utf8').split('\0');
          const dir = (environ.find((v) => v.startsWith('KD_SHM_DIR=')) ?? '').slice('KD_SHM_DIR='.length);
          rings = mappedRings(pids.get(0)!, dir);
          killed = true;
          process.kill(pids.get(1)!, 'SIGKILL');
        }
      }
      const err = await handle.result.catch((x: unknown) => x);
      // Rank 0 sends into rank 1's ring for it and receives in its own ring for rank 2: both in use, so both
      // files are unlinked already (the memory stays mapped); its ring for rank 1, which never sends to it, not.
      expect(rings.filter((line) => line.endsWith('(deleted)'))).toHaveLength(2);
      expect(err).toBeInstanceOf(JobFailedError);
      expect((err as JobFailedError).failure!.rank).toBe(1);
      expect((err as Error).message).toMatch(/rank 1 .*SIGKILL.*allReduce/);
      expect([...jobDirs()].filter((d) => !before.has(d))).toEqual([]);
    });

    it('a job that finishes leaves nothing in /dev/shm; comm.transport: zmq makes no ring at all', async () => {
      const before = jobDirs();
      for (const transport of ['auto', 'zmq'] as const) {
        const handle = launch(
          { name: 'collectives', script: COLLECTIVES, comm: { transport } },
          { nproc: 2 },
        );
        let environ: string[] = [];
        for await (const e of handle.events) {
          if (e.type === 'worker-started' && environ.length === 0)
            environ = readFileSync(`/proc/${e.pid}/environ`, 'utf8').split('\0');
        }
        await handle.result;
        const shmDir = environ.find((v) => v.startsWith('KD_SHM_DIR='));
        expect(shmDir !== undefined, transport).toBe(transport === 'auto');
      }
      expect([...jobDirs()].filter((d) => !before.has(d))).toEqual([]);
    });
  },
);
