import { statSync } from 'node:fs';
import { resolve } from 'node:path';

/**
 * Reads a data section once per process while its files are unchanged: the launcher's check and the job stages of
 * one job share what one read made. The key is the spec, the job's directory and each file's mtime and size (a file
 * rewritten between two jobs of one process is read again).
 */
export class ReadOnce<Spec, Data> {
  readonly #cache = new Map<string, Data>();

  constructor(readonly read: (spec: Spec, jobDir: string) => Data) {}

  get(spec: Spec, jobDir: string, files: readonly string[]): Data {
    const stamps = files.map((f) => {
      try {
        const st = statSync(resolve(jobDir, f));
        return `${st.mtimeMs}:${st.size}`;
      } catch {
        return 'missing';
      }
    });
    const key = JSON.stringify([spec, resolve(jobDir), stamps]);
    let data = this.#cache.get(key);
    if (data === undefined) {
      data = this.read(spec, jobDir);
      this.#cache.set(key, data);
    }
    return data;
  }
}
