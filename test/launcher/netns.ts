/**
 * Two hosts for real on one machine: two network namespaces joined by a veth pair, 10.S.0.1 and 10.S.0.2, for the
 * suites that run one kd-launch per host. Making namespaces needs root (as CI runs); elsewhere those suites skip
 * with `NAMESPACES_UNAVAILABLE` as their reason.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = fileURLToPath(new URL('../../bin/kd-launch.js', import.meta.url));

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });

function canMakeNamespaces(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    ip('netns', 'list');
    return true;
  } catch {
    return false;
  }
}

export interface Host {
  /** The namespace's name. */
  ns: string;
  /** Its address on the veth link, and the link's device on its side. */
  addr: string;
  dev: string;
  /** `cmd args` run in this host's namespace, as `ip` arguments (spawn('ip', host.exec(…))). */
  exec(cmd: string, ...args: string[]): string[];
  /** kd-launch on this host, from the repository root, its output piped. */
  kdLaunch(args: string[], env: NodeJS.ProcessEnv): ChildProcess;
}

/** Two hosts on subnet 10.`subnet`.0.0/24 (one subnet per suite), made before the suite's tests, removed after. */
function useTwoHosts(subnet: number): [Host, Host] {
  const tag = randomBytes(3).toString('hex');
  const devs = [`va-${tag}`, `vb-${tag}`];
  const hosts = (['a', 'b'] as const).map((side, i): Host => {
    const ns = `kd-${side}-${tag}`;
    const exec = (cmd: string, ...args: string[]) => ['netns', 'exec', ns, cmd, ...args];
    return {
      ns,
      addr: `10.${subnet}.0.${i + 1}`,
      dev: devs[i],
      exec,
      kdLaunch: (args, env) =>
        spawn('ip', exec(process.execPath, CLI, ...args), {
          env,
          cwd: ROOT,
          stdio: ['ignore', 'pipe', 'pipe'],
        }),
    };
  }) as [Host, Host];
  beforeAll(() => {
    for (const h of hosts) ip('netns', 'add', h.ns);
    const [a, b] = hosts.map((h) => h.ns);
    ip(...`link add ${devs[0]} netns ${a} type veth peer name ${devs[1]} netns ${b}`.split(' '));
    hosts.forEach((h, i) => {
      ip('-n', h.ns, 'addr', 'add', `${h.addr}/24`, 'dev', devs[i]);
      ip('-n', h.ns, 'link', 'set', 'lo', 'up');
      ip('-n', h.ns, 'link', 'set', devs[i], 'up');
    });
  });
  afterAll(() => {
    for (const h of hosts) {
      try {
        ip('netns', 'del', h.ns);
      } catch {}
    }
  });
  return hosts;
}

/**
 * A suite of tests on two hosts: `body` gets them. Where namespaces cannot be made the suite is skipped, its title
 * saying why.
 */
export function describeOnTwoHosts(title: string, subnet: number, body: (hosts: [Host, Host]) => void): void {
  const runs = canMakeNamespaces();
  const why = 'skipped: needs root and ip netns (network namespaces), as CI has';
  describe.skipIf(!runs)(runs ? title : `${title} (${why})`, () => body(useTwoHosts(subnet)));
}

/** Everything `child` writes to stdout and stderr, and its exit code, once it closes. */
export function outputAndExit(
  child: ChildProcess,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}
