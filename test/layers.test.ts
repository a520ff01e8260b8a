/**
 * The layer list of docs/ARCHITECTURE.md is the rule: every folder of src/ (and launcher/) imports only from its
 * own layer and the layers before it. The list is read from the document itself, so the two cannot drift apart.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** `base, trace, backend (0) → config (1) → …` from the document's "## Layers" section: folder → layer. */
function documentedLayers(): Map<string, number> {
  const doc = readFileSync(join(ROOT, 'docs', 'ARCHITECTURE.md'), 'utf8');
  const section = doc.split('## Layers')[1]?.split('\n\n')[1] ?? '';
  const layers = new Map<string, number>();
  for (const part of section.split(';')[0].split('→')) {
    const m = /^\s*([\w,\s]+?)\s*\((\d+)\)\s*$/.exec(part.replace(/\n/g, ' '));
    if (!m) throw new Error(`ARCHITECTURE.md's layer list has an unreadable part: '${part.trim()}'`);
    for (const name of m[1].split(',')) layers.set(name.trim(), Number(m[2]));
  }
  return layers;
}

/** The folder a path belongs to: `src/<folder>/…` → folder, `launcher/…` → launcher. */
function folderOf(path: string): string | undefined {
  const rel = relative(ROOT, path).split('/');
  if (rel[0] === 'launcher') return 'launcher';
  if (rel[0] === 'src' && rel.length > 2) return rel[1];
  return undefined;
}

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Relative imports of a file, static and dynamic, resolved to absolute paths. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map((m) => m[1]);
  return specs.map((s) => resolve(dirname(file), s));
}

describe('layers', () => {
  const layers = documentedLayers();
  const files = [...sources(join(ROOT, 'src')), ...sources(join(ROOT, 'launcher'))];

  it('ARCHITECTURE.md names every folder of src/ and launcher/', () => {
    const folders = new Set(files.map(folderOf).filter((f): f is string => f !== undefined));
    expect([...folders].filter((f) => !layers.has(f))).toEqual([]);
    expect([...layers.keys()].filter((f) => !folders.has(f))).toEqual([]);
  });

  it('no folder imports a later layer (src/index.ts, the public API, may import any)', () => {
    const violations: string[] = [];
    for (const file of files) {
      const from = folderOf(file);
      if (from === undefined) continue;
      for (const target of importsOf(file)) {
        const to = folderOf(target);
        if (to === undefined || to === from) continue;
        const a = layers.get(from) ?? -1;
        const b = layers.get(to) ?? Number.POSITIVE_INFINITY;
        if (b > a)
          violations.push(
            `${relative(ROOT, file)} (${from}, ${a}) imports ${relative(ROOT, target)} (${to}, ${b})`,
          );
      }
    }
    expect(violations).toEqual([]);
  });

  it('src/base imports nothing else of src/', () => {
    const base = files.filter((f) => folderOf(f) === 'base');
    expect(base.length).toBeGreaterThan(0);
    const outside = base.flatMap((f) =>
      importsOf(f)
        .filter((t) => folderOf(t) !== 'base')
        .map((t) => `${f} → ${t}`),
    );
    expect(outside).toEqual([]);
  });
});
