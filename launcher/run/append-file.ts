/** A file the launcher appends to as a run goes, synchronously: what was written survives the launcher's death. */
import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';

export class AppendFile {
  /** Undefined once closed: a descriptor closed twice could close another file that reused its number. */
  private fd: number | undefined;

  /** Creates `path`, or empties it. */
  constructor(readonly path: string) {
    this.fd = openSync(path, 'w');
  }

  append(data: Uint8Array | string): void {
    if (this.fd === undefined) throw new Error(`${this.path} is closed`);
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let done = 0;
    while (done < bytes.length) done += writeSync(this.fd, bytes, done, bytes.length - done);
  }

  /** fsyncs, then closes (even when the fsync fails); closing again does nothing. */
  close(): void {
    const { fd } = this;
    if (fd === undefined) return;
    this.fd = undefined;
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}
