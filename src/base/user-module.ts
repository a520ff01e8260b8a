/**
 * Imports a module of the user's own (a worker script, a model built in code), TypeScript included: under the
 * sources tsx already compiles it; in a compiled (plain Node) process tsx is registered once, on the first
 * TypeScript file, and compiles it on load.
 */
import { pathToFileURL } from 'node:url';
import { COMPILED } from './package-root.ts';

let tsx: Promise<unknown> | undefined;

export async function importUserModule(path: string): Promise<Record<string, unknown>> {
  if (COMPILED && /\.[cm]?tsx?$/.test(path)) tsx ??= import('tsx/esm/api').then((api) => api.register());
  await tsx;
  return import(pathToFileURL(path).href);
}
