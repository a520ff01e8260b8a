/** docs/CONFIG.md is the schema's: regenerated here, it must be the file as committed, and every key documented. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { CONFIG_MD, configReference } from '../../scripts/config-reference.ts';

describe('the job file reference', () => {
  it('is what the schema generates (run `npm run docs:config` after changing the schema)', () => {
    expect(readFileSync(CONFIG_MD, 'utf8')).toBe(configReference());
  });

  it('lists the keys users write most, each with its default', () => {
    const doc = readFileSync(CONFIG_MD, 'utf8');
    for (const row of [
      /^\| `save` \| boolean \| `true` \|/m,
      /^\| `steps_per_print` \| integer > 0 \| `50` \|/m,
      /^\| `zero_optimization\.stage` \| /m,
      /^\| `distillation\.temperature` \| /m,
      /^\| `checkpoint\.every_steps` \| /m,
    ])
      expect(doc).toMatch(row);
  });

  it('refuses a schema key with no meaning, naming it', () => {
    const schema = z.object({
      documented: z.number().describe('a documented key'),
      bare: z.string(),
    });
    expect(() => configReference(schema)).toThrow(/keys without a description in the schema: bare/);
  });
});
