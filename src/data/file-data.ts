/**
 * Classification sets of the user's own, from CSV (a header row, then one sample per row) or JSON Lines (one
 * object per line): numeric features, and a label given as a class index or a class name. Everything is checked
 * while reading, and the first problem is a ConfigError naming the file and its line, so that the launcher refuses
 * bad data before any worker starts (it reads the data to learn its shape, as the workers do to train on it).
 */
import { readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse } from 'csv-parse/sync';
import { ConfigError } from '../config/errors.ts';
import type { FileDataSpec } from '../config/file-data.ts';
import { MemorySet } from './labeled-set.ts';
import { ReadOnce } from './read-once.ts';
import { refuse } from './refuse.ts';
import { splitByFraction } from './split.ts';

/** A file's splits, with what was learned reading them. */
export interface FileData {
  readonly train: MemorySet;
  readonly test: MemorySet;
  /** Values per sample, in feature order (a JSON array feature counts its length). */
  readonly featureNames: readonly string[];
  /** Class i's name: `classes` as given, the label values sorted, or the indices themselves. */
  readonly classNames: readonly string[];
}

/** One row of a file: where it is, and its values by column (CSV: strings; JSON Lines: parsed JSON). */
interface Row {
  readonly line: number;
  readonly values: ReadonlyMap<string, unknown>;
}

interface Table {
  readonly file: string;
  readonly rows: readonly Row[];
  /** Column names in file order: the CSV header, or the first JSON object's keys. */
  readonly columns: readonly string[];
  /** Where the columns are named: the CSV header's line, or the first JSON object's. */
  readonly columnsLine: number;
}

function readCsv(file: string, text: string): Table {
  let records: { record: string[]; info: { lines: number } }[];
  try {
    // With `info`, each record comes with the line it ends on (the library's types do not follow the option).
    records = parse(text, {
      bom: true,
      trim: true,
      skip_empty_lines: true,
      relax_column_count: true,
      info: true,
    }) as unknown as typeof records;
  } catch (err) {
    const e = err as { lines?: number; message: string };
    refuse(file, e.lines, `not readable as CSV: ${e.message.replace(/ at line \d+$/, '')}`);
  }
  const [header, ...body] = records;
  if (!header)
    refuse(file, undefined, 'the file is empty: a CSV needs a header row, then one row per sample');
  const columns = header.record;
  const seen = new Set<string>();
  for (const c of columns) {
    if (c === '') refuse(file, header.info.lines, 'the header has an empty column name');
    if (seen.has(c)) refuse(file, header.info.lines, `the header names column '${c}' twice`);
    seen.add(c);
  }
  const rows = body.map(({ record, info }) => {
    if (record.length !== columns.length) {
      refuse(file, info.lines, `the row has ${record.length} values, the header ${columns.length}`);
    }
    return { line: info.lines, values: new Map(columns.map((c, i) => [c, record[i]])) };
  });
  return { file, rows, columns, columnsLine: header.info.lines };
}

function readJsonl(file: string, text: string): Table {
  const rows: Row[] = [];
  text.split(/\r?\n/).forEach((source, i) => {
    if (source.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(source);
    } catch (err) {
      refuse(file, i + 1, `not JSON: ${(err as Error).message}`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      refuse(file, i + 1, 'each line must be one JSON object ({"feature": …, "label": …})');
    }
    rows.push({ line: i + 1, values: new Map(Object.entries(value)) });
  });
  return { file, rows, columns: [...(rows[0]?.values.keys() ?? [])], columnsLine: rows[0]?.line ?? 1 };
}

function readTable(format: FileDataSpec['format'], file: string): Table {
  let text: string;
  try {
    // Read whole, so only a regular file: /dev/zero or a pipe never ends (reading one ran the heap out).
    if (!statSync(file).isFile()) refuse(file, undefined, 'not a file');
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    refuse(file, undefined, code === 'ENOENT' ? 'no such file' : `cannot read it (${code})`);
  }
  const table = format === 'csv' ? readCsv(file, text) : readJsonl(file, text);
  if (table.rows.length === 0) refuse(file, undefined, 'the file has no samples');
  return table;
}

/** A feature value as numbers: a number (CSV: its text), or in JSON Lines an array of numbers. */
function numbers(table: Table, row: Row, name: string): number[] {
  const v = row.values.get(name);
  if (v === undefined) refuse(table.file, row.line, `no '${name}' in this record`);
  const one = (x: unknown): number => {
    const n = typeof x === 'number' ? x : typeof x === 'string' && x.trim() !== '' ? Number(x) : Number.NaN;
    if (!Number.isFinite(n)) {
      refuse(table.file, row.line, `feature '${name}' is ${JSON.stringify(x)}, not a finite number`);
    }
    return n;
  };
  return Array.isArray(v) && typeof v !== 'string' ? v.map(one) : [one(v)];
}

/** The features' widths, from the first row (a JSON array feature is as wide as its array). */
function featureWidths(table: Table, features: readonly string[]): number[] {
  return features.map((f) => numbers(table, table.rows[0], f).length);
}

function labelText(table: Table, row: Row, label: string): string {
  const v = row.values.get(label);
  if (v === undefined || v === null || v === '')
    refuse(table.file, row.line, `no label ('${label}') in this record`);
  if (typeof v !== 'string' && typeof v !== 'number') {
    refuse(
      table.file,
      row.line,
      `label '${label}' is ${JSON.stringify(v)}: give a class index or a class name`,
    );
  }
  return String(v);
}

/**
 * Class names and each label text's index: `classes` as given; else, when every label is a whole number ≥ 0, the
 * indices themselves (0 … max); else the names, sorted.
 */
function classIndex(
  spec: FileDataSpec,
  tables: readonly Table[],
): { names: string[]; index: (table: Table, row: Row) => number } {
  const texts = tables.flatMap((t) => t.rows.map((r) => labelText(t, r, spec.label)));
  let names: string[];
  if (spec.classes) names = spec.classes.map(String);
  else if (texts.every((t) => /^\d+$/.test(t))) {
    const max = Math.max(...texts.map(Number));
    names = Array.from({ length: max + 1 }, (_, i) => String(i));
  } else names = [...new Set(texts)].sort();
  if (names.length < 2) {
    refuse(
      tables[0].file,
      undefined,
      `every sample has label '${texts[0]}': a classifier needs at least 2 classes`,
    );
  }
  if (names.length > 256) {
    refuse(tables[0].file, undefined, `${names.length} classes: labels are stored as bytes, at most 256`);
  }
  const lookup = new Map(names.map((n, i) => [n, i]));
  return {
    names,
    index: (table, row) => {
      const text = labelText(table, row, spec.label);
      const i = lookup.get(text);
      if (i === undefined) {
        const shown = names.length > 10 ? `${names.slice(0, 10).join(', ')}, …` : names.join(', ');
        refuse(table.file, row.line, `label '${text}' is not one of the classes (${shown})`);
      }
      return i;
    },
  };
}

/** The feature columns: as given (each must exist), or every column but the label. */
function featureColumns(spec: FileDataSpec, table: Table): string[] {
  const features = spec.features ?? table.columns.filter((c) => c !== spec.label);
  const line = table.columnsLine;
  const columns = table.columns.join(', ');
  if (!table.columns.includes(spec.label))
    refuse(table.file, line, `no label column '${spec.label}' (columns: ${columns})`);
  if (features.length === 0) refuse(table.file, line, `no feature columns besides the label '${spec.label}'`);
  for (const f of features) {
    if (!table.columns.includes(f))
      refuse(table.file, line, `no feature column '${f}' (columns: ${columns})`);
  }
  return features;
}

function toSet(
  table: Table,
  rows: readonly Row[],
  features: readonly string[],
  widths: readonly number[],
  classes: { names: readonly string[]; index: (table: Table, row: Row) => number },
): MemorySet {
  const featureSize = widths.reduce((a, b) => a + b, 0);
  const inputs = new Float32Array(rows.length * featureSize);
  const labels = new Uint8Array(rows.length);
  rows.forEach((row, i) => {
    let at = i * featureSize;
    features.forEach((f, j) => {
      const values = numbers(table, row, f);
      if (values.length !== widths[j]) {
        refuse(
          table.file,
          row.line,
          `feature '${f}' has ${values.length} values, the first record ${widths[j]}`,
        );
      }
      inputs.set(values, at);
      at += values.length;
    });
    labels[i] = classes.index(table, row);
  });
  return new MemorySet({ featureSize, numClasses: classes.names.length, inputs, labels });
}

function read(spec: FileDataSpec, jobDir: string): FileData {
  const files = spec.path !== undefined ? [spec.path] : [spec.train ?? '', spec.test ?? ''];
  const tables = files.map((f) => readTable(spec.format, resolve(jobDir, f)));
  const features = featureColumns(spec, tables[0]);
  for (const t of tables.slice(1)) featureColumns(spec, t);
  const widths = featureWidths(tables[0], features);
  const classes = classIndex(spec, tables);
  const sets = tables.map((t) => toSet(t, t.rows, features, widths, classes));
  const { train, test } =
    sets.length === 1 ? splitByFraction(spec, tables[0].file, sets[0]) : { train: sets[0], test: sets[1] };
  return {
    train,
    test,
    featureNames: features.flatMap((f, j) =>
      widths[j] === 1 ? [f] : Array.from({ length: widths[j] }, (_, k) => `${f}[${k}]`),
    ),
    classNames: classes.names,
  };
}

/**
 * The splits a `format:` data section describes, paths relative to `jobDir`. Read once per process for the same
 * spec and unchanged files (the launcher's check and the job stages of one job share it).
 */
export function readFileData(spec: FileDataSpec, jobDir: string): FileData {
  return once.get(
    spec,
    jobDir,
    [spec.path, spec.train, spec.test].filter((f): f is string => f !== undefined),
  );
}

const once = new ReadOnce(read);
