/**
 * kd-launch's fast CPU path: GEMM-heavy TensorFlow.js kernels (matmul in every transpose form, convolutions and
 * their gradients) on the system's OpenBLAS, registered in place of the stock kernels of the `wasm` and `cpu`
 * backends. The stock wasm kernels are quick for a forward pass with persistent weights and slow for what a
 * backward pass does (bench/RESULTS.md, "GEMM kernels"); these run every form at the library's speed on the
 * tensors' own memory. MaxPoolGrad and Sum come along: with the GEMMs fast, the stock MaxPoolGrad was the
 * slowest kernel of a CNN step, and the stock wasm Sum transposes a bias's gradient before summing it.
 *
 * Without the binding (not built, or KD_BLAS=off) the stock kernels stay, and only the kernels a backend lacks
 * are supplied on a TypeScript GEMM (the wasm backend has no Conv2DBackpropFilter), so every model trains.
 */
import type { KernelConfig, KernelFunc } from '@tensorflow/tfjs';
import { tf } from '../tf.ts';
import {
  conv2DBackpropFilterKernel,
  conv2DBackpropInputKernel,
  conv2DKernel,
  fusedConv2DKernel,
} from './conv.ts';
import { type Gemm, nativeGemm, referenceGemm } from './gemm.ts';
import { type BlasKernel, Unsupported } from './kernel.ts';
import { jsLoops, type KernelLoops, nativeLoops } from './loops.ts';
import { batchMatMulKernel, fusedMatMulKernel } from './matmul.ts';
import { defaultBlasThreads, loadBlasBinding } from './native.ts';
import { maxPoolGradKernel } from './pool.ts';
import { STORAGE_BY_BACKEND, type TensorStorage } from './storage.ts';
import { sumKernel } from './sum.ts';

const KERNELS: readonly BlasKernel[] = [
  batchMatMulKernel,
  fusedMatMulKernel,
  conv2DKernel,
  fusedConv2DKernel,
  conv2DBackpropInputKernel,
  conv2DBackpropFilterKernel,
  maxPoolGradKernel,
  sumKernel,
];

/** What installBlasKernels did on one backend. */
export interface BlasInstall {
  /** Whether the kernels run on OpenBLAS. */
  active: boolean;
  /** OpenBLAS's own description: version, build options, CPU kernel set. */
  library?: string;
  threads?: number;
  /** The kernels registered: all of them when active, else only those the backend lacks. */
  kernels: string[];
  /** Why the fast path is off, when it is. */
  reason?: string;
}

export interface InstallOptions {
  /** OpenBLAS threads for this process (it is one setting per process); default defaultBlasThreads(). */
  threads?: number;
}

interface Installation {
  result: BlasInstall;
  /** The stock kernel each registered one replaced (undefined: the backend had none), to restore them. */
  replaced: Map<string, KernelConfig | undefined>;
}

const installations = new Map<string, Installation>();

/**
 * Registers the kernels on `backendName` ('wasm' or 'cpu'), before or after that backend starts. A second
 * call for the same backend returns the first call's result; uninstallBlasKernels undoes it.
 */
export function installBlasKernels(backendName: string, options: InstallOptions = {}): BlasInstall {
  const existing = installations.get(backendName);
  if (existing !== undefined) return existing.result;
  const storageOf = STORAGE_BY_BACKEND[backendName];
  if (storageOf === undefined) {
    return { active: false, kernels: [], reason: `no BLAS kernels for the '${backendName}' backend` };
  }
  if (tf.findBackendFactory(backendName) === null) {
    // Registering kernels first would let the backend's own registration overwrite them later.
    return {
      active: false,
      kernels: [],
      reason: `the '${backendName}' backend is not registered (import it first)`,
    };
  }

  const { binding, reason } = loadBlasBinding();
  let gemm: Gemm = referenceGemm;
  let loops: KernelLoops = jsLoops;
  let result: BlasInstall = { active: false, kernels: [], reason };
  if (binding !== undefined) {
    binding.setThreads(options.threads ?? defaultBlasThreads());
    const info = binding.info();
    gemm = nativeGemm(binding);
    loops = nativeLoops(binding);
    result = { active: true, library: info.config.trim(), threads: info.threads, kernels: [] };
  }

  const replaced = new Map<string, KernelConfig | undefined>();
  for (const kernel of KERNELS) {
    const stock = tf.getKernel(kernel.name, backendName);
    // Without BLAS a stock kernel is at least as fast as the TypeScript GEMM: keep it.
    if (stock !== undefined && binding === undefined) continue;
    if (stock !== undefined) tf.unregisterKernel(kernel.name, backendName);
    tf.registerKernel(kernelConfig(kernel, backendName, { gemm, loops }, storageOf, stock));
    replaced.set(kernel.name, stock);
    result.kernels.push(kernel.name);
  }
  installations.set(backendName, { result, replaced });
  return result;
}

/** Puts the stock kernels back (for comparisons of both in one process, as bench/kernels.ts does). */
export function uninstallBlasKernels(backendName: string): void {
  const installation = installations.get(backendName);
  if (installation === undefined) return;
  for (const [name, stock] of installation.replaced) {
    tf.unregisterKernel(name, backendName);
    if (stock !== undefined) tf.registerKernel(stock);
  }
  installations.delete(backendName);
}

function kernelConfig(
  kernel: BlasKernel,
  backendName: string,
  { gemm, loops }: { gemm: Gemm; loops: KernelLoops },
  storageOf: (backend: object) => TensorStorage,
  stock: KernelConfig | undefined,
): KernelConfig {
  const kernelFunc: KernelFunc = (params) => {
    const storage = storageOf(params.backend);
    const output = kernel.run({ inputs: params.inputs, attrs: params.attrs ?? {}, storage, gemm, loops });
    if (!(output instanceof Unsupported)) return output;
    if (stock !== undefined) return stock.kernelFunc(params);
    throw new Error(
      `kd-launch: ${kernel.name} on the ${backendName} backend does not support ${output.reason}`,
    );
  };
  // The stock kernel's setup runs when the backend starts (if it has not yet), so that declined calls can
  // still be handed to it.
  return {
    kernelName: kernel.name,
    backendName,
    kernelFunc,
    setupFunc: stock?.setupFunc,
    disposeFunc: stock?.disposeFunc,
  };
}

/** The fast path's state, for `kd-launch env` and worker logs. */
export interface BlasInfo {
  /** Whether the OpenBLAS binding loads in this process. */
  available: boolean;
  library?: string;
  corename?: string;
  threads?: number;
  bindingPath: string;
  /** Why the binding is not used, when it is not. */
  reason?: string;
  /** What installBlasKernels did, per backend it ran for. */
  backends: Record<string, BlasInstall>;
}

export function blasInfo(): BlasInfo {
  const { binding, reason, path } = loadBlasBinding();
  const backends = Object.fromEntries([...installations].map(([name, { result }]) => [name, result]));
  if (binding === undefined) return { available: false, bindingPath: path, reason, backends };
  const info = binding.info();
  return {
    available: true,
    library: info.config.trim(),
    corename: info.corename,
    threads: info.threads,
    bindingPath: path,
    backends,
  };
}

/** One line about an installation, for a worker's backend detail line. */
export function describeBlasInstall(install: BlasInstall): string {
  const kernels = install.kernels.length > 0 ? install.kernels.join(', ') : 'none';
  if (install.active) {
    return `BLAS kernels on (${install.library}, ${install.threads} thread(s)): ${kernels}`;
  }
  return `BLAS kernels off (${install.reason}); supplied: ${kernels}`;
}
