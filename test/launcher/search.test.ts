/**
 * A `search:` stage on 2 worker processes: candidates drawn under the budget, trained by successive halving on a
 * held-out share of the training set, the best one trained in full as the stage's model and handed to the next
 * stage; the trials table as the launcher prints it; a search that cannot run refused before any worker starts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { trialsTable } from '../../launcher/render.ts';
import { stagesTable } from '../../launcher/run/report-sections.ts';
import { ModelSpec } from '../../src/config/schema.ts';
import { SearchSpec } from '../../src/config/search.ts';
import { loadNetModel } from '../../src/models/net-dir.ts';
import { isSearchable, searchCandidates, smallestCandidate } from '../../src/models/search-space.ts';
import type { JobStagesReport } from '../../src/trainer/job-stages.ts';
import { refusalOf, reportsOf } from './compare.ts';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'kd-search-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const base = ModelSpec.parse({ type: 'mlp', layers: [784, 16, 10] });
const search = SearchSpec.parse({
  space: { hidden_layers: [1, 2], units: [8, 16, 32] },
  max_parameters: 20_000,
  trials: 4,
  min_steps: 8,
});

describe('the candidates of a search', () => {
  it('are distinct, within the budget, the same for the same seed, and the smallest is what the budget is checked on', () => {
    if (!isSearchable(base)) throw new Error('an MLP is searchable');
    const drawn = searchCandidates(base, search, 42);
    expect(drawn).toHaveLength(4);
    expect(new Set(drawn.map((c) => c.name)).size).toBe(4);
    for (const c of drawn) {
      expect(c.parameters).toBeLessThanOrEqual(20_000);
      expect(c.name).toMatch(/^784-(8|16|32)(-(8|16|32))?-10$/);
    }
    expect(searchCandidates(base, search, 42)).toEqual(drawn);
    // 784·8 + 8 + 8·10 + 10 parameters.
    expect(smallestCandidate(base, search.space)).toMatchObject({ name: '784-8-10', parameters: 6370 });
    // Only 784-8-10 and 784-8-8-10 fit 6,500: fewer candidates than trials.
    const tight = searchCandidates(base, { ...search, max_parameters: 6500 }, 42).map((c) => c.name);
    expect(tight.sort()).toEqual(['784-8-10', '784-8-8-10']);
  });
});

describe('a search stage', () => {
  it('halves 4 trials to 2 to 1, trains the winner as its model, and the next stage starts from it', async () => {
    const out = join(tmp, 'out');
    const reports = await reportsOf(
      {
        name: 'search',
        data: { dataset: 'mnist' },
        train_micro_batch_size_per_gpu: 16,
        optimizer: { type: 'Adam', params: { lr: 0.003 } },
        steps: 20,
        seed: 42,
        output_dir: out,
        model: base,
        stages: [
          { name: 'found', search },
          { name: 'tuned', model: { stage: 'found' }, steps: 4 },
        ],
      },
      2,
    );
    const report = reports.find((d) => (d as { kind?: string }).kind === 'stages') as JobStagesReport;
    const [found, tuned] = report.rows;
    const trials = found.trials ?? [];
    if (!isSearchable(base)) throw new Error('an MLP is searchable');
    expect(trials.map((t) => t.name)).toEqual(searchCandidates(base, search, 42).map((c) => c.name));
    expect(trials.map((t) => t.scores.map((s) => s.steps))).toContainEqual([8, 16]);
    expect(trials.filter((t) => t.scores.length === 2)).toHaveLength(2);
    expect(trials.every((t) => t.scores.length >= 1 && t.scores[0].steps === 8)).toBe(true);
    // The winner is the better of the two in the last rung (ties: fewer parameters).
    const finalists = trials.filter((t) => t.scores.length === 2);
    const winner = trials.find((t) => t.winner);
    const best = [...finalists].sort(
      (a, b) => b.scores[1].accuracy - a.scores[1].accuracy || a.parameters - b.parameters,
    )[0];
    expect(winner?.name).toBe(best.name);
    // The stage's model is the winner, trained its 20 steps; the next stage trains on from it.
    const layers = (dir: string) =>
      (loadNetModel(join(out, dir)).spec as { layers: number[] }).layers.join('-');
    expect(layers('found')).toBe(winner?.name);
    expect(layers('tuned')).toBe(winner?.name);
    expect(found.steps).toBe(20);
    expect(found.parameters).toBe(winner?.parameters);
    expect(tuned.parameters).toBe(winner?.parameters);
    expect(found.accuracy_mean).toBeGreaterThan(0.3);
    // The HTML report shows the trials under the stages table.
    const html = stagesTable({ type: 'stages', rows: report.rows, output_root: out });
    expect(html).toContain('<h3>Search found: 4 trials, successive halving</h3>');
    expect(html).toContain(`<td>${winner?.name}</td>`);
    expect(html.match(/>winner</g)).toHaveLength(1);
  });

  it('prints a trials table: one row per candidate, a column per rung, the winner marked', () => {
    const text = trialsTable('found', [
      {
        name: '784-32-10',
        parameters: 25450,
        scores: [
          { steps: 8, accuracy: 0.5 },
          { steps: 16, accuracy: 0.7 },
        ],
        winner: true,
      },
      { name: '784-8-10', parameters: 6370, scores: [{ steps: 8, accuracy: 0.25 }], winner: false },
    ]);
    expect(text.split('\n')).toEqual([
      'search found: successive halving, 2 trials',
      'trial  model      params  held-out % @8  held-out % @16',
      '─────  ─────────  ──────  ─────────────  ──────────────  ────────',
      '    1  784-32-10  25,450          50.00           70.00  ← winner',
      '    2  784-8-10    6,370          25.00',
    ]);
  });

  const refusal = (name: string, lines: string[]) => refusalOf(tmp, name, lines);
  const space = 'search: {space: {units: [8, 16]}, max_parameters: 20000}';

  it('is refused before any worker starts: a budget nothing fits, at the top level, too little left to train, seeds, another model’s keys', () => {
    expect(
      refusal('budget', [
        'stages:',
        '  - {name: a, search: {space: {units: [8, 16]}, max_parameters: 1000}}',
      ]),
    ).toMatch(
      /budget\.yaml:8:\d+: stages\.0\.search\.max_parameters: stage 'a': no candidate of the search space has at most 1000 parameters: the smallest, 784-8-10, has 6370/,
    );
    expect(refusal('top', [space])).toMatch(/top\.yaml:7:\d+: search: search is a stage's/);
    expect(
      refusal('held', [
        'stages:',
        '  - {name: a, search: {space: {units: [8]}, max_parameters: 20000, validation_fraction: 0.999}}',
      ]),
    ).toMatch(
      /held\.yaml:8:\d+: stages\.0\.search\.validation_fraction: stage 'a': validation_fraction 0\.999 leaves the trials 8 training samples, fewer than train_batch_size 32/,
    );
    expect(
      refusal('reduce', [
        'stages:',
        `  - {name: a, ${space}}`,
        '  - {name: b, model: {stage: a, layers: [0]}}',
      ]),
    ).toMatch(
      /reduce\.yaml:9:\d+: stages\.1\.model\.layers: stage 'b' reduces stage 'a', which searches: its layers are known only once it has run/,
    );
    expect(refusal('seeds', ['stages:', `  - {name: a, seeds: [1, 2], ${space}}`])).toMatch(
      /seeds\.yaml:8:\d+: stages\.0\.seeds: stage 'a' searches once: leave seeds out/,
    );
    expect(
      refusal('keys', [
        'stages:',
        '  - {name: a, search: {space: {units: [8], dim: [16]}, max_parameters: 20000}}',
      ]),
    ).toMatch(
      /keys\.yaml:8:\d+: stages\.0\.search\.space\.dim: stage 'a' searches an mlp, whose space has hidden_layers, units; dim is another model's/,
    );
  });
});
