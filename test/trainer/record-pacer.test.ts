import { describe, expect, it } from 'vitest';
import { RecordPacer } from '../../src/trainer/record-pacer.ts';

describe('the step records are paced', () => {
  it('records the first step, then one every interval, with the means of the steps it covers', () => {
    let now = 0;
    const pacer = new RecordPacer(100, () => now);
    const recorded: { at: number; loss: number; grad_norm: number }[] = [];
    // 30 steps 10 ms apart, loss 30, 29, …; grad norm 1, 2, ….
    for (let i = 0; i < 30; i++) {
      now = i * 10;
      const r = pacer.add(30 - i, i + 1, false);
      if (r) recorded.push({ at: now, ...r });
    }
    expect(recorded.map((r) => r.at)).toEqual([0, 100, 200]);
    expect(recorded[0]).toMatchObject({ loss: 30, grad_norm: 1 });
    // Steps 2–11 (losses 29…20): their mean.
    expect(recorded[1].loss).toBeCloseTo(24.5, 12);
    expect(recorded[1].grad_norm).toBeCloseTo(6.5, 12);
  });

  it('a due step (the last, one that logs or evaluates) is recorded at once, and starts the next interval', () => {
    let now = 0;
    const pacer = new RecordPacer(100, () => now);
    expect(pacer.add(4, 1, false)).toEqual({ loss: 4, grad_norm: 1 });
    now = 5;
    expect(pacer.add(2, 1, false)).toBeUndefined();
    now = 10;
    expect(pacer.add(6, 3, true)).toEqual({ loss: 4, grad_norm: 2 });
    now = 105;
    expect(pacer.add(1, 1, false)).toBeUndefined();
    now = 110;
    expect(pacer.add(3, 1, false)).toEqual({ loss: 2, grad_norm: 1 });
  });
});
