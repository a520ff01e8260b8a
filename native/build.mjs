#!/usr/bin/env node
// Builds kd-launch's four Node-API bindings: native/build/kd_half.node (the fp16/bf16 wire codec),
// native/build/kd_shm.node (the shared-memory data plane between ranks of a node) and native/build/kd_optim.node
// (the optimizer step's loops), which need only a C compiler, and native/build/kd_blas.node (the OpenBLAS
// binding behind the fast CPU kernels), which also needs OpenBLAS. One file per concern, so that a machine
// without OpenBLAS still gets the other three.
//
// Runs as the package's install hook, so it must never fail an install: it prints one line saying which
// bindings are on and, for each one off, why and what runs instead (kd-launch then runs that binding's JS
// twin, or the stock tfjs kernels), and exits 0. KD_BLAS_REQUIRED=1 turns a line with anything off into an
// error, for CI machines that are meant to have everything.
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

/** Prints the build's one line and ends: with KD_BLAS_REQUIRED=1, anything off is an error that fails the install. */
function finish(line, somethingOff) {
  if (somethingOff && process.env.KD_BLAS_REQUIRED === '1') {
    console.error(line);
    process.exit(1);
  }
  console.log(line);
  process.exit(0);
}

/** Nothing native can be built: one line for every binding. */
function allOff(reason) {
  finish(
    `kd-launch: native code off (${reason}); training uses the stock TensorFlow.js kernels and the JS codec, reductions and optimizers`,
    true,
  );
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

// -O3, -fno-trapping-math and -fno-math-errno let the compiler vectorise the branch-free loops (with trapping
// math, gcc will not compute a float add on lanes whose result is discarded; with errno, every sqrt is a call
// that may set it); none changes a result. Never -ffast-math:
// the C loops must round exactly as their JS twins do. A binding left from an older source must not outlive a
// failed build: it could disagree with the JS it is tested against.
/** Compiles a binding that needs only C and node_api.h; the failure, if any. */
function compilePlain(source, out) {
  rmSync(out, { force: true });
  return compile([
    '-O3',
    '-fno-trapping-math',
    '-fno-math-errno',
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
const shmFailure = compilePlain('shm.c', join(here, 'build', 'kd_shm.node'));
const optimFailure = compilePlain('optim.c', join(here, 'build', 'kd_optim.node'));

const blasFailure = compile([
  '-O3',
  '-fno-trapping-math',
  '-fno-math-errno',
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
]);

/** What each binding does, and what runs instead when it is off. */
const parts = [
  ['fp16/bf16 codec', 'half.c', halfFailure, 'the JS codec'],
  ['shared memory', 'shm.c', shmFailure, 'ranks of a node talk over ZeroMQ'],
  ['optimizers', 'optim.c', optimFailure, 'optimizer steps in JavaScript'],
  ['fast CPU path', 'blas.c', blasFailure, 'the stock TensorFlow.js kernels'],
];
const why = (source, failure) =>
  source === 'blas.c' && /cblas\.h|-lopenblas/.test(failure.stderr)
    ? 'OpenBLAS not found: `sh native/get-openblas.sh` installs libopenblas-dev'
    : `compiling native/${source} failed: ${firstLine(failure)}`;
const line = `kd-launch: native code: ${parts
  .map(([what, source, failure, instead]) =>
    failure ? `${what} off (${why(source, failure)}; ${instead})` : `${what} on`,
  )
  .join(', ')} (native/build/)`;
finish(
  line,
  parts.some(([, , failure]) => failure),
);
