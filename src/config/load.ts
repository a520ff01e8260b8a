import { readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { Composer, CST, type Document, isNode, LineCounter, Parser, parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigError, type ConfigIssue } from './errors.ts';
import { JobSchema, type ModelSpec, type ParsedJob } from './schema.ts';

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

/** Reads and validates a job file. Every problem is reported at once, each with its field path and line. */
export function loadJobFile(file: string): ParsedJob {
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
  return parseJob(text, file);
}

/** Validates a job given as an object (the API's `launch(job)`, `prepare(ctx, options)`); `source` names it. */
export function validateJob(job: unknown, source = '<job>'): ParsedJob {
  const r = JobSchema.safeParse(job);
  if (r.success) return r.data;
  throw new ConfigError(
    source,
    r.error.issues.map((i) => ({ path: i.path.map(String).join('.'), line: undefined, message: i.message })),
  );
}

export function parseJob(text: string, file = '<job>'): ParsedJob {
  const lineCounter = new LineCounter();
  const doc = composeDocument(text, file, lineCounter);
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
    result.error.issues.map((issue) => locate(issue, doc, lineCounter)),
  );
}

/**
 * The file's one YAML document, refused at its first error. It is composed from the parser's syntax tree (built
 * without recursion) once the tree's depth is known to be bounded: composing recurses per level.
 */
function composeDocument(text: string, file: string, lineCounter: LineCounter): Document.Parsed {
  const refuse = (offset: number | undefined, message: string): never => {
    const line = offset === undefined ? undefined : lineCounter.linePos(offset).line;
    throw new ConfigError(file, [{ path: '', line, message: `YAML: ${message}` }]);
  };
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

function locate(issue: z.core.$ZodIssue, doc: Document.Parsed, lc: LineCounter): ConfigIssue {
  const path = issue.path.map(String);
  let message = issue.message;
  if (issue.code === 'unrecognized_keys') {
    path.push(issue.keys[0] ?? '');
    // A handful named, the rest counted: one line however many there are.
    const named = issue.keys.slice(0, 8).map((k) => `'${k}'`);
    const more = issue.keys.length - named.length;
    message = `unknown field${issue.keys.length > 1 ? 's' : ''} ${named.join(', ')}${more > 0 ? ` and ${more} more` : ''}`;
  }
  return { path: path.join('.'), line: lineOf(doc, lc, path), message };
}

/** The deepest node of `path` that exists in the document gives the line: a missing key points at its parent. */
function lineOf(doc: Document.Parsed, lc: LineCounter, path: readonly string[]): number | undefined {
  for (let depth = path.length; depth >= 0; depth--) {
    const node = depth === 0 ? doc.contents : doc.getIn(path.slice(0, depth), true);
    if (isNode(node) && node.range) return lc.linePos(node.range[0]).line;
  }
  return undefined;
}

/**
 * The line of a dotted field (`model.layers`) in a job file, for errors found after parsing (checks against the
 * dataset); undefined when the file cannot be read again.
 */
export function fieldLine(file: string, path: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  return lineOf(doc, lineCounter, path === '' ? [] : path.split('.'));
}

/**
 * The job with its model directories and modules (`model: {path}`, `model: {module}`, at the top and in job stages)
 * made absolute against the job file's directory: the workers, the checkpoints' headers and `kd-launch export` then
 * find them from anywhere.
 */
export function resolveModelPaths(job: ParsedJob, jobDir: string): ParsedJob {
  const absolute = <M extends ModelSpec | undefined>(m: M): M => {
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
