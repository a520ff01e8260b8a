import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, cpus, totalmem } from 'node:os';
import * as zmq from 'zeromq';
import { blasInfo } from '../src/backend/blas/index.ts';
import { selectBackend } from '../src/backend/select.ts';
import { packageVersion } from '../src/base/package-root.ts';
import { loadHalfBinding } from '../src/comm/half-binding.ts';
import { loadShmBinding } from '../src/comm/shm-ring.ts';
import { loadOptimBinding } from '../src/engine/step-kernels.ts';

const require = createRequire(import.meta.url);

function versionOf(pkg: string): string {
  try {
    return (require(`${pkg}/package.json`) as { version: string }).version;
  } catch {
    return 'not installed';
  }
}

/** What a bug report needs (as `accelerate env`): versions, the backend `auto` picks, the BLAS path and why. */
export async function environmentReport(): Promise<Record<string, string>> {
  const backend = await selectBackend('auto').then(
    (b) => `${b.name}: ${b.detail}`,
    (err: unknown) => `none: ${String(err)}`,
  );
  const blas = blasInfo();
  const half = loadHalfBinding();
  const shm = loadShmBinding();
  const optim = loadOptimBinding();
  return {
    'kd-launch': packageVersion(),
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    cpus: `${availableParallelism()} × ${cpus()[0]?.model.trim() ?? 'unknown'}`,
    memory: `${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    '@tensorflow/tfjs': versionOf('@tensorflow/tfjs'),
    '@tensorflow/tfjs-backend-wasm': versionOf('@tensorflow/tfjs-backend-wasm'),
    '@tensorflow/tfjs-node': versionOf('@tensorflow/tfjs-node'),
    '@tensorflow/tfjs-node-gpu': versionOf('@tensorflow/tfjs-node-gpu'),
    'onnxruntime-node': versionOf('onnxruntime-node'),
    'backend (auto)': backend,
    'BLAS path': blas.available
      ? `on: ${blas.library} (${blas.corename}), ${blas.threads} thread(s), ${blas.bindingPath}`
      : `off: ${blas.reason}`,
    'BLAS kernels':
      Object.entries(blas.backends)
        .map(([b, r]) => `${b}: ${r.kernels.join(', ') || 'none'}`)
        .join('; ') || 'none',
    'fp16/bf16 codec': half.binding
      ? `native ${half.binding.variant}, ${half.path}`
      : `JavaScript: ${half.reason}`,
    'shared memory (ranks of a node)': shm.binding
      ? `on: ${shm.path}, rings in /dev/shm${existsSync('/dev/shm') ? '' : ' (missing here: ZeroMQ instead)'}`
      : `off, ZeroMQ instead: ${shm.reason}`,
    optimizers: optim.binding
      ? `native ${optim.binding.variant}, ${optim.path}`
      : `JavaScript: ${optim.reason}`,
    zeromq: `${versionOf('zeromq')} (libzmq ${zmq.version}; ipc ${zmq.capability.ipc}, curve ${zmq.capability.curve})`,
    '@grpc/grpc-js': versionOf('@grpc/grpc-js'),
    CUDA_VISIBLE_DEVICES: process.env['CUDA_VISIBLE_DEVICES'] ?? '(unset)',
    OPENBLAS_NUM_THREADS: process.env['OPENBLAS_NUM_THREADS'] ?? '(unset)',
    KD_BLAS: process.env['KD_BLAS'] ?? '(unset)',
    KD_HALF: process.env['KD_HALF'] ?? '(unset)',
    KD_SHM: process.env['KD_SHM'] ?? '(unset)',
    KD_OPTIM: process.env['KD_OPTIM'] ?? '(unset)',
    KD_NATIVE: process.env['KD_NATIVE'] ?? '(unset)',
  };
}
