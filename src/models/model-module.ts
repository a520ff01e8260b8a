/**
 * Models built in code: `model: {module: ./model.ts, export: build, options}` imports the module and calls its
 * export with `options`; what it returns (or resolves to) is a TensorFlow.js layers model or a Net.
 *
 * A layers model is saved once, by one process, as a model directory named by its contents
 * (`<job dir>/.kd-launch/models/<hash>`), and the job trains that directory as a `{path}` model: every rank starts
 * from the same weights (tfjs' initialisers are not seeded), and the model directory's checks, its export to the
 * user's topology and its use as a teacher all apply. A Net (src/engine/net.ts) seeds its own initial values: each
 * process that needs it builds it from the module and `buildNet` returns it; it is exported as a kd-launch model
 * directory naming its module.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tf } from '../backend/tf.ts';
import { importUserModule } from '../base/user-module.ts';
import { ConfigError } from '../config/errors.ts';
import { isStageModelRef, type StageModel } from '../config/job-stages.ts';
import { fieldPosition } from '../config/load.ts';
import type { ModelSpec, ModuleModelSpec, ParsedJob } from '../config/schema.ts';
import type { Net } from '../engine/net.ts';
import { activationShape } from '../pipeline/stage-net.ts';
import { MODEL_JSON, saveModel } from './save.ts';
import { readTfjsModel, TfjsModelError } from './tfjs-dir.ts';

/** Where a job's layers models built in code are saved, each in a directory named by its contents. */
export function builtModelsDir(jobDir: string): string {
  return resolve(jobDir, '.kd-launch', 'models');
}

/** What a model module's export gave: a layers model, or a Net (kept for `moduleNet`). */
type ModuleModel = { kind: 'layers'; model: tf.LayersModel } | { kind: 'net' };

/** A model module that cannot be imported, or an export that gives no model; `field` is the spec's key to change. */
class ModelModuleError extends Error {
  constructor(
    readonly field: 'module' | 'export',
    message: string,
  ) {
    super(message);
    this.name = 'ModelModuleError';
  }
}

const nets = new Map<string, Net>();
const keyOf = (spec: ModuleModelSpec) => JSON.stringify([spec.module, spec.export, spec.options]);

/** The Net `spec` built in this process (`buildModels`), for `buildNet`. */
export function moduleNet(spec: ModuleModelSpec): Net {
  const net = nets.get(keyOf(spec));
  if (!net) {
    throw new Error(
      `the Net of ${spec.module} (export ${spec.export}) is not built in this process: buildModels builds it`,
    );
  }
  return net;
}

/** The export as messages name it: `build()`, or the default export. */
const callName = (spec: ModuleModelSpec) =>
  `${spec.export === 'default' ? 'the default export' : `${spec.export}()`} of ${spec.module}`;

const firstLine = (err: unknown) => (err instanceof Error ? err.message : String(err)).split('\n')[0];

function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return 'an array';
  const type = typeof value;
  return `${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type}`;
}

function isLayersModel(value: unknown): value is tf.LayersModel {
  const m = value as Partial<tf.LayersModel> | null;
  return typeof m?.save === 'function' && Array.isArray(m.layers);
}

function isNet(value: unknown): value is Net {
  const n = value as Partial<Net> | null;
  return Array.isArray(n?.blocks) && Array.isArray(n.inputShape) && typeof n.init === 'function';
}

/** Imports `spec.module` and calls its export; a Net is kept for `moduleNet`. */
async function callModelModule(spec: ModuleModelSpec): Promise<ModuleModel> {
  const path = spec.module;
  if (!existsSync(path)) throw new ModelModuleError('module', `no such file: ${path}`);
  let mod: Record<string, unknown>;
  try {
    mod = await importUserModule(path);
  } catch (err) {
    throw new ModelModuleError('module', `${path} cannot be imported: ${firstLine(err)}`);
  }
  const build = mod[spec.export];
  if (build === undefined) {
    const exports = Object.keys(mod).join(', ') || 'nothing';
    throw new ModelModuleError('export', `${path} has no export '${spec.export}' (it exports ${exports})`);
  }
  if (typeof build !== 'function') {
    throw new ModelModuleError('export', `'${spec.export}' of ${path} is ${describe(build)}, not a function`);
  }
  let built: unknown;
  try {
    built = await build(spec.options);
  } catch (err) {
    throw new ModelModuleError('export', `${callName(spec)} threw: ${firstLine(err)}`);
  }
  if (isLayersModel(built)) return { kind: 'layers', model: built };
  if (!isNet(built)) {
    throw new ModelModuleError(
      'export',
      `${callName(spec)} returned ${describe(built)}, not a tf.LayersModel or a Net (kind, inputShape, inputDtype, blocks, init)`,
    );
  }
  try {
    // What the config checks do next, first here, so that a failure names the export: one sample through it.
    activationShape(built, built.blocks.length);
  } catch (err) {
    throw new ModelModuleError(
      'export',
      `the Net ${callName(spec)} returned fails on a sample: ${firstLine(err)}`,
    );
  }
  nets.set(keyOf(spec), built);
  return { kind: 'net' };
}

/**
 * Saves a layers model into `parent`/<a hash of its topology and weights> unless that directory exists; returns
 * it. The same model saved twice is one directory, and a directory once written never changes.
 */
export async function saveByContent(model: tf.LayersModel, parent: string): Promise<string> {
  let artifacts: tf.io.ModelArtifacts | undefined;
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      artifacts = a;
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    }),
  );
  const hash = createHash('sha256')
    .update(JSON.stringify(artifacts?.modelTopology))
    .update(JSON.stringify(artifacts?.weightSpecs ?? []));
  if (artifacts?.weightData)
    hash.update(new Uint8Array(tf.io.CompositeArrayBuffer.join(artifacts.weightData)));
  const dir = join(parent, hash.digest('hex').slice(0, 16));
  if (!existsSync(join(dir, MODEL_JSON))) await saveModel(model, dir);
  return dir;
}

/** How `buildModels` saves a layers model (`saveByContent` in some process) and names the job in errors. */
export interface BuildModelsOptions {
  /** Saves the model and returns its directory: the same directory on every rank. */
  readonly place: (model: tf.LayersModel) => Promise<string>;
  /** Names the job in a ConfigError: its file, `<job>`, `prepare()`. */
  readonly source: string;
  /** The job file, whose lines the errors give. */
  readonly file?: string;
}

/** Whether the job (or one of its job stages) has a model built in code. */
export function hasModelModule(job: ParsedJob): boolean {
  return [job.model, ...(job.stages ?? []).map((s) => s.model)].some(
    (m) => !isStageModelRef(m) && m?.type === 'module',
  );
}

/**
 * The job with its models built in code (at the top and in job stages) built, each module called once: a layers
 * model placed and given as its directory (`{type: 'tfjs', path}`), a Net kept for `buildNet` (its spec unchanged).
 * A module that cannot be imported, an export that is no function, throws or gives no model, and a layers model
 * kd-launch cannot train are refused as a ConfigError naming `model.module` or `model.export`.
 */
export async function buildModels(job: ParsedJob, options: BuildModelsOptions): Promise<ParsedJob> {
  const built = new Map<string, ModelSpec>();
  const build = async <M extends StageModel | undefined>(spec: M, at: string): Promise<M | ModelSpec> => {
    if (isStageModelRef(spec) || spec?.type !== 'module') return spec;
    const done = built.get(keyOf(spec));
    if (done) return done;
    let out: ModelSpec;
    try {
      out = await buildOne(spec, options);
    } catch (err) {
      if (!(err instanceof ModelModuleError)) throw err;
      const path = `${at}.${err.field}`;
      throw new ConfigError(options.source, [
        { path, ...fieldPosition(options.file, path), message: err.message },
      ]);
    }
    built.set(keyOf(spec), out);
    return out;
  };
  const model = await build(job.model, 'model');
  const stages: ParsedJob['stages'] = [];
  for (const [i, s] of (job.stages ?? []).entries()) {
    stages.push(s.model ? { ...s, model: await build(s.model, `stages.${i}.model`) } : s);
  }
  return { ...job, model, stages: job.stages && stages };
}

async function buildOne(spec: ModuleModelSpec, options: BuildModelsOptions): Promise<ModelSpec> {
  const built = await callModelModule(spec);
  if (built.kind === 'net') return spec;
  let path: string;
  try {
    path = await options.place(built.model);
  } finally {
    built.model.dispose();
  }
  try {
    // Reading it refuses a layer kd-launch cannot run; one sample through it, a configuration it cannot.
    const { net } = readTfjsModel(path);
    activationShape(net, net.blocks.length);
  } catch (err) {
    if (!(err instanceof TfjsModelError)) throw err;
    throw new ModelModuleError(
      'export',
      `${callName(spec)} returned a model kd-launch cannot train: ${err.message}`,
    );
  }
  return { type: 'tfjs', path };
}
