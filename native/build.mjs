#!/usr/bin/env node
// Builds native/build/kd_blas.node, the OpenBLAS binding behind kd-launch's fast CPU kernels.
//
// Runs as the package's install hook, so it must never fail an install: when the Node headers, a C compiler
// or OpenBLAS is missing it prints one line saying the fast path is off and exits 0 (kd-launch then trains
// on the stock tfjs kernels). KD_BLAS_REQUIRED=1 turns that line into an error, for CI machines that are
// meant to have the fast path. One `cc` call rather than node-gyp: nothing to download, no Python, and the
// binding is a single C file against Node-API.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const output = join(here, 'build', 'kd_blas.node');

/** Folders that may hold node_api.h: beside this node binary, npm's nodedir, node-gyp's header cache. */
function nodeHeaderCandidates() {
  const version = process.version.slice(1);
  return [
    process.env.KD_NODE_HEADERS,
    join(dirname(process.execPath), '..', 'include', 'node'),
    process.env.npm_config_nodedir && join(process.env.npm_config_nodedir, 'include', 'node'),
    join(homedir(), '.cache', 'node-gyp', version, 'include', 'node'),
    join(homedir(), 'Library', 'Caches', 'node-gyp', version, 'include', 'node'),
  ].filter((dir) => dir && existsSync(join(dir, 'node_api.h')));
}

/** Where distributions put OpenBLAS's cblas.h when it is not on the default include path. */
const blasIncludeCandidates = [
  '/usr/include/openblas',
  '/usr/include/x86_64-linux-gnu/openblas-pthread',
  '/usr/include/aarch64-linux-gnu/openblas-pthread',
  '/opt/homebrew/opt/openblas/include',
  '/usr/local/opt/openblas/include',
].filter((dir) => existsSync(join(dir, 'cblas.h')));

const blasLibCandidates = ['/opt/homebrew/opt/openblas/lib', '/usr/local/opt/openblas/lib'].filter(
  existsSync,
);

function off(reason) {
  const line = `kd-launch: fast CPU path off (${reason}); training uses the stock TensorFlow.js kernels`;
  if (process.env.KD_BLAS_REQUIRED === '1') {
    console.error(line);
    process.exit(1);
  }
  console.log(line);
  process.exit(0);
}

const headers = nodeHeaderCandidates()[0];
if (headers === undefined) off('node_api.h not found; set KD_NODE_HEADERS to a folder holding it');
if (process.platform === 'win32') off('the binding is built for Linux and macOS only');

const args = [
  '-O3',
  '-shared',
  '-fPIC',
  '-std=c11',
  `-I${headers}`,
  ...blasIncludeCandidates.map((dir) => `-I${dir}`),
  join(here, 'blas.c'),
  '-o',
  output,
  ...blasLibCandidates.flatMap((dir) => [`-L${dir}`, `-Wl,-rpath,${dir}`]),
  '-lopenblas',
  // Node-API symbols resolve against the running node binary at load time.
  ...(process.platform === 'darwin' ? ['-undefined', 'dynamic_lookup'] : []),
];

mkdirSync(dirname(output), { recursive: true });
try {
  execFileSync(process.env.CC ?? 'cc', args, { stdio: ['ignore', 'ignore', 'pipe'] });
} catch (error) {
  const stderr = String(error.stderr ?? '');
  if (error.code === 'ENOENT') off(`no C compiler (${process.env.CC ?? 'cc'}) found`);
  if (/cblas\.h|-lopenblas/.test(stderr)) off('OpenBLAS not found: install libopenblas-dev');
  off(`compiling native/blas.c failed: ${stderr.split('\n').find((l) => l.trim()) ?? error.message}`);
}
console.log(`kd-launch: fast CPU path on (OpenBLAS binding built at ${output})`);
