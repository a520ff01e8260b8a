/**
 * Slurm's environment as kd-launch's options. Inside an allocation (`SLURM_JOB_ID` set), torchrun and Accelerate
 * users expect the node layout to come from Slurm rather than be typed again on every node, so each option the
 * user did not give is read from Slurm's documented output variables:
 *
 *   --nnodes       SLURM_NNODES (or SLURM_JOB_NUM_NODES)
 *   --node-rank    SLURM_NODEID
 *   --master-addr  the first host of SLURM_JOB_NODELIST (node 0 is the allocation's first node)
 *   --node-addr    this node's host in SLURM_JOB_NODELIST: the name the other nodes reach it by
 *   --nproc        SLURM_NTASKS_PER_NODE, the job's --ntasks-per-node: a Slurm task is a kd-launch worker
 *
 * Not derived: --gpus (Slurm's GPU variables count devices, not the workers a job wants) and --master-port
 * (29500, as torchrun). kd-launch runs once per node and starts the workers itself, so a second kd-launch that
 * srun started on the same node (SLURM_LOCALID > 0) is refused instead of joining as a duplicate node.
 */
import { LaunchError } from './errors.ts';
import type { LaunchOptions } from './launch.ts';

export type Env = Readonly<Record<string, string | undefined>>;

const NODELIST = 'SLURM_JOB_NODELIST';

/** Bounds a host list's or a count list's expansion: a typo like `n[0-999999999]` must not fill the memory. */
const MAX_EXPANDED = 65_536;

/** One line naming the variable, its value and what is wrong with it. */
function malformed(variable: string, value: string, why: string): LaunchError {
  return new LaunchError(`${variable}='${value}': ${why}`);
}

const tooManyHosts = (list: string) => malformed(NODELIST, list, `more than ${MAX_EXPANDED} hosts`);

/** Splits on commas outside brackets: `node[01-04,07],gpu-a` → `node[01-04,07]`, `gpu-a`. */
function topLevelItems(list: string): string[] {
  const items: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < list.length; i++) {
    const c = list[i];
    if (c === '[') depth++;
    else if (c === ']') depth--;
    if (depth < 0 || depth > 1) throw malformed(NODELIST, list, `unbalanced '${c}' at character ${i + 1}`);
    if (c === ',' && depth === 0) {
      items.push(list.slice(start, i));
      start = i + 1;
    }
  }
  if (depth !== 0) throw malformed(NODELIST, list, "a '[' is never closed");
  items.push(list.slice(start));
  if (items.some((item) => item === '')) throw malformed(NODELIST, list, 'an empty host name');
  return items;
}

/** `01-04,07` → `01 02 03 04 07`: zero padding kept to the width of each range's first bound, as Slurm writes it. */
function expandRanges(ranges: string, list: string): string[] {
  const out: string[] = [];
  for (const range of ranges.split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(range);
    if (!m)
      throw malformed(NODELIST, list, `'${range}' in [${ranges}] is not a number or a range like 01-04`);
    const [lo, hi] = [Number(m[1]), Number(m[2] ?? m[1])];
    if (hi < lo) throw malformed(NODELIST, list, `the range '${range}' runs backwards`);
    if (out.length + hi - lo + 1 > MAX_EXPANDED) throw tooManyHosts(list);
    for (let n = lo; n <= hi; n++) out.push(String(n).padStart(m[1].length, '0'));
  }
  return out;
}

/**
 * Slurm's compressed host list, expanded in Slurm's order: `node[01-04,07],gpu-a` → node01 … node04, node07,
 * gpu-a; several brackets in one name (`r[1-2]n[1-2]`) expand as a product, the first bracket outermost.
 */
export function expandHostList(list: string): string[] {
  const hosts: string[] = [];
  for (const item of topLevelItems(list.trim())) {
    let names = [''];
    for (const part of item.split(/(\[[^\]]*\])/)) {
      const values = part.startsWith('[') ? expandRanges(part.slice(1, -1), list) : [part];
      if (names.length * values.length > MAX_EXPANDED) throw tooManyHosts(list);
      names = names.flatMap((name) => values.map((v) => name + v));
    }
    hosts.push(...names);
  }
  if (hosts.length > MAX_EXPANDED) throw tooManyHosts(list);
  return hosts;
}

/** Slurm's per-node counts: `2(x3),1` → 2, 2, 2, 1; `2,2`; `4`. */
export function expandCounts(value: string): number[] {
  const counts: number[] = [];
  for (const item of value.trim().split(',')) {
    const m = /^(\d+)(?:\(x(\d+)\))?$/.exec(item);
    if (!m) throw malformed('SLURM_NTASKS_PER_NODE', value, `'${item}' is not a count like 2 or 2(x3)`);
    const repeat = Number(m[2] ?? 1);
    if (counts.length + repeat > MAX_EXPANDED)
      throw malformed('SLURM_NTASKS_PER_NODE', value, `more than ${MAX_EXPANDED} nodes`);
    for (let i = 0; i < repeat; i++) counts.push(Number(m[1]));
  }
  return counts;
}

function wholeNumber(env: Env, variable: string, min: number): number | undefined {
  const value = env[variable];
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value.trim()) || Number(value) < min)
    throw malformed(variable, value, min === 0 ? 'not a whole number' : `not a whole number ≥ ${min}`);
  return Number(value);
}

function nodeCount(env: Env): number {
  const n = wholeNumber(env, 'SLURM_NNODES', 1) ?? wholeNumber(env, 'SLURM_JOB_NUM_NODES', 1);
  if (n === undefined)
    throw new LaunchError(
      'SLURM_JOB_ID is set but neither SLURM_NNODES nor SLURM_JOB_NUM_NODES is: pass --nnodes',
    );
  return n;
}

function nodeId(env: Env, nnodes: number): number {
  const id = wholeNumber(env, 'SLURM_NODEID', 0);
  if (id === undefined)
    throw new LaunchError(
      `SLURM_NODEID is not set for a job of ${nnodes} nodes: start kd-launch with srun, once per node (or pass --node-rank)`,
    );
  if (id >= nnodes) throw malformed('SLURM_NODEID', String(id), `node ${id} of a job of ${nnodes} nodes`);
  return id;
}

/** The workers per node: the same on every node, as kd-launch's ranks (node × nproc + local) need. */
function tasksPerNode(env: Env, nnodes: number): number | undefined {
  const value = env['SLURM_NTASKS_PER_NODE'];
  if (value === undefined) return undefined;
  const counts = expandCounts(value);
  if (counts.some((c) => c !== counts[0]) || (counts.length > 1 && counts.length !== nnodes))
    throw malformed(
      'SLURM_NTASKS_PER_NODE',
      value,
      `not one task count for each of the ${nnodes} nodes, and kd-launch runs as many workers on every node: pass --nproc`,
    );
  if (counts[0] < 1) throw malformed('SLURM_NTASKS_PER_NODE', value, 'no task on a node');
  return counts[0];
}

/** Node 0's host and this node's, from the allocation's node list. */
function hostsOf(env: Env, nnodes: number, nodeRank: number): { master: string; self: string } {
  const list = env[NODELIST];
  if (list === undefined)
    throw new LaunchError('SLURM_JOB_NODELIST is not set: pass --master-addr and --node-addr');
  const hosts = expandHostList(list);
  if (hosts.length < nnodes)
    throw malformed(NODELIST, list, `${hosts.length} host(s) for a job of ${nnodes} nodes`);
  return { master: hosts[0], self: hosts[nodeRank] };
}

/** The options with those the user left out filled from Slurm, and the line that says so (none outside Slurm). */
export function withSlurm(
  options: LaunchOptions,
  env: Env,
): { options: LaunchOptions; note: string | undefined } {
  const jobId = env['SLURM_JOB_ID'];
  if (!jobId) return { options, note: undefined };
  const localId = wholeNumber(env, 'SLURM_LOCALID', 0);
  if (localId !== undefined && localId > 0)
    throw new LaunchError(
      `SLURM_LOCALID=${localId}: srun started more than one kd-launch on this node; kd-launch runs once per node and starts the workers itself (srun --ntasks=$SLURM_NNODES)`,
    );
  const filled: LaunchOptions = { ...options };
  const said: string[] = [];
  const nnodes = options.nnodes ?? nodeCount(env);
  if (options.nproc === undefined && options.gpus === undefined) {
    filled.nproc = tasksPerNode(env, nnodes);
    if (filled.nproc !== undefined)
      said.push(`${filled.nproc} worker${filled.nproc === 1 ? '' : 's'} per node`);
  }
  // One node needs no addresses: the job stays on loopback and socket files, as outside Slurm.
  if (nnodes > 1) {
    filled.nnodes = nnodes;
    filled.nodeRank = options.nodeRank ?? nodeId(env, nnodes);
    if (options.nnodes === undefined || options.nodeRank === undefined)
      said.unshift(`node ${filled.nodeRank} of ${nnodes}`);
    if (options.masterAddr === undefined || options.nodeAddr === undefined) {
      const hosts = hostsOf(env, nnodes, filled.nodeRank);
      filled.masterAddr ??= hosts.master;
      filled.nodeAddr ??= hosts.self;
      if (options.masterAddr === undefined) said.push(`master ${hosts.master}`);
    }
  }
  return {
    options: filled,
    note: said.length > 0 ? `kd-launch: from Slurm job ${jobId}: ${said.join(', ')}` : undefined,
  };
}
