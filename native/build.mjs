#!/usr/bin/env node
// Builds kd-launch's three Node-API bindings: native/build/kd_half.node (the fp16/bf16 wire codec) and
// native/build/kd_shm.node (the shared-memory data plane between ranks of a node), which need only a C
// compiler, and native/build/kd_blas.node (the OpenBLAS binding behind the fast CPU kernels), which also needs
// OpenBLAS. One file per concern, so that a machine without OpenBLAS still gets the other two.
//
// Runs as the package's install hook, so it must never fail an install: when the Node headers or a C compiler
// are missing it prints one line saying native code is off, when only OpenBLAS is missing one line saying the
// fast CPU path is off, and exits 0 (kd-launch then runs the JS codec and the stock tfjs kernels).
// KD_BLAS_REQUIRED=1 turns any of those lines into an error, for CI machines that are meant to have both.
// One `cc` call per binding rather than node-gyp: nothing to download, no Python, and each binding is a
// single C file against Node-API.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const output = join(here, 'build', 'kd_blas.node');
const halfOutput = join(here, 'build', 'kd_half.node');
const cc = process.env.CC ?? 'cc';

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

/** Prints why a binding is off; with KD_BLAS_REQUIRED=1 as an error that fails the install. */
function report(line) {
  if (process.env.KD_BLAS_REQUIRED === '1') {
    console.error(line);
    process.exit(1);
  }
  console.log(line);
}

/** Nothing native can be built: one line for both bindings, and stop. */
function allOff(reason) {
  report(
    `kd-launch: native code off (${reason}); training uses the stock TensorFlow.js kernels and the JS fp16/bf16 codec`,
  );
  process.exit(0);
}

function off(reason) {
  report(`kd-launch: fast CPU path off (${reason}); training uses the stock TensorFlow.js kernels`);
  process.exit(0);
}

// Node-API symbols resolve against the running node binary at load time.
const darwinFlags = process.platform === 'darwin' ? ['-undefined', 'dynamic_lookup'] : [];

/** Runs the compiler; the error (with its stderr as a string) when it fails. */
function compile(args) {
  try {
    execFileSync(cc, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    return undefined;
  } catch (error) {
    return { code: error.code, message: error.message, stderr: String(error.stderr ?? '') };
  }
}

const firstLine = (failure) => failure.stderr.split('\n').find((l) => l.trim()) ?? failure.message;

const headers = nodeHeaderCandidates()[0];
if (headers === undefined) allOff('node_api.h not found; set KD_NODE_HEADERS to a folder holding it');
if (process.platform === 'win32') allOff('the bindings are built for Linux and macOS only');

mkdirSync(dirname(output), { recursive: true });

// -O3 and -fno-trapping-math let the compiler vectorise the branch-free loops (with trapping math, gcc will
// not compute a float add on lanes whose result is discarded); neither changes a result. Never -ffast-math:
// the C loops must round exactly as their JS twins do. A binding left from an older source must not outlive a
// failed build: it could disagree with the JS it is tested against.
/** Compiles a binding that needs only C and node_api.h; the failure, if any. */
function compilePlain(source, out) {
  rmSync(out, { force: true });
  return compile([
    '-O3',
    '-fno-trapping-math',
    '-shared',
    '-fPIC',
    '-std=c11',
    `-I${headers}`,
    join(here, source),
    '-o',
    out,
    ...darwinFlags,
  ]);
}

const halfFailure = compilePlain('half.c', halfOutput);
if (halfFailure?.code === 'ENOENT') allOff(`no C compiler (${cc}) found`);
if (halfFailure) {
  report(`kd-launch: native fp16/bf16 codec off (compiling native/half.c failed: ${firstLine(halfFailure)})`);
} else {
  console.log(`kd-launch: native fp16/bf16 codec on (built at ${halfOutput})`);
}

// The shared-memory data plane (mapping ring files, fp32 reductions out of them): C, node_api.h and POSIX.
const shmOutput = join(here, 'build', 'kd_shm.node');
const shmFailure = compilePlain('shm.c', shmOutput);
if (shmFailure) {
  report(
    `kd-launch: shared-memory data plane off (compiling native/shm.c failed: ${firstLine(shmFailure)}); ranks on one node talk over ZeroMQ`,
  );
} else {
  console.log(`kd-launch: shared-memory data plane on (built at ${shmOutput})`);
}

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
  ...darwinFlags,
];

const failure = compile(args);
if (failure) {
  if (/cblas\.h|-lopenblas/.test(failure.stderr))
    off('OpenBLAS not found: `sh native/get-openblas.sh` installs libopenblas-dev');
  off(`compiling native/blas.c failed: ${firstLine(failure)}`);
}
console.log(`kd-launch: fast CPU path on (OpenBLAS binding built at ${output})`);
