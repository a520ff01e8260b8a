/**
 * Imports a module of the user's own (a worker script, a model built in code), TypeScript included: under the
 * sources tsx already compiles it; in a compiled (plain Node) process tsx is registered once, on the first
 * TypeScript file, and compiles it on load. Both of tsx's hooks: a `.ts` in a folder without `"type": "module"`
 * is CommonJS, and with the ESM hooks alone Node loads it through a require() cycle it refuses.
 */
import { pathToFileURL } from 'node:url';
import { COMPILED } from './package-root.ts';

let tsx: Promise<unknown> | undefined;

export async function importUserModule(path: string): Promise<Record<string, unknown>> {
  if (COMPILED && /\.[cm]?tsx?$/.test(path))
    tsx ??= Promise.all([import('tsx/esm/api'), import('tsx/cjs/api')]).then(([esm, cjs]) => {
      esm.register();
      cjs.register();
    });
  await tsx;
  return esModule(await import(pathToFileURL(path).href));
}

/**
 * A module compiled to CommonJS (a `.ts` in a folder without `"type": "module"`, under the compiled package)
 * comes back as Node's interop namespace, its exports object under `default` marked `__esModule`: the exports
 * as written are that object, its own `default` included.
 */
function esModule(ns: Record<string, unknown>): Record<string, unknown> {
  const inner = ns['default'];
  const marked =
    typeof inner === 'object' && inner !== null && (inner as { __esModule?: unknown }).__esModule;
  return marked ? (inner as Record<string, unknown>) : ns;
}
