/** What the data tests share: the one line a reader's ConfigError says. */
import { expect } from 'vitest';
import { ConfigError } from '../../src/config/errors.ts';

/** The ConfigError's one line for what `read` reads; fails when it reads without one. */
export async function refusal(read: () => unknown): Promise<string> {
  try {
    await read();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('the data was accepted');
}
