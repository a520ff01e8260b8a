/**
 * Picks the tfjs backend a worker computes on. `auto` takes the best one present: tfjs-node-gpu, tfjs-node
 * (both optional: their install downloads libtensorflow, which not every machine can), then wasm (a dependency,
 * XNNPACK), then the pure-JS cpu backend. After the choice, the kernel installers run (the BLAS-backed GEMMs).
 */
import { createRequire } from 'node:module';
import { describeBlasInstall, installBlasKernels } from './blas/index.ts';
import { installKernels } from './kernels/index.ts';
import { type BackendName, NATIVE_PACKAGE } from './names.ts';
import { tf } from './tf.ts';

export interface BackendChoice {
  /** The job-file name of the backend chosen (never `auto`). */
  name: Exclude<BackendName, 'auto'>;
  /** What it is, for the worker's log line: package, version, threads, extra kernels. */
  detail: string;
}

type Concrete = Exclude<BackendName, 'auto'>;
type Outcome = { ok: true; detail: string } | { ok: false; why: string; remedy: string };

/** Preference order of `auto`. */
const AUTO_ORDER: readonly Concrete[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];

export async function selectBackend(requested: BackendName): Promise<BackendChoice> {
  if (requested !== 'auto') {
    const outcome = await activate(requested);
    if (!outcome.ok)
      throw new Error(`backend '${requested}' is not available: ${outcome.why}; ${outcome.remedy}`);
    return { name: requested, detail: await withKernels(outcome.detail) };
  }
  const skipped: string[] = [];
  for (const name of AUTO_ORDER) {
    const outcome = await activate(name);
    if (outcome.ok) {
      const note = skipped.length > 0 ? ` (auto; skipped ${skipped.join(', ')})` : ' (auto)';
      return { name, detail: await withKernels(outcome.detail + note) };
    }
    skipped.push(`${name}: ${outcome.why}`);
  }
  throw new Error(`no tfjs backend could start: ${skipped.join('; ')}`);
}

/** On the CPU backends, the GEMM-heavy kernels move to the system's BLAS where the binding is built. */
async function withKernels(detail: string): Promise<string> {
  const backend = tf.getBackend();
  if (backend !== 'wasm' && backend !== 'cpu') return detail;
  return `${detail}; ${describeBlasInstall(installBlasKernels(backend))}`;
}

async function activate(name: Concrete): Promise<Outcome> {
  switch (name) {
    case 'tensorflow-gpu':
    case 'tensorflow':
      return activateNative(NATIVE_PACKAGE[name]);
    case 'wasm': {
      // Imported here, not at the top: importing it registers the backend, and a program that only loads
      // kd-launch's API (and chooses its own backend, or none) should keep tfjs' default.
      const { getThreadsCount, version_wasm } = await import('@tensorflow/tfjs-backend-wasm');
      if (!(await tf.setBackend('wasm'))) {
        return { ok: false, why: 'the WebAssembly module failed to start', remedy: "use backend 'cpu'" };
      }
      installKernels('wasm');
      return {
        ok: true,
        detail: `@tensorflow/tfjs-backend-wasm ${version_wasm}, ${getThreadsCount()} thread(s)`,
      };
    }
    case 'cpu':
      // Its first-use banner advises installing tfjs-node; the worker's backend line already says what runs.
      tf.enableProdMode();
      await tf.setBackend('cpu');
      return {
        ok: true,
        detail: `@tensorflow/tfjs-backend-cpu ${tf.version_core} (pure JavaScript, slowest)`,
      };
  }
}

/** tfjs-node(-gpu) registers the `tensorflow` backend when imported; it is optional, so import it by name. */
async function activateNative(pkg: string): Promise<Outcome> {
  const remedy = `npm install ${pkg} (its install step downloads libtensorflow), or use backend 'wasm'`;
  try {
    await import(pkg);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const notInstalled = code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND';
    return {
      ok: false,
      why: notInstalled ? `${pkg} is not installed` : `${pkg} failed to load: ${String(err)}`,
      remedy,
    };
  }
  if (!(await tf.setBackend('tensorflow'))) {
    return { ok: false, why: `${pkg} is installed but its backend failed to start`, remedy };
  }
  return { ok: true, detail: `${pkg} ${packageVersion(pkg)} (libtensorflow)` };
}

function packageVersion(pkg: string): string {
  try {
    return (createRequire(import.meta.url)(`${pkg}/package.json`) as { version: string }).version;
  } catch {
    return '(version unknown)';
  }
}
