import { describe, expect, it } from 'vitest';
import { DistillationSpec } from '../../src/config/distillation.ts';

function messages(input: unknown): string[] {
  const r = DistillationSpec.safeParse(input);
  if (r.success) return [];
  return r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
}

describe('distillation config', () => {
  it("has TextBrewer's defaults", () => {
    expect(DistillationSpec.parse({})).toEqual({
      temperature: 4,
      temperature_scheduler: { type: 'none' },
      hard_label_weight: 0,
      hard_label_weight_scheduler: 'none',
      kd_loss_type: 'ce',
      kd_loss_weight: 1,
      kd_loss_weight_scheduler: 'none',
      probability_shift: false,
      intermediate_matches: [],
      is_caching_logits: false,
    });
  });

  it('accepts a full TextBrewer-style section, list forms included', () => {
    const spec = DistillationSpec.parse({
      temperature: 8,
      temperature_scheduler: ['flsw', 1, 2],
      hard_label_weight: 0.5,
      hard_label_weight_scheduler: 'linear_decay',
      kd_loss_type: 'mse',
      kd_loss_weight_scheduler: 'linear_growth',
      probability_shift: true,
      intermediate_matches: [
        {
          layer_T: 3,
          layer_S: 1,
          feature: 'hidden',
          loss: 'hidden_mse',
          weight: 1,
          proj: ['linear', 64, 128],
        },
        {
          layer_T: [0, 3],
          layer_S: [0, 1],
          feature: 'hidden',
          loss: 'fsp',
          weight: 0.5,
          proj: ['linear', 64, 128],
        },
        { layer_T: [1, 1], layer_S: [0, 0], feature: 'hidden', loss: 'nst' },
        { layer_T: 2, layer_S: 0, feature: 'attention', loss: 'attention_ce', weight: 1 },
      ],
    });
    expect(spec.temperature_scheduler).toEqual({ type: 'flsw', beta: 1, gamma: 2 });
    expect(spec.intermediate_matches[2].weight).toBe(1);
    expect(DistillationSpec.parse({ temperature_scheduler: ['cwsm', 0.5] }).temperature_scheduler).toEqual({
      type: 'cwsm',
      beta: 0.5,
    });
    expect(
      DistillationSpec.parse({ temperature_scheduler: { type: 'cwsm', beta: 2 } }).temperature_scheduler,
    ).toEqual({ type: 'cwsm', beta: 2 });
    expect(
      DistillationSpec.parse({ is_caching_logits: true, logits_cache: { top_k: 5, dtype: 'fp16' } })
        .logits_cache,
    ).toEqual({ top_k: 5, dtype: 'fp16' });
  });

  it('refuses bad values with messages that say what is wanted', () => {
    expect(messages({ temperature: 0 })).toEqual(['temperature: the temperature must be > 0']);
    expect(messages({ temperature_scheduler: 'flsw' })).toEqual([
      'temperature_scheduler.beta: flsw needs beta and gamma, e.g. {type: flsw, beta: 1, gamma: 2}',
      'temperature_scheduler.gamma: flsw needs beta and gamma, e.g. {type: flsw, beta: 1, gamma: 2}',
    ]);
    expect(messages({ temperature_scheduler: 'cosine' })[0]).toMatch(/none, constant, \{type: flsw/);
    expect(messages({ kd_loss_type: 'kl' })).toEqual(["kd_loss_type: kd_loss_type is 'ce' or 'mse'"]);
    expect(messages({ hard_label_weight_scheduler: 'cosine' })[0]).toMatch(
      /none, linear_decay or linear_growth/,
    );
    expect(messages({ kd_loss_weight: -1 })).toEqual(['kd_loss_weight: kd_loss_weight is ≥ 0']);
    expect(messages({ teacher: 'x' })[0]).toMatch(/teacher/);
  });

  it('checks each intermediate match against its loss', () => {
    const match = (m: Record<string, unknown>) =>
      messages({
        intermediate_matches: [{ layer_T: 1, layer_S: 0, feature: 'hidden', loss: 'hidden_mse', ...m }],
      });
    expect(match({})).toEqual([]);
    expect(match({ loss: 'fsp' })).toEqual([
      'intermediate_matches.0.layer_T: fsp compares two layers: give a pair such as [0, 3]',
      'intermediate_matches.0.layer_S: fsp compares two layers: give a pair such as [0, 3]',
    ]);
    expect(match({ layer_T: [0, 1] })).toEqual([
      'intermediate_matches.0.layer_T: hidden_mse takes one layer, not a pair',
    ]);
    expect(match({ loss: 'attention_ce' })).toEqual([
      "intermediate_matches.0.feature: attention_ce needs feature 'attention'",
    ]);
    expect(match({ feature: 'attention', loss: 'attention_mse', proj: ['linear', 2, 3] })).toEqual([
      'intermediate_matches.0.proj: attention maps are compared as they are: proj applies to hidden states only',
    ]);
    expect(match({ proj: ['conv', 2, 3] })).toEqual([
      'intermediate_matches.0.proj.0: a projection is linear, relu or tanh: proj: [linear, dim_S, dim_T]',
    ]);
    expect(match({ proj: ['linear', 2] })).toEqual([
      'intermediate_matches.0.proj: proj is [linear|relu|tanh, dim_S, dim_T], e.g. [linear, 64, 128]',
    ]);
    expect(match({ layer_T: -1 })).toEqual(['intermediate_matches.0.layer_T: a layer index is ≥ 0']);
    expect(match({ layer_S: true })[0]).toMatch(/layer_S: a layer is an index \(e\.g\. 3\) or a layer name/);
    expect(match({ loss: 'l1' })[0]).toMatch(/^intermediate_matches\.0\.loss: .*hidden_mse/);
    expect(match({ extra: 1 })[0]).toMatch(/extra/);
  });

  it('keeps caching consistent with what a cache can hold', () => {
    expect(messages({ logits_cache: { top_k: 3 } })).toEqual([
      'logits_cache: logits_cache applies only with is_caching_logits: true',
    ]);
    expect(
      messages({
        is_caching_logits: true,
        intermediate_matches: [{ layer_T: 1, layer_S: 0, feature: 'hidden', loss: 'hidden_mse' }],
      }),
    ).toEqual([
      'is_caching_logits: a cached teacher stores logits only: intermediate_matches need the live teacher',
    ]);
  });
});
