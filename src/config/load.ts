import { readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  Composer,
  CST,
  Document,
  isAlias,
  isMap,
  isNode,
  isScalar,
  isSeq,
  LineCounter,
  Parser,
  parseDocument,
} from 'yaml';
import type { z } from 'zod';
import { ConfigError, type ConfigIssue } from './errors.ts';
import { isStageModelRef, type StageModel } from './job-stages.ts';
import { JobSchema, type ParsedJob } from './schema.ts';

/**
 * The largest job file read. Real ones are a few KiB; the YAML parser's duplicate-key check is quadratic in a
 * mapping's size, so a bound on the file bounds the time to refuse a hostile one (a mapping of 20,000 keys at
 * the bound: 4.4 s here).
 */
export const MAX_JOB_FILE_BYTES = 256 << 10;

/** Aliases a job file may expand (YAML's `*name`): enough for any real job, too few for a billion laughs. */
const MAX_ALIASES = 100;

/**
 * Collections a job file may nest (real ones nest 6 deep). The parser composes a document recursively: about
 * 1,000 levels (`[[[[…`, well inside the size bound) overflow the stack, and after that overflow V8 aborts the
 * whole process on the next parse (a fatal out-of-memory in its regexp compiler), so depth is measured first.
 */
export const MAX_JOB_FILE_DEPTH = 64;

/**
 * Reads and validates a job file, with `overrides` (`--set key.path=value`) put into it first. Every problem is
 * reported at once, each with its field path and position.
 */
export function loadJobFile(file: string, overrides: readonly string[] = []): ParsedJob {
  let text: string;
  try {
    const bytes = statSync(file).size;
    if (bytes > MAX_JOB_FILE_BYTES) {
      throw new ConfigError(file, [
        {
          path: '',
          line: undefined,
          message: `${bytes} bytes: a job file is at most ${MAX_JOB_FILE_BYTES} bytes`,
        },
      ]);
    }
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(file, [
      { path: '', line: undefined, message: code === 'ENOENT' ? 'no such job file' : `cannot read: ${code}` },
    ]);
  }
  return parseJob(text, file, overrides);
}

/**
 * Validates a job given as an object (the API's `launch(job)`, `prepare(ctx, options)`), with `overrides` put into
 * it first; `source` names it.
 */
export function validateJob(job: unknown, source = '<job>', overrides: readonly string[] = []): ParsedJob {
  if (overrides.length === 0) {
    const r = JobSchema.safeParse(job);
    if (r.success) return r.data;
    throw new ConfigError(
      source,
      r.error.issues.map((i) => ({
        path: i.path.map(String).join('.'),
        line: undefined,
        message: i.message,
      })),
    );
  }
  return validateDocument(new Document(job), source, new LineCounter(), overrides);
}

export function parseJob(text: string, file = '<job>', overrides: readonly string[] = []): ParsedJob {
  const lineCounter = new LineCounter();
  const doc = composeDocument(text, lineCounter, (offset, message) => {
    throw new ConfigError(file, [
      { path: '', ...positionAt(lineCounter, offset), message: `YAML: ${message}` },
    ]);
  });
  return validateDocument(doc, file, lineCounter, overrides);
}

/** The document, its overrides put in, as a job: every issue located in the file, or in the `--set` it came from. */
function validateDocument(
  doc: Document,
  file: string,
  lineCounter: LineCounter,
  overrides: readonly string[],
): ParsedJob {
  const applied = overrides.map((text) => applyOverride(doc, parseOverride(text, file), file));
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: MAX_ALIASES }) ?? {};
  } catch (err) {
    // The yaml package refuses an alias bomb with a ReferenceError: the file's fault, said as such.
    throw new ConfigError(file, [
      { path: '', line: undefined, message: `YAML: ${(err as Error).message.split('\n')[0]}` },
    ]);
  }
  const result = JobSchema.safeParse(raw);
  if (result.success) return result.data;
  throw new ConfigError(
    file,
    result.error.issues.map((issue) => locate(issue, doc, lineCounter, applied)),
  );
}

/** A `--set key.path=value`: the key's path in the job and its value, read as YAML (`50`, `true`, `[784, 10]`). */
interface Override {
  key: string;
  path: string[];
  value: unknown;
}

/** An override put into a document, with the shortest prefix of its path that the file did not have. */
interface AppliedOverride extends Override {
  made: string[];
}

function parseOverride(text: string, file: string): Override {
  const eq = text.indexOf('=');
  const key = eq < 0 ? text : text.slice(0, eq);
  const refuse = (message: string): never => {
    throw new ConfigError(file, [{ path: '', line: undefined, setBy: key, message }]);
  };
  const path = key.split('.');
  if (eq < 0 || path.some((p) => p === '')) {
    refuse('give KEY.PATH=VALUE, e.g. --set optimizer.params.lr=0.01 or --set stages.1.steps=20');
  }
  const doc = composeDocument(text.slice(eq + 1), new LineCounter(), (_, message) =>
    refuse(`YAML: ${message}`),
  );
  return { key, path, value: doc.toJS({ maxAliasCount: MAX_ALIASES }) };
}

/**
 * Puts an override's value at its path, making the mappings the path needs. A path that runs through a value which
 * is not a mapping (a number, a string), or through a list by something other than one of its indices, is refused.
 */
function applyOverride(doc: Document, override: Override, file: string): AppliedOverride {
  const { key, path } = override;
  const refuse = (message: string): never => {
    throw new ConfigError(file, [{ path: '', line: undefined, setBy: key, message }]);
  };
  let made = path;
  for (let depth = 0; depth < path.length; depth++) {
    const at = path.slice(0, depth);
    const node = depth === 0 ? doc.contents : doc.getIn(at, true);
    if (node === null || node === undefined || (isScalar(node) && node.value === null)) {
      // Nothing here (or null): the override makes this part of the job.
      if (depth > 0) doc.setIn(at, doc.createNode({}));
      made = path.slice(0, Math.max(depth, 1));
      break;
    }
    const name = depth === 0 ? 'the job' : at.join('.');
    const step = path[depth];
    if (isSeq(node)) {
      if (!/^\d+$/.test(step)) refuse(`${name} is a list: '${step}' is not an index`);
      if (Number(step) >= node.items.length) {
        refuse(`${name} has ${node.items.length} item(s), indexed from 0: there is no ${step}`);
      }
    } else if (isAlias(node)) {
      refuse(`${name} is an alias (*${node.source}): set the value where its anchor is`);
    } else if (!isMap(node)) {
      refuse(`${name} is ${JSON.stringify(doc.getIn(at))}, not a mapping: there is nothing inside it to set`);
    }
  }
  doc.setIn(path, doc.createNode(override.value));
  return { ...override, made };
}

/**
 * One YAML document, refused (by `refuse`, at an offset of the text) at its first error. It is composed from the
 * parser's syntax tree (built without recursion) once the tree's depth is known to be bounded: composing recurses
 * per level.
 */
function composeDocument(
  text: string,
  lineCounter: LineCounter,
  refuse: (offset: number | undefined, message: string) => never,
): Document.Parsed {
  const tokens = Array.from(new Parser(lineCounter.addNewLine).parse(text));
  const depth = nestingDepth(tokens);
  if (depth > MAX_JOB_FILE_DEPTH) {
    refuse(undefined, `collections nested ${depth} deep: a job file nests at most ${MAX_JOB_FILE_DEPTH}`);
  }
  // Not 'warn': the composer would print its warnings (a collection as a map key) on the launcher's stderr.
  const [doc, second] = new Composer({ logLevel: 'error' }).compose(tokens, true, text.length);
  if (doc.errors.length > 0) {
    // The first error is the file's; those after it mostly follow from it (one unclosed `[` makes hundreds).
    const [first] = doc.errors;
    const more = doc.errors.length - 1;
    refuse(
      first.pos[0],
      `${first.message.split('\n')[0]}${more > 0 ? ` (and ${more} more YAML error${more > 1 ? 's' : ''} after it)` : ''}`,
    );
  }
  if (second) refuse(second.range[0], 'a job file is one document, and a second one starts here');
  return doc;
}

/** How deeply the syntax tree's collections nest, walked with a stack of its own. */
function nestingDepth(tokens: readonly CST.Token[]): number {
  let deepest = 0;
  type Pending = [CST.Token | null | undefined, number];
  const pending = tokens.map((t): Pending => [t, 0]);
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [token, depth] = next;
    if (token?.type === 'document') pending.push([token.value, depth]);
    else if (CST.isCollection(token)) {
      deepest = Math.max(deepest, depth + 1);
      for (const item of token.items) pending.push([item.key, depth + 1], [item.value, depth + 1]);
    }
  }
  return deepest;
}

function locate(
  issue: z.core.$ZodIssue,
  doc: Document,
  lc: LineCounter,
  overrides: readonly AppliedOverride[],
): ConfigIssue {
  const path = issue.path.map(String);
  let message = issue.message;
  if (issue.code === 'unrecognized_keys') {
    path.push(issue.keys[0] ?? '');
    // A handful named, the rest counted: one line however many there are.
    const named = issue.keys.slice(0, 8).map((k) => `'${k}'`);
    const more = issue.keys.length - named.length;
    message = `unknown field${issue.keys.length > 1 ? 's' : ''} ${named.join(', ')}${more > 0 ? ` and ${more} more` : ''}`;
  }
  const dotted = path.join('.');
  // The last override that made this part of the job gave the value the issue is about.
  const setBy = [...overrides].reverse().find((o) => o.made.every((p, i) => path[i] === p));
  if (setBy) return { path: dotted, line: undefined, setBy: setBy.key, message };
  const key = issue.code === 'unrecognized_keys';
  return { path: dotted, ...positionOf(doc, lc, path, key), message };
}

/**
 * Where a field is: the deepest node of `path` that exists in the document (a missing key points at its parent),
 * or with `key`, the last key of the path itself (an unknown field).
 */
function positionOf(
  doc: Document,
  lc: LineCounter,
  path: readonly string[],
  key = false,
): Pick<ConfigIssue, 'line' | 'column'> {
  if (key) {
    const parent = path.length === 1 ? doc.contents : doc.getIn(path.slice(0, -1), true);
    const pair = isMap(parent)
      ? parent.items.find((p) => isScalar(p.key) && String(p.key.value) === path.at(-1))
      : undefined;
    if (isNode(pair?.key) && pair.key.range) return positionAt(lc, pair.key.range[0]);
  }
  for (let depth = path.length; depth >= 0; depth--) {
    const node = depth === 0 ? doc.contents : doc.getIn(path.slice(0, depth), true);
    if (isNode(node) && node.range) return positionAt(lc, node.range[0]);
  }
  return { line: undefined };
}

function positionAt(lc: LineCounter, offset: number | undefined): Pick<ConfigIssue, 'line' | 'column'> {
  if (offset === undefined) return { line: undefined };
  const { line, col } = lc.linePos(offset);
  return { line, column: col };
}

/**
 * Where a dotted field (`model.layers`) is in a job file, for errors found after parsing (checks against the
 * dataset, the output paths); no line when the file cannot be read again.
 */
export function fieldPosition(file: string | undefined, path: string): Pick<ConfigIssue, 'line' | 'column'> {
  if (file === undefined) return { line: undefined };
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return { line: undefined };
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  return positionOf(doc, lineCounter, path === '' ? [] : path.split('.'));
}

/**
 * The same error with each problem about a value that a `--set` gave (the override's key is the field or a
 * mapping above it) told as that override's, not as a line of the file: for the checks made after parsing.
 */
export function attributedToOverrides(err: ConfigError, overrides: readonly string[]): ConfigError {
  const keys = overrides.map((o) => o.slice(0, o.indexOf('=') < 0 ? undefined : o.indexOf('='))).reverse();
  if (keys.length === 0) return err;
  return new ConfigError(
    err.file,
    err.issues.map((issue) => {
      const setBy = keys.find((k) => issue.path === k || issue.path.startsWith(`${k}.`));
      return setBy === undefined
        ? issue
        : { path: issue.path, line: undefined, setBy, message: issue.message };
    }),
  );
}

/**
 * The job with its model directories and modules (`model: {path}`, `model: {module}`, at the top and in job stages)
 * made absolute against the job file's directory: the workers, the checkpoints' headers and `kd-launch export` then
 * find them from anywhere.
 */
export function resolveModelPaths(job: ParsedJob, jobDir: string): ParsedJob {
  const absolute = <M extends StageModel | undefined>(m: M): M => {
    if (isStageModelRef(m)) return m;
    if (m?.type === 'tfjs') return { ...m, path: resolve(jobDir, m.path) };
    if (m?.type === 'module') return { ...m, module: resolve(jobDir, m.module) };
    return m;
  };
  return {
    ...job,
    model: absolute(job.model),
    stages: job.stages?.map((s) => (s.model ? { ...s, model: absolute(s.model) } : s)),
  };
}
