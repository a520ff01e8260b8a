/**
 * The job loader under fuzz (issue 16, point 4: no input of any kind produces "internal error"). Over ten thousand
 * generated job files (mutations of the project's real ones, random YAML, random bytes) are written to disk and
 * launched with --dry-run's path, `launch(file, {dryRun: true})`: each must plan, or be refused by a ConfigError or
 * LaunchError in clear lines (the CLI prints those as `kd-launch: …`; anything else is `kd-launch: internal error`),
 * and none may take long. A sample of the refused files goes through the real CLI as well.
 */
import { execFile } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { LaunchError } from '../../launcher/errors.ts';
import { launch } from '../../launcher/launch.ts';
import { ConfigError } from '../../src/config/errors.ts';
import { MAX_JOB_FILE_DEPTH } from '../../src/config/load.ts';
import {
  mutatedJob,
  Rng,
  randomBytes,
  randomYaml,
  type SourceJob,
  sourceJob,
  subtreePool,
} from './job-fuzz.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'bin/kd-launch.js');

/** The generated files, by generator: 10,000 in all, most of them mutations (they reach furthest into the checks). */
const COUNTS = { mutated: 6000, yaml: 2500, bytes: 1500 } as const;
type Generator = keyof typeof COUNTS;
const SEED = 16;
/** Longest a refusal line may be, past the file's name: one that echoes a 5,000-character value is not clear. */
const MAX_LINE_CHARS = 500;
/** Most lines a refusal may print: one a problem, and a count of the rest past a screenful. */
const MAX_LINES = 21;
/** Characters that break a line or drive the terminal (C0, C1, U+2028, U+2029); a tab is one too. */
const CONTROL = /[\p{Cc}\u2028\u2029]/u;
/** Slowest a single file may be to plan or refuse: a real one takes milliseconds, one at the size bound ~1 s. */
const MAX_FILE_MS = 5000;
const CLI_SAMPLE = 20;

/** The real job files whose mutations are generated, each with the directory its relative paths start from. */
function realJobs(): { source: SourceJob; dir: string }[] {
  const files = [
    ...readdirSync(join(ROOT, 'configs')).map((f) => join('configs', f)),
    ...readdirSync(join(ROOT, 'test/fixtures')).map((f) => join('test/fixtures', f)),
    ...readdirSync(join(ROOT, 'examples')).map((d) => join('examples', d, 'job.yaml')),
  ].filter((f) => f.endsWith('.yaml') && existsSync(join(ROOT, f)));
  return files.map((f) => ({
    source: sourceJob(f, readFileSync(join(ROOT, f), 'utf8')),
    dir: join(ROOT, dirname(f)),
  }));
}

/**
 * A directory beside which a mutated job finds what its original finds (data files, model directories, scripts):
 * links to every entry of the original's directory, so that mutations reach the checks of real data.
 */
function mirror(dir: string, into: string): string {
  mkdirSync(into);
  for (const entry of readdirSync(dir)) symlinkSync(join(dir, entry), join(into, entry));
  return into;
}

interface Case {
  generator: Generator;
  file: string;
  nproc: 1 | 2;
}

/** Writes every generated file; mutations go beside their original's mirror. */
function writeCases(tmp: string): Case[] {
  const rng = new Rng(SEED);
  const jobs = realJobs();
  const pool = subtreePool(jobs.map((j) => j.source));
  const mirrors = jobs.map((j, i) => mirror(j.dir, join(tmp, `mirror-${i}`)));
  const plain = join(tmp, 'plain');
  mkdirSync(plain);
  const cases: Case[] = [];
  const add = (generator: Generator, file: string, content: string | Buffer) => {
    writeFileSync(file, content);
    cases.push({ generator, file, nproc: rng.chance(0.5) ? 1 : 2 });
  };
  for (let i = 0; i < COUNTS.mutated; i++) {
    const j = rng.int(jobs.length);
    add('mutated', join(mirrors[j], `fuzz-${i}.yaml`), mutatedJob(rng, jobs[j].source, pool));
  }
  for (let i = 0; i < COUNTS.yaml; i++) add('yaml', join(plain, `yaml-${i}.yaml`), randomYaml(rng));
  for (let i = 0; i < COUNTS.bytes; i++) add('bytes', join(plain, `bytes-${i}.yaml`), randomBytes(rng));
  return cases;
}

type Outcome =
  | { kind: 'ok'; ms: number }
  | { kind: 'refused'; ms: number; message: string }
  | { kind: 'failed'; ms: number; why: string };

/** What is wrong with a refusal's message, or undefined when every line of it is clear. */
function unclear(err: ConfigError | LaunchError): string | undefined {
  const lines = err.message.split('\n');
  if (err.message.trim() === '') return 'an empty message';
  if (err instanceof LaunchError && lines.length > 1) return 'a LaunchError of more than one line';
  if (lines.length > MAX_LINES) return `${lines.length} lines`;
  for (const line of lines) {
    // A ConfigError's lines name its file (the job's, or a data file's), unless the name itself had to be escaped.
    const file = err instanceof ConfigError ? err.file : '';
    if (!line.startsWith(file) && !CONTROL.test(file)) return `a line that does not name ${file}: ${line}`;
    if (CONTROL.test(line)) return `a control character in ${JSON.stringify(line.slice(0, 300))}`;
    if (line.length - file.length > MAX_LINE_CHARS)
      return `a line of ${line.length} characters: ${line.slice(0, 300)}…`;
    if (/^\s+at /.test(line)) return 'a stack trace';
  }
  return undefined;
}

/** Plans one file as `kd-launch --dry-run` does, and says how that ended. */
async function outcomeOf({ file, nproc }: Case): Promise<Outcome> {
  const t0 = performance.now();
  const ms = () => performance.now() - t0;
  try {
    await launch(file, { dryRun: true, nproc }).result;
    return { kind: 'ok', ms: ms() };
  } catch (err) {
    if (err instanceof ConfigError || err instanceof LaunchError) {
      const why = unclear(err);
      return why === undefined
        ? { kind: 'refused', ms: ms(), message: err.message }
        : { kind: 'failed', ms: ms(), why: `${why}\n${err.message.slice(0, 2000)}` };
    }
    return {
      kind: 'failed',
      ms: ms(),
      why: `internal error: ${err instanceof Error ? err.stack : String(err)}`,
    };
  }
}

/** A failure as the assertion shows it: the file's content (cut), then what went wrong. */
function report(c: Case, why: string): string {
  const content = readFileSync(c.file).toString('utf8');
  const shown = content.length > 1500 ? `${content.slice(0, 1500)}… (${content.length} characters)` : content;
  return `${c.generator} ${c.file} (nproc ${c.nproc}):\n${shown}\n→ ${why}`;
}

const run = promisify(execFile);

/** `kd-launch --dry-run --nproc N FILE` as users run it: exit code and stderr. */
async function cli({ file, nproc }: Case): Promise<{ code: number; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, '--dry-run', '--nproc', String(nproc), file], {
      timeout: 60_000,
    });
    return { code: 0, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stderr?: string };
    return { code: e.code ?? -1, stderr: e.stderr ?? '' };
  }
}

describe('the job loader under fuzz', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'kd-job-fuzz-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  const refused: { c: Case; message: string }[] = [];

  it(`${Object.values(COUNTS).reduce((a, b) => a + b, 0)} generated job files plan or are refused in clear lines, none slowly`, async () => {
    const cases = writeCases(tmp);
    const tally = { ok: 0, refused: 0, failed: 0 };
    const byGenerator = new Map<string, number>();
    const failures: string[] = [];
    let slowest = { ms: 0, file: '' };
    for (const c of cases) {
      const o = await outcomeOf(c);
      tally[o.kind]++;
      byGenerator.set(`${c.generator} ${o.kind}`, (byGenerator.get(`${c.generator} ${o.kind}`) ?? 0) + 1);
      if (o.ms > slowest.ms) slowest = { ms: o.ms, file: c.file };
      if (o.kind === 'failed') failures.push(report(c, o.why));
      else if (o.ms > MAX_FILE_MS) failures.push(report(c, `took ${Math.round(o.ms)} ms`));
      if (o.kind === 'refused') refused.push({ c, message: o.message });
    }
    console.log(
      `job loader fuzz: ${cases.length} files, ${tally.ok} ok, ${tally.refused} refused, ${tally.failed} failed; ` +
        `${[...byGenerator].map(([k, n]) => `${k} ${n}`).join(', ')}; slowest ${Math.round(slowest.ms)} ms (${relative(tmp, slowest.file)})`,
    );
    expect(failures.slice(0, 5).join('\n\n'), `${failures.length} of ${cases.length} files`).toBe('');
    // The generators must reach past the parser into the checks: plans as well as refusals of every kind.
    expect(tally.ok).toBeGreaterThan(100);
  });

  it('the CLI prints a sample of those refusals as they are, after kd-launch:, never as an internal error', async () => {
    expect(refused.length).toBeGreaterThan(CLI_SAMPLE);
    // Spread over the list, which is in generator order: mutations, random YAML, random bytes.
    const step = Math.floor(refused.length / CLI_SAMPLE);
    const sample = Array.from({ length: CLI_SAMPLE }, (_, i) => refused[i * step]);
    const problems: string[] = [];
    // Two at a time: one per core.
    for (let i = 0; i < sample.length; i += 2) {
      const pair = sample.slice(i, i + 2);
      const results = await Promise.all(pair.map(({ c }) => cli(c)));
      results.forEach(({ code, stderr }, k) => {
        const { c, message } = pair[k];
        if (code !== 2 || stderr !== `kd-launch: ${message}\n`) {
          problems.push(report(c, `exit ${code}, stderr:\n${stderr.slice(0, 2000)}\nexpected:\n${message}`));
        }
      });
    }
    expect(problems.join('\n\n')).toBe('');
  });
});

/** A job that trains, as launch() takes it: the reproducers below break one field of it each. */
const JOB = {
  name: 'fixed',
  model: { type: 'mlp', layers: [784, 16, 10] },
  data: { dataset: 'mnist' },
  optimizer: { type: 'Adam', params: { lr: 0.001 } },
  train_micro_batch_size_per_gpu: 8,
  steps: 10,
};

describe('what the fuzz found, fixed', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'kd-job-fixed-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  /** The ConfigError's message that dry-running `job` (a file's text, or an object) ends in. */
  function refusal(job: string | Record<string, unknown>): string {
    let target: string | Record<string, unknown> = job;
    if (typeof job === 'string') {
      target = join(tmp, 'job.yaml');
      writeFileSync(target, job);
    }
    try {
      launch(target, { dryRun: true, nproc: 1 });
    } catch (err) {
      if (err instanceof ConfigError) return err.message.replaceAll(join(tmp, 'job.yaml'), 'job.yaml');
      throw err;
    }
    throw new Error('planned, not refused');
  }

  it('collections nested 1,000 deep: one line, twice in one process (the parser overflowed the stack, and V8 then aborted the process)', () => {
    for (let i = 0; i < 2; i++) {
      expect(refusal(`${'['.repeat(1000)}${']'.repeat(1000)}`)).toBe(
        `job.yaml: YAML: collections nested 1000 deep: a job file nests at most ${MAX_JOB_FILE_DEPTH}`,
      );
    }
  });

  it('a Transformer of 4e9 layers is refused by the schema (the plan built its blocks until the heap ran out)', () => {
    const model = {
      type: 'transformer',
      vocab: 20,
      seq_len: 16,
      dim: 8,
      heads: 2,
      layers: 4e9,
      ffn: 8,
      classes: 8,
    };
    expect(refusal({ ...JOB, data: { dataset: 'seqcls' }, model })).toBe(
      '<job>: model.layers: a Transformer has at most 256 encoder layers',
    );
  });

  it('a YAML error is one line with its line and column, the errors that follow from it counted (an unclosed [ made hundreds of lines, none with a line)', () => {
    expect(refusal(`name: x\nsteps: 1\nmodel: ${'['.repeat(40)}\n`)).toMatch(
      /^job\.yaml:4:1: YAML: .*\(and \d+ more YAML errors after it\)$/,
    );
    expect(refusal('name: x\n---\nname: y\n')).toBe(
      'job.yaml:2:1: YAML: a job file is one document, and a second one starts here',
    );
  });

  it('a value quoted in a message is cut and its control characters escaped (a 5,000-character name filled a screen)', () => {
    const message = refusal({
      ...JOB,
      optimizer: { type: `\u001b[31m\n${'Adam'.repeat(1250)}`, params: { lr: 1 } },
    });
    expect(message).toMatch(/^<job>: optimizer\.type: unknown optimizer type "\\u001b\[31m\\nAdamAdam.*…$/);
    expect(message.length).toBeLessThan(500);
  });

  it('2,000 bad stages are 20 lines and a count, not 2,000 lines', () => {
    const stages = Array.from({ length: 2000 }, (_, i) => ({ name: `s${i}`, steps: -1 }));
    const lines = refusal({ ...JOB, stages }).split('\n');
    expect(lines).toHaveLength(21);
    expect(lines[20]).toBe('<job>: and 1980 more problems');
  });

  it('a collection as a map key prints no warning of the parser on stderr', async () => {
    const warnings: Error[] = [];
    const listen = (w: Error) => warnings.push(w);
    process.on('warning', listen);
    try {
      expect(refusal('? [a, b]\n: 1\n')).toContain("unknown field '[ a, b ]'");
      // Node emits a warning on a later tick.
      await new Promise((done) => setImmediate(done));
    } finally {
      process.off('warning', listen);
    }
    expect(warnings).toEqual([]);
  });

  it('a data file that is a device is refused without reading it (/dev/zero was read until the heap ran out)', () => {
    expect(refusal({ ...JOB, data: { format: 'csv', path: '/dev/zero', label: 'y' } })).toBe(
      '/dev/zero: not a file',
    );
  });

  it('a checkpoint.dir that is a file is refused (listing it was ENOTDIR, an internal error)', () => {
    const file = join(tmp, 'not-a-dir');
    writeFileSync(file, '');
    expect(refusal({ ...JOB, checkpoint: { dir: file, every_steps: 5 } })).toBe(
      `<job>: checkpoint.dir: ${file} is not a directory: checkpoints are written into step-N directories inside it`,
    );
  });

  it('a dangling link in an image folder is not a class folder (stat-ing it was ENOENT, an internal error)', () => {
    const images = join(tmp, 'images');
    mkdirSync(join(images, 'only'), { recursive: true });
    symlinkSync(join(tmp, 'nowhere'), join(images, 'gone'));
    expect(refusal({ ...JOB, data: { format: 'images', path: images } })).toBe(
      `${images}: 1 class folder(s): a classifier needs at least 2`,
    );
  });

  it("a staged job's own model directory is checked even where every stage gives another (the plan built it: TfjsModelError)", () => {
    const stages = [{ name: 'only', model: JOB.model }];
    expect(refusal({ ...JOB, model: { path: tmp }, stages })).toBe(
      `<job>: model.path: ${tmp}: no model.json in ${tmp}`,
    );
  });
});
