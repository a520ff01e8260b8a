/** Files that survive a crash: written fully and fsynced before anyone may rely on them. */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** Writes `data` to `path` and fsyncs it before closing. */
export function writeFileSynced(path: string, data: Uint8Array | string): void {
  const fd = openSync(path, 'w');
  try {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let done = 0;
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** fsyncs a directory, so that renames and new entries in it survive a power loss (no-op where unsupported). */
export function fsyncDir(path: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    fsyncSync(fd);
  } catch {
    // Some file systems (and Windows) refuse to fsync a directory; the rename is still atomic.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Writes a directory of `files` (name, contents) atomically: into a temporary sibling, every file fsynced, then
 * renamed into place. A crash leaves the previous directory (or none), never a half-written one.
 */
export function writeDirAtomically(
  dir: string,
  files: readonly (readonly [string, Uint8Array | string])[],
): void {
  const parent = dirname(dir);
  mkdirSync(parent, { recursive: true });
  const tmp = join(parent, `.${basename(dir)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  mkdirSync(tmp);
  try {
    for (const [name, data] of files) writeFileSynced(join(tmp, name), data);
    fsyncDir(tmp);
    // rename() replaces an empty directory only: an existing one is moved aside first and removed after.
    let old: string | undefined;
    if (existsSync(dir)) {
      old = `${tmp}.old`;
      renameSync(dir, old);
    }
    renameSync(tmp, dir);
    fsyncDir(parent);
    if (old) rmSync(old, { recursive: true, force: true });
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}
