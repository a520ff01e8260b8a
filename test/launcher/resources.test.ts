/**
 * A job that does not fit this node's memory is refused before any worker starts, in one line with the numbers,
 * instead of dying later as `killed by SIGKILL` or wasm's `memory access out of bounds` (issue 16, point 4).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { LaunchError } from '../../launcher/errors.ts';
import { launch } from '../../launcher/launch.ts';
import { formatPlan } from '../../launcher/plan.ts';
import {
  estimateWorkerMemory,
  memoryRefusal,
  nodeMemory,
  type SystemFileReader,
  WORKER_RUNTIME_BYTES,
  type WorkerMemory,
} from '../../launcher/resources.ts';
import { validateJob } from '../../src/config/load.ts';
import { estimateMemory } from '../../src/engine/memory-estimate.ts';

const GiB = 2 ** 30;
const CLI = fileURLToPath(new URL('../../bin/kd-launch.js', import.meta.url));

function kd(...args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
}

/** A reader of a fake /proc and /sys: the files given, nothing else. */
const files =
  (map: Record<string, string>): SystemFileReader =>
  (path) =>
    map[path];

const MEMINFO = 'MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8283750 kB\n';

/** An estimate whose parts add up to `total` GiB, `tensors` GiB of them in tensors. */
function estimate(total: number, tensors = 1): WorkerMemory {
  return {
    runtime: 0.1 * GiB,
    data: 0.1 * GiB,
    modelStates: (total - 0.3) * GiB,
    inFlight: 0,
    activations: 0.1 * GiB,
    total: total * GiB,
    tensors: tensors * GiB,
    notCounted: [],
  };
}

describe("this node's memory, read through an injected reader", () => {
  it('is MemAvailable when no cgroup limits the process', () => {
    const node = nodeMemory(files({ '/proc/meminfo': MEMINFO, '/proc/self/cgroup': '0::/\n' }));
    expect(node.available).toBe(8283750 * 1024);
    expect(node.source).toBe('MemAvailable; cgroup limit none');
  });

  it("'max' in cgroup v2's memory.max is no limit", () => {
    const node = nodeMemory(
      files({
        '/proc/meminfo': MEMINFO,
        '/proc/self/cgroup': '0::/job\n',
        '/sys/fs/cgroup/job/memory.max': 'max\n',
        '/sys/fs/cgroup/job/memory.current': '1000\n',
      }),
    );
    expect(node.available).toBe(8283750 * 1024);
  });

  it('a cgroup v2 limit below MemAvailable binds: limit minus what is in use, less its reclaimable cache', () => {
    const node = nodeMemory(
      files({
        '/proc/meminfo': MEMINFO,
        '/proc/self/cgroup': '0::/slice/job\n',
        '/sys/fs/cgroup/slice/job/memory.max': `${4 * GiB}\n`,
        '/sys/fs/cgroup/slice/job/memory.current': `${1.5 * GiB}\n`,
        '/sys/fs/cgroup/slice/job/memory.stat': `anon 1\ninactive_file ${0.5 * GiB}\nactive_file 7\n`,
        // A parent's looser limit does not widen the child's.
        '/sys/fs/cgroup/slice/memory.max': `${6 * GiB}\n`,
        '/sys/fs/cgroup/slice/memory.current': `${2 * GiB}\n`,
      }),
    );
    expect(node.available).toBe(3 * GiB);
    expect(node.source).toBe('cgroup v2 limit 4.0 GiB, 1.0 GiB in use; MemAvailable 7.9 GiB');
  });

  it('a cgroup v1 limit binds; its "no limit" (2^63 rounded to pages) does not', () => {
    const v1 = (limit: string) =>
      nodeMemory(
        files({
          '/proc/meminfo': MEMINFO,
          '/proc/self/cgroup': '5:cpu:/\n4:memory:/docker/abc\n0::/\n',
          '/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes': limit,
          '/sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes': `${GiB}\n`,
        }),
      );
    expect(v1(`${2 * GiB}\n`).available).toBe(GiB);
    expect(v1(`${2 * GiB}\n`).source).toMatch(/^cgroup v1 limit 2\.0 GiB, 1\.0 GiB in use/);
    expect(v1('9223372036854771712\n').available).toBe(8283750 * 1024);
  });

  it("a container without its own cgroup namespace: the host's path is absent, the mount's root is its cgroup", () => {
    const node = nodeMemory(
      files({
        '/proc/meminfo': MEMINFO,
        '/proc/self/cgroup': '0::/system.slice/docker-abc.scope\n',
        '/sys/fs/cgroup/memory.max': `${2 * GiB}\n`,
        '/sys/fs/cgroup/memory.current': `${0.5 * GiB}\n`,
      }),
    );
    expect(node.available).toBe(1.5 * GiB);
  });
});

describe('the refusal', () => {
  const node = { available: 7.9 * GiB, source: 'MemAvailable; cgroup limit none' };

  it('multiplies the per-worker estimate by the workers on this node, and names memory, the numbers and remedies', () => {
    const line = memoryRefusal(estimate(6.3), 2, node, false);
    expect(line).toMatch(
      /^the job needs ~6\.3 GiB of memory per worker \(runtime 102 MiB \+ data 102 MiB \+ model states 6\.0 GiB \+ in flight 0 MiB \+ activations 102 MiB\) × 2 workers = 12\.6 GiB, but this node has 7\.9 GiB available \(MemAvailable; cgroup limit none\): lower the micro-batch, use zero_optimization\.stage 3, or fewer workers per node/,
    );
    expect(line).toContain('--no-memory-check');
    expect(line?.split('\n')).toHaveLength(1);
  });

  it('lets a job that fits start', () => {
    expect(memoryRefusal(estimate(3.9), 2, node, false)).toBeUndefined();
  });

  it("on wasm, a worker's tensors above 4 GiB are refused whatever the node has", () => {
    const huge = { available: 1000 * GiB, source: 'MemAvailable; cgroup limit none' };
    expect(memoryRefusal(estimate(6.3, 4.5), 1, huge, true)).toMatch(
      /of which 4\.5 GiB in tensors, which exceeds the wasm backend's 4 GiB per worker: .*backend: tensorflow/,
    );
    // The tensorflow and cpu backends have no such cap.
    expect(memoryRefusal(estimate(6.3, 4.5), 1, huge, false)).toBeUndefined();
  });
});

describe('the per-worker estimate', () => {
  const raw = {
    name: 'estimate',
    backend: 'cpu',
    model: { type: 'mlp', layers: [784, 1000, 10] },
    data: { dataset: 'mnist' },
    optimizer: { type: 'Adam', params: { lr: 0.001 } },
    train_micro_batch_size_per_gpu: 64,
    steps: 10,
  };
  const job = validateJob(raw);
  const m = estimateWorkerMemory(job, 2, process.cwd());
  const parameters = 784 * 1000 + 1000 + 1000 * 10 + 10;

  it("adds the runtime, the data, memoryPlan's model states, 3 parameter copies in flight and the activations", () => {
    if (!m) throw new Error('no estimate');
    const states = estimateMemory({ parameters, largestPair: parameters }, 2, 0, job.optimizer!);
    expect(m.runtime).toBe(WORKER_RUNTIME_BYTES);
    expect(m.data).toBe(10_000 * 784 * 12); // MNIST's values, parsed beside their fp32 set
    expect(m.modelStates).toBe(states.params + states.grads + states.optimizer);
    expect(m.inFlight).toBe(3 * parameters * 4);
    // Evaluation's forward of 512 test samples (4 B per value) outweighs 64 training samples (24 B per value).
    expect(m.activations).toBe(512 * (784 + 1000 + 10) * 4);
    expect(m.total).toBe(m.runtime + m.data + m.modelStates + m.inFlight + m.activations);
    expect(m.notCounted).toEqual([]);
  });

  it('counts one copy of the parameters fewer on wasm, whose forward tensors are views of the flat copy', () => {
    const wasm = estimateWorkerMemory(validateJob({ ...raw, backend: 'wasm' }), 2, process.cwd());
    if (!m || !wasm) throw new Error('no estimate');
    expect(m.modelStates - wasm.modelStates).toBe(parameters * 4);
  });

  it('is shown by --dry-run, with what this node has', () => {
    const plan = launch(raw, { nproc: 2, dryRun: true }).plan;
    expect(formatPlan(plan)).toMatch(
      /^workers {4}~\d+ MiB each \(runtime 140 MiB \+ data 90 MiB \+ .*\) × 2 on this node = .* available \(/m,
    );
  });
});

describe('a job too large for the node, through launch() and the CLI', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kd-resources-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  // 662 M parameters: Adam's two buffers alone are 4.9 GiB per worker at ZeRO 0. Nothing may allocate them.
  const large = {
    name: 'large',
    model: { type: 'mlp', layers: [784, 18_000, 18_000, 18_000, 10] },
    data: { dataset: 'mnist' },
    optimizer: { type: 'Adam', params: { lr: 0.001 } },
    train_micro_batch_size_per_gpu: 32,
    steps: 10,
  };

  /** What launch() throws for `job`, and how long it took. */
  function refusal(job: Record<string, unknown>, nproc: number, dryRun: boolean) {
    const t0 = performance.now();
    try {
      launch(job, { nproc, dryRun }).abort('test: expected a refusal');
    } catch (err) {
      return { err, ms: performance.now() - t0 };
    }
    throw new Error('launch() accepted the job');
  }

  it('is refused on the wasm backend (its 4 GiB heap), before any worker starts, in a second or two', () => {
    const { err, ms } = refusal({ ...large, backend: 'wasm' }, 2, false);
    expect(err).toBeInstanceOf(LaunchError);
    const message = (err as Error).message;
    expect(message.split('\n')).toHaveLength(1);
    expect(message).toMatch(/of memory per worker .* exceeds the wasm backend's 4 GiB per worker/);
    expect(ms).toBeLessThan(2000);
  });

  it("is refused on the cpu backend when the node's memory cannot hold its workers, in a dry run as well", () => {
    // 16 workers of ~20 GiB: more than any machine the tests run on.
    const { err, ms } = refusal({ ...large, backend: 'cpu' }, 16, true);
    expect(err).toBeInstanceOf(LaunchError);
    expect((err as Error).message).toMatch(
      /^the job needs ~\d+\.\d GiB of memory per worker \(.*\) × 16 workers = \d+\.\d GiB, but this node has \d+\.\d GiB available \(/,
    );
    expect(ms).toBeLessThan(2000);
  });

  it('starts anyway with memoryCheck: false (--no-memory-check), the estimate in its plan', () => {
    const plan = launch({ ...large, backend: 'cpu' }, { nproc: 16, dryRun: true, memoryCheck: false }).plan;
    expect(plan.resources?.perWorker.total).toBeGreaterThan(20 * GiB);
  });

  it('the CLI exits 2 with one line on stderr and no stack', () => {
    const file = join(dir, 'large.yaml');
    writeFileSync(file, `${JSON.stringify({ ...large, backend: 'wasm' })}\n`);
    const r = kd('--nproc', '2', file);
    expect(r.status, r.stderr).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(
      /^kd-launch: the job needs ~\d+\.\d GiB of memory per worker .*wasm backend's 4 GiB/,
    );
    expect(r.stderr).not.toMatch(/^\s+at /m);
    // The operator who knows better: --no-memory-check (here with --dry-run, which then prints the estimate).
    const anyway = kd('--nproc', '2', '--no-memory-check', '--dry-run', file);
    expect(anyway.status, anyway.stderr).toBe(0);
    // ~2.5 GiB less than on cpu: wasm's forward tensors are views of the flat copy of the parameters.
    expect(anyway.stdout).toMatch(/^workers {4}~17\.\d GiB each \(/m);
  });
});
