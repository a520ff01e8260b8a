/**
 * docker-compose.yml and its Dockerfile, kept runnable without an engine to run them on: the compose client's own
 * `config` resolves the file (skipped, saying why, where no compose client exists), and its two services run the
 * commands the README documents; the Dockerfile copies, before `npm ci`, everything that npm ci's own scripts read
 * (native/build.mjs, and `prepare`'s tsc -p tsconfig.build.json).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** `docker compose` (the plugin) or `docker-compose` (Debian's package), whichever answers. */
function composeClient(): string[] | undefined {
  return [['docker', 'compose'], ['docker-compose']].find(
    ([cmd, ...sub]) => spawnSync(cmd, [...sub, 'version'], { stdio: 'ignore' }).status === 0,
  );
}

/** The README's `nodeK: kd-launch …` lines: each compose service and the arguments its kd-launch gets. */
function documentedServices(): Record<string, string[]> {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const lines = [...readme.matchAll(/^(node\d): kd-launch (.+)$/gm)];
  return Object.fromEntries(lines.map(([, service, args]) => [service, args.trim().split(/\s+/)]));
}

const client = composeClient();

describe.skipIf(!client)(
  `docker-compose.yml${client ? '' : ' (skipped: no compose client, neither docker compose nor docker-compose)'}`,
  () => {
    const config = (env: NodeJS.ProcessEnv) =>
      spawnSync(client![0], [...client!.slice(1), '-f', 'docker-compose.yml', 'config'], {
        cwd: ROOT,
        encoding: 'utf8',
        env,
      });

    it('resolves, and its two services run the commands the README documents', () => {
      // NPROC empty: the file's default (2 workers per node), whatever this shell exports.
      const r = config({ ...process.env, KD_JOB_TOKEN: 'compose-test-token', NPROC: '' });
      expect(r.status, r.stderr).toBe(0);
      const { services } = parse(r.stdout) as {
        services: Record<string, { command: string[]; environment: Record<string, string> }>;
      };
      const documented = documentedServices();
      expect(Object.keys(documented)).toEqual(['node0', 'node1']);
      expect(Object.keys(services).sort()).toEqual(Object.keys(documented));
      for (const [name, args] of Object.entries(documented)) {
        expect(services[name].command, name).toEqual(args);
        expect(services[name].environment['KD_JOB_TOKEN']).toBe('compose-test-token');
      }
    });

    it('refuses to resolve without KD_JOB_TOKEN, saying so', () => {
      const { KD_JOB_TOKEN: _, ...env } = process.env;
      const r = config(env);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/set KD_JOB_TOKEN to the same secret for every node/);
    });
  },
);

describe('Dockerfile', () => {
  const lines = readFileSync(join(ROOT, 'Dockerfile'), 'utf8').split('\n');
  const copied = (upTo: number) =>
    lines
      .slice(0, upTo)
      .filter((l) => l.startsWith('COPY '))
      .flatMap((l) => l.split(/\s+/).slice(1, -1));

  it('copies files that exist', () => {
    for (const source of copied(lines.length).filter((s) => s !== '.')) {
      expect(existsSync(join(ROOT, source)), source).toBe(true);
    }
  });

  it('copies before npm ci what its install and prepare scripts read', () => {
    const npmCi = lines.findIndex((l) => /^RUN .*npm ci\b/.test(l));
    expect(npmCi).toBeGreaterThan(0);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    expect(pkg.scripts['install']).toBe('node native/build.mjs');
    expect(pkg.scripts['prepare']).toBe('tsc -p tsconfig.build.json');
    // tsconfig.build.json is JSON with comment lines.
    const text = readFileSync(join(ROOT, 'tsconfig.build.json'), 'utf8').replace(/^\s*\/\/.*$/gm, '');
    const build = JSON.parse(text) as {
      extends: string;
      include: string[];
    };
    const needed = [
      'package.json',
      'package-lock.json',
      'native',
      'tsconfig.build.json',
      build.extends,
      ...build.include,
    ];
    const before = copied(npmCi).map((s) => s.replace(/^\.\//, ''));
    for (const path of needed) expect(before, path).toContain(path.replace(/^\.\//, ''));
  });
});
