import { ConfigError } from '../config/errors.ts';

/**
 * Bad data of the user's own, as the one line the launcher prints before any worker starts: the file (or folder),
 * the line where there is one, what is wrong.
 */
export function refuse(source: string, line: number | undefined, message: string): never {
  throw new ConfigError(source, [{ path: '', line, message }]);
}
