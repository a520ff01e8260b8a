/**
 * Generators of hostile job files for the loader's fuzz test (job-loader-fuzz.test.ts): mutations of the project's
 * real job files, random YAML documents, random bytes. Everything is drawn from one seeded generator, so the same
 * seed writes the same files and a failure reproduces.
 */
import { parse, stringify } from 'yaml';

/** mulberry32: small, fast and good enough to draw test inputs from. */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }

  /** Uniform in 0 … n − 1. */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Path = (string | number)[];

/** A real job file, parsed. */
export interface SourceJob {
  name: string;
  value: Json;
}

export function sourceJob(name: string, text: string): SourceJob {
  return { name, value: parse(text) as Json };
}

/** Values that break assumptions: signs, bounds, non-finite numbers, sizes, types, paths that are not files. */
const EXTREMES: readonly Json[] = [
  -1,
  0,
  1,
  0.5,
  -0.5,
  1e-320,
  1e308,
  -1e308,
  2 ** 31,
  2 ** 53 + 2,
  1e21,
  1e9,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  Number.NEGATIVE_INFINITY,
  'NaN',
  '.nan',
  '1e999',
  '0x10',
  '',
  ' ',
  'x'.repeat(5000),
  'a/'.repeat(300),
  'ünï\u0301cödé 💥 \u202e',
  '\u0000',
  '\t\r\n',
  null,
  true,
  false,
  {},
  [],
  { a: { b: { c: [1, { d: 2 }] } } },
  [1, 'two', null, [3]],
];

/** Paths that are not what a job names: endless devices, directories for files and files for directories. */
const HOSTILE_PATHS: readonly string[] = [
  '/dev/zero',
  '/dev/null',
  '/',
  '/dev',
  '/proc/self/status',
  // Links to descriptors that close as the folder is read: entries that vanish between listing and stat.
  '/proc/self/fd',
  '.',
  '..',
  'job.yaml',
  '/nonexistent/dir',
  '',
];

/** A top-level section as a real job writes it, naming a hostile path where the launcher reads one. */
function pathSection(rng: Rng): [string, Json] {
  const p = rng.pick(HOSTILE_PATHS);
  return rng.pick<[string, Json]>([
    ['checkpoint', { dir: p, every_steps: 1 }],
    ['data', { format: 'csv', path: p, label: 'y' }],
    ['data', { format: 'jsonl', path: p, label: 'y' }],
    ['data', { format: 'images', path: p }],
    ['data', { format: 'npy', path: p }],
    ['model', { path: p }],
    ['teachers', [{ model_dir: p }]],
    ['resume', p],
    ['output_dir', p],
    ['script', p],
  ]);
}

/** Keys of the job schema, at every level: added where they do not belong, or where they do with a bad value. */
export const JOB_KEYS: readonly string[] = [
  'name',
  'backend',
  'seed',
  'script',
  'args',
  'model',
  'data',
  'train_batch_size',
  'train_micro_batch_size_per_gpu',
  'gradient_accumulation_steps',
  'gradient_clipping',
  'optimizer',
  'scheduler',
  'epochs',
  'steps',
  'steps_per_print',
  'eval',
  'comm',
  'zero_optimization',
  'activation_checkpointing',
  'fp16',
  'bf16',
  'pipeline',
  'trace',
  'distillation',
  'checkpoint',
  'resume',
  'output_dir',
  'teachers',
  'stages',
  'seeds',
  'type',
  'params',
  'lr',
  'layers',
  'hidden',
  'input',
  'conv',
  'dense',
  'classes',
  'dataset',
  'format',
  'path',
  'train',
  'test',
  'label',
  'stage',
  'stages',
  'partition',
  'micro_batches',
  'model_dir',
  'module',
  'export',
  'dir',
  'every_steps',
  'enabled',
  'temperature',
  'intermediate_matches',
  'layer_S',
  'layer_T',
  'seq_len',
  'vocab',
];

/** Every path into `value` (not the root). */
function pathsOf(value: Json, prefix: Path = []): Path[] {
  if (value === null || typeof value !== 'object') return [];
  const keys: (string | number)[] = Array.isArray(value) ? value.map((_, i) => i) : Object.keys(value);
  return keys.flatMap((k) => {
    const path = [...prefix, k];
    return [path, ...pathsOf((value as Record<string | number, Json>)[k], path)];
  });
}

function getAt(root: Json, path: Path): Json {
  return path.reduce<Json>((v, k) => (v as Record<string | number, Json>)[k], root);
}

function parentOf(root: Json, path: Path): Record<string | number, Json> {
  return getAt(root, path.slice(0, -1)) as Record<string | number, Json>;
}

/** A value of another type holding the same information where it can: what a careless edit writes. */
function retyped(rng: Rng, v: Json): Json {
  if (typeof v === 'number') return rng.pick([String(v), [v], { value: v }, v > 0]);
  if (typeof v === 'string') return rng.pick([Number(v.length), [v], { [v]: v }, v === '']);
  if (typeof v === 'boolean') return rng.pick([Number(v), String(v), [v]]);
  if (Array.isArray(v))
    return rng.pick([Object.fromEntries(v.map((x, i) => [String(i), x])), v.length, String(v)]);
  if (v !== null && typeof v === 'object') return rng.pick([Object.values(v), Object.keys(v).join(','), 1]);
  return rng.pick([0, '', [], {}]);
}

/** Numbers scaled far out of range: a hidden layer of a billion units, a batch of -32, a step of 1e-300. */
function scaled(rng: Rng, v: Json): Json {
  if (typeof v !== 'number') return v;
  return v * rng.pick([-1, 0, 1e3, 1e6, 1e9, 1e15, 1e-300, 0.5]);
}

/** A list grown past any real job's (hundreds of layers, stages, matches) or a string past any real name. */
function grown(rng: Rng, v: Json): Json {
  if (Array.isArray(v) && v.length > 0)
    return Array.from({ length: 50 + rng.int(2000) }, (_, i) => v[i % v.length]);
  // At most 100,000 characters: a string grown twice would otherwise pass V8's longest (Invalid string length).
  if (typeof v === 'string')
    return v.repeat(Math.min(1 + rng.int(2000), Math.ceil(100_000 / Math.max(1, v.length))));
  return v;
}

/** One structural edit of `root` (a clone) in place; `pool` lends subtrees of other real jobs. */
function mutateOnce(rng: Rng, root: Json, pool: readonly Json[]): Json {
  const paths = pathsOf(root);
  if (paths.length === 0) return rng.pick(pool);
  if (rng.chance(0.1) && root !== null && typeof root === 'object' && !Array.isArray(root)) {
    const [key, section] = pathSection(rng);
    root[key] = section;
    return root;
  }
  const path = rng.pick(paths);
  const parent = parentOf(root, path);
  const key = path[path.length - 1];
  const value = parent[key];
  switch (rng.int(8)) {
    case 0:
      if (Array.isArray(parent)) parent.splice(Number(key), 1);
      else delete parent[key];
      break;
    case 1:
    case 2:
      parent[key] = structuredClone(
        rng.pick(typeof value === 'string' ? [...EXTREMES, ...HOSTILE_PATHS] : EXTREMES),
      );
      break;
    case 3:
      parent[key] = retyped(rng, value);
      break;
    case 4:
      parent[key] = scaled(rng, value);
      break;
    case 5:
      parent[key] = grown(rng, value);
      break;
    case 6:
      // Another job's subtree in this place: a real value of the wrong section, or of the right one elsewhere.
      parent[key] = structuredClone(rng.pick(pool));
      break;
    default: {
      const map = value !== null && typeof value === 'object' && !Array.isArray(value) ? value : parent;
      if (!Array.isArray(map)) map[rng.pick(JOB_KEYS)] = structuredClone(rng.pick([...EXTREMES, ...pool]));
    }
  }
  return root;
}

/** Edits of the text itself, after serialising: what no object can hold (duplicate keys, bad bytes, line ends). */
function corruptText(rng: Rng, text: string): string {
  const lines = text.split('\n');
  const at = rng.int(lines.length);
  switch (rng.int(9)) {
    case 0:
      lines.splice(at, 0, lines[at]); // a duplicate key, or a duplicate list item
      return lines.join('\n');
    case 1:
      return text.replaceAll('\n', '\r\n');
    case 2:
      return `\ufeff${text}`;
    case 3:
      return text.slice(0, rng.int(text.length + 1));
    case 4: {
      const i = rng.int(text.length + 1);
      return (
        text.slice(0, i) +
        rng.pick(['\0', '\t', '\r', '\u2028', '\ufffe', ':', '- ', '{', ']', '&a', '*a', '!!']) +
        text.slice(i)
      );
    }
    case 5:
      lines[at] = `\t${lines[at]}`;
      return lines.join('\n');
    case 6:
      lines.splice(at, 1);
      return lines.join('\n');
    case 7:
      return `${text}\n---\n${text}`;
    default:
      lines[at] = `  ${lines[at]}`;
      return lines.join('\n');
  }
}

/** Every subtree of the real jobs: values another job's mutation may borrow. */
export function subtreePool(sources: readonly SourceJob[]): Json[] {
  return sources.flatMap((s) => pathsOf(s.value).map((p) => getAt(s.value, p)));
}

/** A real job with one to four edits, written as YAML (sometimes JSON, which YAML reads too), maybe corrupted. */
export function mutatedJob(rng: Rng, source: SourceJob, pool: readonly Json[]): string {
  let value = structuredClone(source.value);
  for (let n = 1 + rng.int(4); n > 0; n--) value = mutateOnce(rng, value, pool);
  const text = rng.chance(0.15) ? JSON.stringify(value, null, rng.int(3)) : stringify(value);
  return rng.chance(0.25) ? corruptText(rng, text) : text;
}

/** Scalars as YAML writes them: every core-schema form, YAML 1.1's tags, quoting, escapes, aliases' targets. */
const SCALARS: readonly string[] = [
  '1',
  '-1',
  '0',
  '-0',
  '3.5',
  '1e308',
  '1e999',
  '-1e999',
  '.nan',
  '.inf',
  '-.inf',
  '0x7fffffffffffffff',
  '0o777',
  '1_000',
  '123456789012345678901234567890',
  '~',
  'null',
  'true',
  'yes',
  'off',
  '""',
  "''",
  '"\\u0000\\x7f\\U0001F600"',
  '"\\e\\N\\_\\L"',
  "'it''s'",
  'mlp',
  'cnn',
  'transformer',
  'tfjs',
  'mnist',
  'seqcls',
  'csv',
  'images',
  'npy',
  'Adam',
  'SGD',
  'WarmupLR',
  '784',
  '10',
  '32',
  '0.001',
  '2001-12-14t21:59:43.10-05:00',
  '!!binary aGVsbG8gd29ybGQ=',
  '!!binary "not base64 ~~~"',
  '!!timestamp 2001-12-14',
  '!!timestamp not-a-date',
  '!!int "12"',
  '!!int twelve',
  '!!float "x"',
  '!!str 12',
  '!!null x',
  '!!bool maybe',
  '!custom 1',
  '!<tag:yaml.org,2002:int> 3',
  '!<tag:example.com,2000:app/foo> bar',
  '!!js/function "function () {}"',
  '!!python/object:os.system ls',
  '%',
  '@x',
  '`x',
  'ünï\u0301cödé',
  '💥',
  '"unterminated',
  "'unterminated",
];

/** A random YAML document: block and flow collections, anchors and aliases, merge keys, tags, directives. */
class RandomYaml {
  private readonly anchors: string[] = [];

  constructor(private readonly rng: Rng) {}

  document(): string {
    const rng = this.rng;
    const head = rng.pick([
      '',
      '',
      '',
      '---\n',
      '%YAML 1.2\n---\n',
      '%YAML 1.1\n---\n',
      '%TAG !e! tag:e.com,2000:\n---\n',
      '--- !!map\n',
      '# a comment\n',
    ]);
    const body = rng.chance(0.85) ? this.blockMap(0, 0) : this.node(0, 0);
    return head + body;
  }

  private key(): string {
    const rng = this.rng;
    const roll = rng.next();
    if (roll < 0.7) return rng.pick(JOB_KEYS);
    if (roll < 0.75 && this.anchors.length > 0) return '<<';
    if (roll < 0.8) return `? ${this.flow(2)}\n`;
    if (roll < 0.9) return rng.pick(SCALARS);
    return `k${rng.int(1000)}`;
  }

  /** Anchor and tag in front of a node, sometimes. */
  private props(collectionTag: boolean): string {
    const rng = this.rng;
    let out = '';
    if (rng.chance(0.1)) {
      const name = `a${this.anchors.length}`;
      this.anchors.push(name);
      out += `&${name} `;
    }
    if (collectionTag && rng.chance(0.1))
      out += `${rng.pick(['!!set', '!!omap', '!!pairs', '!!map', '!!seq', '!e!x', '!!binary'])} `;
    return out;
  }

  private scalar(): string {
    const rng = this.rng;
    if (this.anchors.length > 0 && rng.chance(0.1))
      return `*${rng.chance(0.9) ? rng.pick(this.anchors) : 'nowhere'}`;
    return `${this.props(false)}${rng.pick(SCALARS)}`;
  }

  private flow(depth: number): string {
    const rng = this.rng;
    if (depth > 3 || rng.chance(0.5)) return this.scalar();
    const n = rng.int(4);
    if (rng.chance(0.5)) {
      const items = Array.from({ length: n }, () => this.flow(depth + 1));
      return `${this.props(true)}[${items.join(', ')}]`;
    }
    const entries = Array.from({ length: n }, () => `${rng.pick(JOB_KEYS)}: ${this.flow(depth + 1)}`);
    return `${this.props(true)}{${entries.join(', ')}}`;
  }

  /** A value after `key:` or `- `: inline, or a block collection on the following lines. */
  private node(indent: number, depth: number): string {
    const rng = this.rng;
    const roll = rng.next();
    if (depth > 5 || roll < 0.45) return ` ${this.scalar()}\n`;
    if (roll < 0.6) return ` ${this.flow(0)}\n`;
    if (roll < 0.65)
      return ` ${rng.pick(['|', '>-', '|+', '>2'])}\n${' '.repeat(indent + 2)}text\n${' '.repeat(indent + rng.int(4))}more\n`;
    // Mostly the right indentation; sometimes one that YAML must refuse.
    const inner = indent + (rng.chance(0.95) ? 2 : rng.pick([0, 1, 3]));
    const props = this.props(true);
    const body = rng.chance(0.6) ? this.blockMap(inner, depth + 1) : this.blockSeq(inner, depth + 1);
    return ` ${props}\n${body}`;
  }

  private blockMap(indent: number, depth: number): string {
    const pad = ' '.repeat(indent);
    const n = 1 + this.rng.int(6);
    return Array.from({ length: n }, () => `${pad}${this.key()}:${this.node(indent, depth)}`).join('');
  }

  private blockSeq(indent: number, depth: number): string {
    const pad = ' '.repeat(indent);
    const n = 1 + this.rng.int(4);
    return Array.from({ length: n }, () => `${pad}-${this.node(indent, depth)}`).join('');
  }
}

/** One to three random YAML documents, sometimes corrupted as the mutated jobs are. */
export function randomYaml(rng: Rng): string {
  const docs = Array.from({ length: rng.chance(0.1) ? 2 + rng.int(2) : 1 }, () =>
    new RandomYaml(rng).document(),
  );
  const text = docs.join(rng.pick(['---\n', '...\n---\n']));
  return rng.chance(0.2) ? corruptText(rng, text) : text;
}

/** YAML's indicators, whitespace and line ends: random text that the parser takes apart far into its grammar. */
const YAML_CHARS = '{}[]:,-?&*!|>\'"%@`# \t\n\r\n\nabcxyz019.~\\';

/** Random bytes: uniform (invalid UTF-8 included), YAML's own characters, or Unicode text. */
export function randomBytes(rng: Rng): Buffer {
  const length = rng.int(rng.chance(0.9) ? 512 : 8192);
  switch (rng.int(3)) {
    case 0:
      return Buffer.from(Array.from({ length }, () => rng.int(256)));
    case 1:
      return Buffer.from(Array.from({ length }, () => YAML_CHARS[rng.int(YAML_CHARS.length)]).join(''));
    default:
      // Lone surrogates included: they are written as U+FFFD, as any editor would.
      return Buffer.from(String.fromCodePoint(...Array.from({ length }, () => rng.int(0x110000))));
  }
}
