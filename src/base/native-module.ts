/**
 * Loads one of kd-launch's optional Node-API bindings (native/build/<name>.node, built by native/build.mjs at
 * install time). Each binding has a JS twin that is its specification and the fallback: a binding that is
 * absent, fails to load, or is switched off by its environment variable is `undefined` with the reason, and
 * the caller runs the JS path. The switch is read on every call, so a test can compare both paths in one
 * process; a successful load is kept (a .node cannot be unloaded).
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { PACKAGE_ROOT } from './package-root.ts';

export type NativeLoad<T> =
  | { binding: T; path: string; reason?: undefined }
  | { binding: undefined; path: string; reason: string };

export interface NativeModule<T> {
  readonly path: string;
  load(): NativeLoad<T>;
}

/**
 * The binding `native/build/<file>.node`, off when `process.env[switchVar]` or KD_NATIVE (every binding) is
 * `off`; `what` names it in the reasons ("the half-precision binding"), and `howToBuild` says how to get it.
 */
export function nativeModule<T>(
  file: string,
  switchVar: string,
  what: string,
  howToBuild = 'run `node native/build.mjs`; it needs a C compiler',
): NativeModule<T> {
  const path = join(PACKAGE_ROOT, 'native', 'build', `${file}.node`);
  let loaded: NativeLoad<T> | undefined;
  return {
    path,
    load() {
      for (const name of [switchVar, 'KD_NATIVE'])
        if (process.env[name] === 'off') return { binding: undefined, path, reason: `${name}=off` };
      loaded ??= (() => {
        try {
          return { binding: createRequire(import.meta.url)(path) as T, path };
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          const reason =
            code === 'MODULE_NOT_FOUND'
              ? `${what} is not built (${howToBuild})`
              : `${what} failed to load: ${(err as Error).message}`;
          return { binding: undefined, path, reason };
        }
      })();
      return loaded;
    },
  };
}
