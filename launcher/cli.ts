import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { WIRE_DTYPES, type WireDtype } from '../src/comm/types.ts';
import { ConfigError } from '../src/config/errors.ts';
import { JobFailedError, LaunchError } from './errors.ts';
import type { LaunchOptions } from './launch.ts';
import { displayFor } from './progress-display.ts';
import { commandLine, HumanRenderer } from './render.ts';
import { withSlurm } from './slurm.ts';

// The launcher and the subcommands' modules (env, report, export) are imported where they run: `kd-launch --help`
// or a refused job file loads none of them, nor the TensorFlow.js they bring.

const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

/** A mistake in the command line: one line that points at the help of the command (`kd-launch export`) it was in. */
function usageError(message: string, command = 'kd-launch'): never {
  process.stderr.write(`kd-launch: ${message} (see ${command} --help)\n`);
  process.exit(EXIT_USAGE);
}

/**
 * Errors that are the code's fault, not the input's: the CLI lets them through, to be printed with their stack.
 * Everything else a command throws is a refusal of what it was given, said in one line.
 */
function isInternal(err: unknown): boolean {
  return (
    !(err instanceof Error) ||
    [TypeError, ReferenceError, RangeError, SyntaxError].some((E) => err instanceof E)
  );
}

function parseSizes(s: string): number[] {
  const sizes = s.split(',').map(Number);
  if (sizes.some((x) => !Number.isFinite(x) || x <= 0))
    usageError(`--sizes takes MiB like 1,16,64; got '${s}'`);
  return sizes;
}

function parseTransports(s: string): ('shm' | 'zmq')[] {
  const paths = s.split(',');
  if (paths.length === 0 || paths.some((p) => p !== 'shm' && p !== 'zmq'))
    usageError(`--transport takes shm, zmq or shm,zmq; got '${s}'`);
  return paths as ('shm' | 'zmq')[];
}

/** `kd-launch env [--json]`: what a bug report needs. */
async function env(argv: string[]): Promise<number> {
  const args = await yargs(argv)
    .scriptName('kd-launch env')
    .usage('$0 [--json]\n\nPrints versions, the backend auto picks and whether the BLAS path is on.')
    .option('json', { type: 'boolean', default: false })
    .strict()
    .fail((msg, err) => usageError(msg ?? err?.message ?? 'bad arguments', 'kd-launch env'))
    .parseAsync();
  const { environmentReport } = await import('./env.ts');
  const report = await environmentReport();
  const width = Math.max(...Object.keys(report).map((k) => k.length));
  const text = args.json
    ? JSON.stringify(report)
    : Object.entries(report)
        .map(([k, v]) => `${k.padEnd(width)}  ${v}`)
        .join('\n');
  process.stdout.write(`${text}\n`);
  return 0;
}

/** `kd-launch export SRC OUT [--onnx] [--quantize uint8|uint16]`: a checkpoint or a model directory → one model directory, as output_dir writes it. */
async function exportCmd(argv: string[]): Promise<number> {
  const args = await yargs(argv)
    .scriptName('kd-launch export')
    .usage(
      "$0 SRC OUT_DIR [--onnx] [--quantize uint8|uint16]\n\nWrites SRC (a checkpoint dir, whose latest is followed; a step-N dir; or a model directory) as one model directory, as a job's output_dir: model.json + weights.bin for tf.loadLayersModel where the model has a layers form (a tfjs model of your own in its own topology), and kd-model.json for kd-launch. --onnx adds model.onnx (int8 QDQ for a quantized model), run in onnxruntime-node and compared with kd-launch's model before it is handed over. --quantize adds OUT_DIR/tfjs-uint8 (or -uint16): the tfjs layers model with tfjs' quantized weights, as tensorflowjs_converter --quantize_uint8 writes it.",
    )
    .command('$0 <src> <out>', 'export a checkpoint or a model', (y) =>
      y
        .positional('src', { type: 'string', demandOption: true, describe: 'checkpoint or model directory' })
        .positional('out', { type: 'string', demandOption: true, describe: 'model directory to write' })
        .option('onnx', {
          type: 'boolean',
          default: false,
          describe: 'also write model.onnx (opset 17; fp32, or int8 QDQ for a quantized model)',
        })
        .option('quantize', {
          choices: ['uint8', 'uint16'] as const,
          describe: "also write OUT_DIR/tfjs-<dtype>: the tfjs model with tfjs' quantized weights",
        }),
    )
    .strict()
    .fail((msg, err) => usageError(msg ?? err?.message ?? 'bad arguments', 'kd-launch export'))
    .help()
    .parseAsync();
  try {
    // Loaded on demand: only export pays for TensorFlow.js in the launcher process.
    const { exportModel } = await import('./export.ts');
    const r = await exportModel(String(args.src), String(args.out), {
      onnx: Boolean(args['onnx']),
      ...(args.quantize ? { quantize: args.quantize as 'uint8' | 'uint16' } : {}),
    });
    const at = r.step === undefined ? '' : `step ${r.step}, `;
    process.stdout.write(`exported ${r.source} (${at}${r.parameters} parameters) to ${r.outDir}\n`);
    if (r.onnx) {
      const c = r.onnx.check;
      const checked =
        'skipped' in c
          ? `not run: ${c.skipped}`
          : `run in ${c.runtime} on ${c.inputs} inputs: max |onnx − tfjs| ${c.maxAbsDiff.toExponential(1)}`;
      process.stdout.write(`${r.onnx.path} (${r.onnx.bytes} bytes) ${checked}\n`);
    }
    if (r.tfjs)
      process.stdout.write(
        `${r.tfjs.dir}: tfjs model with ${args.quantize} weights (${r.tfjs.bytes} bytes)\n`,
      );
    return 0;
  } catch (err) {
    if (isInternal(err)) throw err;
    process.stderr.write(`kd-launch export: ${(err as Error).message}\n`);
    return EXIT_USAGE;
  }
}

/** `kd-launch report RUN_DIR`: report.html rebuilt from the run's metrics.jsonl. */
async function reportCmd(argv: string[]): Promise<number> {
  const args = await yargs(argv)
    .scriptName('kd-launch report')
    .usage(
      "$0 RUN_DIR\n\nRebuilds RUN_DIR/report.html (one self-contained page: charts, tables, the resolved config) from the run's metrics.jsonl, of a finished run or one stopped anywhere.",
    )
    .command('$0 <runDir>', 'rebuild a run report', (y) =>
      y.positional('runDir', { type: 'string', demandOption: true, describe: 'the run directory' }),
    )
    .strict()
    .fail((msg, err) => usageError(msg ?? err?.message ?? 'bad arguments', 'kd-launch report'))
    .help()
    .parseAsync();
  const { ReportError, writeReport } = await import('./run/report.ts');
  try {
    const r = writeReport(String(args.runDir));
    const skipped =
      r.skipped > 0 ? `, ${r.skipped} unreadable line${r.skipped === 1 ? '' : 's'} left out` : '';
    process.stdout.write(`report written to ${r.path} (${r.steps} steps, ${r.evals} evals${skipped})\n`);
    return 0;
  } catch (err) {
    if (!(err instanceof ReportError)) throw err;
    process.stderr.write(`kd-launch report: ${err.message}\n`);
    return EXIT_USAGE;
  }
}

/** What `kd-launch WORD …` runs instead of a job, and how `kd-launch --help` lists it (yargs' command syntax). */
const SUBCOMMANDS: Record<
  string,
  { usage: string; describe: string; run: (argv: string[]) => Promise<number> }
> = {
  export: {
    usage: 'export <src> <out_dir>',
    describe:
      'write a checkpoint or a model as one model directory, as output_dir does (--onnx: and as ONNX)',
    run: exportCmd,
  },
  env: {
    usage: 'env',
    describe: 'versions, the backend auto picks, the BLAS path: what a bug report needs',
    run: env,
  },
  report: {
    usage: 'report <run_dir>',
    describe: "rebuild a run's report.html from its metrics.jsonl",
    run: reportCmd,
  },
};

/** Options whose value is a number: yargs reads `--nproc abc` as NaN, which is refused here by name. */
const NUMBER_OPTIONS = [
  'nproc',
  'gpus',
  'nnodes',
  'node-rank',
  'master-port',
  'threads-per-worker',
  'max-restarts',
  'monitor-interval',
  'heartbeat-timeout',
  'hang-timeout',
  'iters',
] as const;

/**
 * A word that names no file and looks like a command (`kd-launch exprot …`) is a mistyped command more likely than a
 * job file, and is said to be so.
 */
function checkJobWord(job: string): void {
  if (existsSync(job) || !/^[a-z][a-z-]*$/i.test(job)) return;
  const commands = Object.keys(SUBCOMMANDS).join(', ');
  usageError(`'${job}' is neither a job file nor a command (commands: ${commands}; a job is a .yaml file)`);
}

async function run(argv: string[]): Promise<number> {
  const subcommand = Object.hasOwn(SUBCOMMANDS, argv[0] ?? '') ? SUBCOMMANDS[argv[0]] : undefined;
  if (subcommand) return subcommand.run(argv.slice(1));
  const parser = yargs(argv);
  for (const c of Object.values(SUBCOMMANDS)) parser.command(c.usage, c.describe);
  const args = await parser
    .scriptName('kd-launch')
    .usage(
      '$0 [options] JOB.yaml\n\nStarts one worker per CPU slot or GPU; the workers train the job together.',
    )
    .command('$0 [job]', 'run a job file', (y) =>
      y.positional('job', { type: 'string', describe: 'the job YAML' }),
    )
    .option('nproc', { type: 'number', describe: 'CPU workers on this node', alias: 'nproc-per-node' })
    .option('gpus', { type: 'number', describe: 'one worker per GPU (needs @tensorflow/tfjs-node-gpu)' })
    // No defaults here: an option left out may come from Slurm (launcher/slurm.ts); launch() defaults the rest.
    .option('nnodes', { type: 'number', describe: 'nodes in the job (default 1)' })
    .option('node-rank', { type: 'number', describe: 'this node, 0 serving the rendezvous (default 0)' })
    .option('master-addr', { type: 'string', describe: 'address of node 0 (default 127.0.0.1)' })
    .option('master-port', {
      type: 'number',
      describe: 'rendezvous port (default: a free one on one node, 29500 across nodes)',
    })
    .option('node-addr', { type: 'string', describe: "this node's address for the data plane across nodes" })
    .option('threads-per-worker', { type: 'number', default: 1, describe: 'BLAS threads per worker' })
    .option('max-restarts', {
      type: 'number',
      default: 0,
      describe: 'start the job over after a worker fails, at most this often, from its newest checkpoint',
    })
    .option('monitor-interval', {
      type: 'number',
      default: 0.5,
      describe: 'seconds between the watchdog’s looks at the workers’ heartbeats',
    })
    .option('heartbeat-timeout', {
      type: 'number',
      default: 10,
      describe: 'seconds of silence after which a worker or a node is lost',
    })
    .option('hang-timeout', {
      type: 'number',
      default: 120,
      describe: 'seconds a collective may stay open before the watchdog names the rank at fault',
    })
    .option('run-dir', {
      type: 'string',
      describe:
        "where the run's files go (model, checkpoints, metrics, report, trace, flight recorder; default runs/<job name>)",
    })
    .option('memory-check', { type: 'boolean', default: true, describe: 'check memory before workers start' })
    .option('set', {
      type: 'string',
      requiresArg: true,
      describe:
        'KEY.PATH=VALUE: replace a key of the job file before it is validated, VALUE read as YAML (repeatable; docs/CONFIG.md lists the keys)',
    })
    .option('dry-run', {
      type: 'boolean',
      default: false,
      describe: 'validate and print the plan; start nothing',
    })
    .option('json', {
      type: 'boolean',
      default: false,
      describe: 'also print every event as one JSON line on stdout',
    })
    .option('trace', {
      type: 'string',
      describe: "write the run's timeline (Chrome trace / Perfetto JSON, one lane per rank) to this file",
    })
    .option('bench', {
      choices: ['allreduce'] as const,
      describe: 'run a communication benchmark instead of a job',
    })
    .option('sizes', { type: 'string', default: '1,16,64', describe: 'benchmark sizes in MiB' })
    .option('dtype', { choices: WIRE_DTYPES, default: 'fp32' as WireDtype, describe: 'benchmark wire dtype' })
    .option('iters', { type: 'number', default: 0, describe: 'benchmark iterations per size (0: automatic)' })
    .option('transport', {
      type: 'string',
      describe: 'benchmark data paths, each size on each: shm, zmq or shm,zmq (default: as a job would)',
    })
    .example('$0 --nproc 2 configs/mnist-train.yaml', 'train MNIST on 2 CPU workers')
    .example('$0 --gpus 4 job.yaml', 'one worker per GPU')
    .example(
      '$0 --nnodes 2 --node-rank 1 --master-addr 10.0.0.1 job.yaml',
      'the second node of a two-node job',
    )
    .example('$0 --nproc 2 --dry-run job.yaml', 'check the config and print ranks and batch arithmetic')
    .example(
      '$0 --nproc 2 --set optimizer.params.lr=0.01 --set steps=50 job.yaml',
      'the job with two keys changed',
    )
    .example('$0 --nproc 2 --trace trace.json job.yaml', 'open trace.json in Perfetto or chrome://tracing')
    .example(
      '$0 --nproc 2 --bench allreduce --sizes 16,64',
      'measure ring all-reduce against the ZeroMQ link',
    )
    .example(
      '$0 --nproc 2 --bench allreduce --transport shm,zmq',
      'shared memory beside ZeroMQ, size by size',
    )
    .strict()
    .fail((msg, err) => usageError(msg ?? err?.message ?? 'bad arguments'))
    .help()
    .version()
    .parseAsync();
  for (const name of NUMBER_OPTIONS) {
    if (Number.isNaN(args[name])) usageError(`--${name} takes a number`);
  }
  const job = typeof args.job === 'string' ? args.job : undefined;
  if (job !== undefined) checkJobWord(job);
  const overrides = ([] as string[]).concat(args.set ?? []);
  if (overrides.length > 0 && job === undefined) usageError('--set changes a job file: give one');
  // A job file that does not parse is refused before the launcher's own modules (TensorFlow.js among them) load:
  // in half the time. launch() reads it again, the same way.
  if (job !== undefined) (await import('../src/config/load.ts')).loadJobFile(resolve(job), overrides);

  const given: LaunchOptions = {
    nproc: args.nproc,
    gpus: args.gpus,
    nnodes: args.nnodes,
    nodeRank: args['node-rank'],
    masterAddr: args['master-addr'],
    masterPort: args['master-port'],
    nodeAddr: args['node-addr'],
    threadsPerWorker: args['threads-per-worker'],
    maxRestarts: args['max-restarts'],
    monitorIntervalS: args['monitor-interval'],
    heartbeatTimeoutS: args['heartbeat-timeout'],
    hangTimeoutS: args['hang-timeout'],
    runDir: args['run-dir'],
    dryRun: args['dry-run'],
    memoryCheck: args['memory-check'],
    trace: args.trace !== undefined ? { path: args.trace } : undefined,
    overrides,
    bench: args.bench
      ? {
          op: args.bench,
          sizesMiB: parseSizes(args.sizes),
          dtype: args.dtype,
          iters: args.iters,
          transports: args.transport === undefined ? undefined : parseTransports(args.transport),
        }
      : undefined,
  };
  const json = args.json;
  const say = (line: string) => (json ? process.stderr : process.stdout).write(`${line}\n`);
  // Inside a Slurm allocation, the node layout the user left out comes from Slurm's environment.
  const { options, note } = withSlurm(given, process.env);
  if (note) say(note);
  if (options.nproc === undefined && options.gpus === undefined) options.nproc = 1;

  // Bars on stderr when it is a terminal; the lines where `say` writes them (stdout carries `--json` lines).
  const human = new HumanRenderer(
    displayFor(json ? process.stderr : process.stdout, process.stderr),
    commandLine(process.argv),
  );
  const { launch } = await import('./launch.ts');
  const handle = launch(job, options);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      human.interrupted(sig);
      handle.abort(`kd-launch received ${sig}`);
    });
  }
  // A reader that goes away (`kd-launch … | head`) stops the job as a signal would, through the launcher's own
  // teardown, instead of an unhandled EPIPE that kills it with a stack trace and leaves the job's directories.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') throw err;
      handle.abort('its output was closed (EPIPE): the job stopped');
    });
  }
  for await (const event of handle.events) {
    human.render(event);
    if (json)
      process.stdout.write(
        `${JSON.stringify(event.type === 'report' ? { type: event.type, rank: event.rank, ...flatten(event.data) } : event)}\n`,
      );
  }
  try {
    await handle.result;
    return 0;
  } catch (err) {
    if (err instanceof JobFailedError) {
      if (!err.failure) process.stderr.write(`kd-launch: ${err.message}\n`);
      return EXIT_FAILED;
    }
    throw err;
  }
}

/** Report payloads (benchmark lines) appear at the top level of their JSON line, as users grep them. */
function flatten(data: unknown): Record<string, unknown> {
  return typeof data === 'object' && data !== null ? (data as Record<string, unknown>) : { data };
}

run(hideBin(process.argv)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof ConfigError || err instanceof LaunchError) {
      process.stderr.write(`kd-launch: ${err.message}\n`);
      process.exit(EXIT_USAGE);
    }
    process.stderr.write(
      `kd-launch: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(EXIT_FAILED);
  },
);
