import { describe, expect, it } from 'vitest';
import { TRACE_OFF, TraceSpec } from '../../src/config/trace.ts';

describe('TraceSpec', () => {
  it('turns tracing on when the section is given', () => {
    expect(TraceSpec.parse({})).toEqual({ enabled: true });
    expect(TraceSpec.parse({ path: 'out/t.json' })).toEqual({ enabled: true, path: 'out/t.json' });
    expect(TraceSpec.parse({ enabled: false })).toEqual(TRACE_OFF);
  });

  it('rejects unknown keys and empty paths', () => {
    expect(TraceSpec.safeParse({ file: 'x' }).success).toBe(false);
    expect(TraceSpec.safeParse({ path: '' }).success).toBe(false);
  });
});
