/**
 * docs/CONFIG.md, generated from the job schema (src/config/schema.ts): every key's dotted path, type, default and
 * meaning, the meanings taken from the schema's `.describe()` / `.meta()`, so that the reference and the validator
 * are one source. `npm run docs:config` writes it; test/config/config-reference.test.ts fails when it is stale.
 *
 * The schema's own metadata steers the walk: `title` names a variant of a union, `examples` are YAML shown under
 * a section, `internal` hides a key the user never writes, `reference` stands for a key documented elsewhere.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { z } from 'zod';
import { JobSchema } from '../src/config/schema.ts';

export const CONFIG_MD = fileURLToPath(new URL('../docs/CONFIG.md', import.meta.url));

type Schema = z.core.$ZodType;
type Def = z.core.$ZodTypeDef & Record<string, unknown>;

interface Meta {
  description?: string;
  title?: string;
  examples?: string[];
  internal?: boolean;
  reference?: string;
}

interface Row {
  key: string;
  type: string;
  default: string;
  meaning: string;
}

/** One table of the document: the top-level keys, a section, or one variant of a union. */
interface Block {
  title: string;
  description?: string;
  examples?: string[];
  rows: Row[];
}

const def = (s: Schema): Def => s._zod.def as Def;
const meta = (s: Schema): Meta => (z.globalRegistry.get(s) ?? {}) as Meta;

/** A field without its wrappers (optional, default, nullable, preprocess), and what they said. */
interface Field {
  core: Schema;
  meta: Meta;
  optional: boolean;
  nullable: boolean;
  default?: unknown;
  hasDefault: boolean;
}

function unwrap(schema: Schema): Field {
  const field: Field = { core: schema, meta: {}, optional: false, nullable: false, hasDefault: false };
  for (let s = schema; ; ) {
    // The outermost description wins: a field's own words over its type's.
    field.meta = { ...meta(s), ...field.meta };
    const d = def(s);
    if (d.type === 'optional') field.optional = true;
    else if (d.type === 'nullable') field.nullable = true;
    else if (d.type === 'default' && !field.hasDefault) {
      field.hasDefault = true;
      field.default = d['defaultValue'];
    }
    const inner = d.type === 'pipe' ? d['out'] : d['innerType'];
    if (!['optional', 'nullable', 'default', 'pipe'].includes(d.type)) {
      field.core = s;
      return field;
    }
    s = inner as Schema;
  }
}

const objectShape = (s: Schema) => def(s)['shape'] as Record<string, Schema>;
const unionOptions = (s: Schema) => def(s)['options'] as Schema[];
const isObject = (s: Schema) => def(s).type === 'object';
/** A union whose every option is an object: its options are variants, each documented as a section. */
const isVariantUnion = (s: Schema) =>
  def(s).type === 'union' && unionOptions(s).every((o) => isObject(unwrap(o).core));

/** A number's type with its bounds: `integer > 0`, `number in [0, 1)`. */
function numberType(s: Schema): string {
  const checks = ((def(s)['checks'] as Schema[] | undefined) ?? []).map((c) => def(c) as Def);
  const int = checks.some((c) => c['format'] === 'safeint');
  const low = checks.find((c) => c['check'] === 'greater_than');
  const high = checks.find((c) => c['check'] === 'less_than');
  const name = int ? 'integer' : 'number';
  if (low && high) {
    return `${name} in ${low['inclusive'] ? '[' : '('}${low['value']}, ${high['value']}${high['inclusive'] ? ']' : ')'}`;
  }
  if (low) return `${name} ${low['inclusive'] ? '≥' : '>'} ${low['value']}`;
  if (high) return `${name} ${high['inclusive'] ? '≤' : '<'} ${high['value']}`;
  return name;
}

function typeOf(schema: Schema): string {
  const { core, nullable } = unwrap(schema);
  const d = def(core);
  const of = (s: Schema) => {
    const t = typeOf(s);
    return t.includes(' | ') ? `(${t})` : t;
  };
  let type: string;
  switch (d.type) {
    case 'number':
      type = numberType(core);
      break;
    case 'enum':
      type = Object.values(d['entries'] as Record<string, string>).join(' | ');
      break;
    case 'literal':
      type = (d['values'] as unknown[]).map(String).join(' | ');
      break;
    case 'union':
      type = unionOptions(core).map(typeOf).join(' | ');
      break;
    case 'array':
      type = `list of ${of(d['element'] as Schema)}`;
      break;
    case 'tuple':
      type = `[${(d['items'] as Schema[]).map(typeOf).join(', ')}]`;
      break;
    case 'record':
      type = 'mapping';
      break;
    case 'object':
      type = `{${Object.keys(objectShape(core)).join(', ')}}`;
      break;
    case 'unknown':
      type = 'any';
      break;
    default:
      type = d.type;
  }
  return nullable ? `${type} | null` : type;
}

function defaultOf(f: Field): string {
  if (f.hasDefault) {
    return `\`${stringify(f.default, { collectionStyle: 'flow', flowCollectionPadding: false }).trim()}\``;
  }
  return f.optional ? '' : 'required';
}

/** The title of a union's option: its own `title`, else the discriminator's value, else its first key. */
function variantTitle(union: Schema, option: Schema): string {
  const { core, meta: m } = unwrap(option);
  if (m.title) return m.title;
  const key = def(union)['discriminator'] as string | undefined;
  if (key !== undefined) return `${key}: ${typeOf(objectShape(core)[key])}`;
  return Object.keys(objectShape(core))[0];
}

class Reference {
  readonly blocks: Block[] = [];
  readonly undocumented: string[] = [];

  /**
   * The rows of an object's keys into `block`, sections and variants below it into blocks of their own. A union's
   * variant has its `discriminator`, whose meaning goes without saying.
   */
  object(schema: Schema, prefix: string, block: Block, discriminator?: string): void {
    for (const [key, field] of Object.entries(objectShape(schema))) {
      const given = key === discriminator ? 'selects this kind' : undefined;
      this.field(field, `${prefix}${key}`, block, given);
    }
  }

  private field(schema: Schema, path: string, block: Block, given?: string): void {
    const f = unwrap(schema);
    if (f.meta.internal) return;
    const meaning = f.meta.description ?? given ?? '';
    if (meaning === '') this.undocumented.push(path);
    const row: Row = { key: path, type: typeOf(schema), default: defaultOf(f), meaning };
    block.rows.push(row);
    if (f.meta.reference !== undefined) {
      row.type = `as \`${f.meta.reference}\``;
      return;
    }
    const d = def(f.core);
    const element = d.type === 'array' ? unwrap(d['element'] as Schema) : undefined;
    const inner = element && (isObject(element.core) || isVariantUnion(element.core)) ? element.core : f.core;
    const at = inner === f.core ? path : `${path}[]`;
    if (isObject(inner)) {
      row.type = element ? 'list of sections' : 'section';
      // A top-level section is a table of its own; deeper ones stay in their section's.
      const own = path.includes('.') ? block : this.block(`\`${at}\``, element?.meta ?? f.meta);
      this.object(inner, `${at}.`, own);
    } else if (isVariantUnion(inner)) {
      const options = unionOptions(inner);
      const by = def(inner)['discriminator'];
      row.type = `${element ? 'list of ' : ''}one of ${options.length} kinds (below)`;
      for (const option of options) {
        const variant = unwrap(option);
        const own = this.block(`\`${at}\` — ${variantTitle(inner, option)}`, variant.meta);
        this.object(variant.core, `${at}.`, own, by as string | undefined);
      }
    }
  }

  block(title: string, m: Meta): Block {
    const block: Block = { title, description: m.description, examples: m.examples, rows: [] };
    this.blocks.push(block);
    return block;
  }
}

const cell = (text: string) => text.replace(/\s*\n\s*/g, ' ').replaceAll('|', '\\|');

function renderBlock(b: Block): string {
  const parts = [`## ${b.title}`];
  if (b.description) parts.push(b.description);
  for (const example of b.examples ?? []) parts.push(`\`\`\`yaml\n${example.trim()}\n\`\`\``);
  const rows = b.rows.map(
    (r) => `| \`${r.key}\` | ${cell(r.type)} | ${cell(r.default)} | ${cell(r.meaning)} |`,
  );
  parts.push(['| key | type | default | meaning |', '|---|---|---|---|', ...rows].join('\n'));
  return parts.join('\n\n');
}

/** The document of `schema` (the job's), or an error naming every key the schema gives no meaning. */
export function configReference(schema: Schema = JobSchema): string {
  const reference = new Reference();
  const top = reference.block('Top-level keys', meta(schema));
  reference.object(schema, '', top);
  if (reference.undocumented.length > 0) {
    throw new Error(`keys without a description in the schema: ${reference.undocumented.join(', ')}`);
  }
  return [
    '# Job file reference',
    'Generated from `src/config/schema.ts` by `npm run docs:config`: do not edit by hand (`test/config/config-reference.test.ts` fails when this file and the schema differ). Keys are dotted paths, as `kd-launch --set KEY=VALUE` takes them; `[]` stands for a list item, which `--set` names by its index (`--set stages.1.steps=20`). A blank default means the key may be left out; `required`, that it may not. Paths in a job file are relative to the job file.',
    ...reference.blocks.map(renderBlock),
  ]
    .join('\n\n')
    .concat('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(CONFIG_MD, configReference());
  process.stdout.write(`wrote ${CONFIG_MD}\n`);
}
