/**
 * The directory of kd-launch's package.json, found by walking up from this file: the same whether the code runs
 * from its TypeScript sources (src/base/) or compiled (dist/src/base/), so that the native bindings, the proto file
 * and the worker entry are found either way.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (
      existsSync(manifest) &&
      (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'kd-launch'
    ) {
      return dir;
    }
    if (dirname(dir) === dir) throw new Error(`kd-launch: no package.json of kd-launch above ${from}`);
  }
}

export const PACKAGE_ROOT = findRoot(dirname(fileURLToPath(import.meta.url)));

/** Whether this copy runs compiled (from dist/, plain Node) rather than from its TypeScript sources (under tsx). */
export const COMPILED = import.meta.url.endsWith('.js');

/** kd-launch's version, from its package.json. */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string })
    .version;
}
