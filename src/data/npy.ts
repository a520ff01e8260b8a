/**
 * NumPy's files, read without NumPy: the `.npy` format (versions 1.0, 2.0 and 3.0: the magic `\x93NUMPY`, the
 * version, the header's length, then a Python dict literal with 'descr', 'fortran_order' and 'shape', then the
 * data in C order) and the `.npz` archive (a zip of `.npy` members, stored by np.savez and deflated by
 * np.savez_compressed; ZIP64 for archives or members past 4 GiB). An array's data is not read here: a `.npy`
 * file and a stored member are left in their file, to be read by position; a deflated member is inflated into
 * memory. Anything else (big-endian, Fortran order, objects, strings, another compression) is refused naming the
 * file, the member and the field.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { crc32, inflateRawSync } from 'node:zlib';
import { refuse } from './refuse.ts';

/** Where an array is, for messages: a `.npy` file, or a member of an `.npz`. */
export interface NpyWhere {
  readonly file: string;
  readonly member?: string;
}

/** Refuses `where`'s array: the file, then the member when there is one. */
export function refuseArray(where: NpyWhere, message: string): never {
  refuse(
    where.file,
    undefined,
    where.member !== undefined ? `member '${where.member}': ${message}` : message,
  );
}

/** Bytes read by position: from an open file (never read whole), or from memory (an inflated member). */
export interface ByteSource {
  readonly size: number;
  /** Copies `length` bytes from `position` into `target[at …]`. */
  readInto(target: Uint8Array, at: number, position: number, length: number): void;
}

/** An open file, read by position with `readSync`. */
class FileBytes implements ByteSource {
  constructor(
    readonly file: string,
    readonly fd: number,
    readonly size: number,
  ) {}

  close(): void {
    closeSync(this.fd);
  }

  readInto(target: Uint8Array, at: number, position: number, length: number): void {
    checkRange(this, position, length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, target, at + done, length - done, position + done);
      if (n === 0)
        throw new Error(`${this.file}: the file ended at byte ${position + done} (was it cut short?)`);
      done += n;
    }
  }
}

/** `size` bytes of another source from `start`: a member an `.npz` stores, read in place. */
class SliceBytes implements ByteSource {
  constructor(
    readonly base: ByteSource,
    readonly start: number,
    readonly size: number,
  ) {}

  readInto(target: Uint8Array, at: number, position: number, length: number): void {
    checkRange(this, position, length);
    this.base.readInto(target, at, this.start + position, length);
  }
}

class BufferBytes implements ByteSource {
  constructor(readonly bytes: Uint8Array) {}

  get size(): number {
    return this.bytes.length;
  }

  readInto(target: Uint8Array, at: number, position: number, length: number): void {
    checkRange(this, position, length);
    target.set(this.bytes.subarray(position, position + length), at);
  }
}

function checkRange(source: ByteSource, position: number, length: number): void {
  if (position < 0 || position + length > source.size) {
    throw new RangeError(`bytes [${position}, ${position + length}) are outside the ${source.size}`);
  }
}

function readBytes(source: ByteSource, position: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  source.readInto(out, 0, position, length);
  return out;
}

/** A file opened for reading by position, kept open for as long as the process reads its arrays. */
export function openBytes(file: string): ByteSource & { close(): void } {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    refuse(file, undefined, code === 'ENOENT' ? 'no such file' : `cannot read it (${code})`);
  }
  const stat = fstatSync(fd);
  if (!stat.isFile()) {
    closeSync(fd);
    refuse(file, undefined, 'not a file');
  }
  return new FileBytes(file, fd, stat.size);
}

/** The element types read: floats and integers, little-endian (or single bytes). */
export interface NpyDtype {
  readonly descr: string;
  readonly kind: 'f' | 'i' | 'u';
  readonly size: 1 | 2 | 4 | 8;
}

/** An array's header, and where its data starts (C order, little-endian). */
export interface NpyArray {
  readonly where: NpyWhere;
  readonly dtype: NpyDtype;
  readonly shape: readonly number[];
  readonly bytes: ByteSource;
  /** The data's first byte in `bytes`. */
  readonly offset: number;
}

/** `(2, 3)` as Python writes a shape. */
export function pyShape(shape: readonly number[]): string {
  return shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
}

// ---- The header: a Python literal ----

type Py = string | number | boolean | null | Py[] | Map<string, Py>;

/** Parses the Python literals NumPy writes in a header: dicts, tuples, lists, strings, ints, True/False/None. */
function parsePython(text: string): Py {
  let at = 0;
  const fail = (what: string): never => {
    throw new SyntaxError(`${what} at character ${at}`);
  };
  const space = () => {
    while (at < text.length && /\s/.test(text[at])) at++;
  };
  const value = (): Py => {
    space();
    const c = text[at];
    if (c === '{') {
      at++;
      const dict = new Map<string, Py>();
      for (;;) {
        space();
        if (text[at] === '}') break;
        const key = value();
        if (typeof key !== 'string') fail('a dict key that is not a string');
        space();
        if (text[at] !== ':') fail("no ':'");
        at++;
        dict.set(key as string, value());
        space();
        if (text[at] === ',') at++;
        else if (text[at] !== '}') fail("no ',' or '}'");
      }
      at++;
      return dict;
    }
    if (c === '(' || c === '[') {
      const close = c === '(' ? ')' : ']';
      at++;
      const items: Py[] = [];
      for (;;) {
        space();
        if (text[at] === close) break;
        items.push(value());
        space();
        if (text[at] === ',') at++;
        else if (text[at] !== close) fail(`no ',' or '${close}'`);
      }
      at++;
      return items;
    }
    if (c === "'" || c === '"') {
      at++;
      let s = '';
      while (text[at] !== c) {
        if (at >= text.length) fail('a string never closed');
        if (text[at] === '\\') at++;
        s += text[at++];
      }
      at++;
      return s;
    }
    const word = /^(-?\d+)L?|^(True|False|None)\b/.exec(text.slice(at));
    if (!word) return fail('no value');
    at += word[0].length;
    if (word[1] !== undefined) return Number(word[1]);
    return word[2] === 'True' ? true : word[2] === 'False' ? false : null;
  };
  const result = value();
  space();
  if (at < text.length) fail('more after the dict');
  return result;
}

const KINDS: Record<string, string> = {
  b: 'booleans',
  c: 'complex numbers',
  f: 'floats',
  m: 'time deltas',
  M: 'dates',
  O: 'Python objects',
  S: 'byte strings',
  a: 'byte strings',
  U: 'unicode strings',
  V: 'raw bytes',
};

/** The header's 'descr' as a dtype kd-launch reads, or its refusal naming the field. */
function dtypeOf(where: NpyWhere, descr: Py): NpyDtype {
  if (typeof descr !== 'string') {
    refuseArray(where, `'descr' is a structured dtype: save a plain numeric array (not a record array)`);
  }
  const m = /^([<>|=]?)([a-zA-Z])(\d*)$/.exec(descr);
  const order = m?.[1] ?? '';
  const kind = m?.[2] ?? '';
  const size = Number(m?.[3] ?? 0);
  const supported =
    (kind === 'f' && (size === 4 || size === 8)) ||
    ((kind === 'i' || kind === 'u') && (size === 1 || size === 2 || size === 4 || size === 8));
  if (!m || !supported) {
    const detail =
      m && kind === 'f'
        ? `float${size * 8}`
        : (KINDS[descr.replace(/^[<>|=]/, '').charAt(0)] ?? 'not a number type');
    refuseArray(
      where,
      `'descr' is '${descr}' (${detail}): kd-launch reads float32, float64 and integer arrays (<f4, <f8, <i1 … <i8, <u1 … <u8)`,
    );
  }
  if (size > 1 && order !== '<') {
    const little = `<${kind}${size}`;
    refuseArray(
      where,
      order === '>'
        ? `'descr' is '${descr}' (big-endian): save it little-endian (a.astype('${little}'))`
        : `'descr' is '${descr}': give the byte order (little-endian, '${little}')`,
    );
  }
  return { descr, kind: kind as NpyDtype['kind'], size: size as NpyDtype['size'] };
}

/** NumPy refuses longer headers by default (max_header_size); this is far past what any array needs. */
const MAX_HEADER = 1 << 20;

/** Reads the `.npy` header at the start of `bytes` and checks that the data it describes is all there. */
export function readNpy(where: NpyWhere, bytes: ByteSource): NpyArray {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
  const pre = readBytes(bytes, 0, Math.min(bytes.size, 12));
  if (pre.length < 6 || magic.some((b, i) => pre[i] !== b)) {
    refuseArray(where, 'not a .npy array (it does not start with \\x93NUMPY)');
  }
  if (pre.length < 10) refuseArray(where, 'truncated: the file ends inside its header');
  const [major, minor] = [pre[6], pre[7]];
  if (major !== 1 && major !== 2 && major !== 3) {
    refuseArray(where, `.npy format version ${major}.${minor}: kd-launch reads 1.0, 2.0 and 3.0`);
  }
  const view = new DataView(pre.buffer, pre.byteOffset, pre.byteLength);
  if (major > 1 && pre.length < 12) refuseArray(where, 'truncated: the file ends inside its header');
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  if (headerLength > MAX_HEADER) refuseArray(where, `a header of ${headerLength} bytes is not an array's`);
  if (start + headerLength > bytes.size) refuseArray(where, 'truncated: the file ends inside its header');
  const raw = readBytes(bytes, start, headerLength);
  const text = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(raw);
  let header: Py;
  try {
    header = parsePython(text);
  } catch (err) {
    refuseArray(where, `the header is not a Python dict literal (${(err as Error).message}): ${text.trim()}`);
  }
  if (!(header instanceof Map)) refuseArray(where, `the header is not a dict: ${text.trim()}`);
  for (const key of ['descr', 'fortran_order', 'shape']) {
    if (!header.has(key)) refuseArray(where, `the header has no '${key}': ${text.trim()}`);
  }
  const dtype = dtypeOf(where, header.get('descr') ?? null);
  const fortran = header.get('fortran_order');
  if (fortran === true) {
    refuseArray(where, "'fortran_order' is True: save a C-order array (np.ascontiguousarray(a))");
  }
  if (fortran !== false) refuseArray(where, `'fortran_order' is ${String(fortran)}, not True or False`);
  const shape = header.get('shape');
  if (!Array.isArray(shape) || !shape.every((d) => typeof d === 'number' && Number.isInteger(d) && d >= 0)) {
    refuseArray(where, `'shape' is not a tuple of sizes: ${text.trim()}`);
  }
  const dims = shape as number[];
  const offset = start + headerLength;
  const need = dims.reduce((a, d) => a * d, 1) * dtype.size;
  if (offset + need > bytes.size) {
    refuseArray(
      where,
      `truncated: 'shape' ${pyShape(dims)} of '${dtype.descr}' needs ${need} bytes of data, ${where.member !== undefined ? 'the member' : 'the file'} has ${bytes.size - offset}`,
    );
  }
  return { where, dtype, shape: dims, bytes, offset };
}

/** `raw`, elements of `dtype` one after another (little-endian), as numbers into `out`. */
export function decodeInto(raw: Uint8Array, dtype: NpyDtype, out: Float32Array | Float64Array): void {
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const n = raw.byteLength / dtype.size;
  const code = `${dtype.kind}${dtype.size}`;
  switch (code) {
    case 'f4':
      for (let i = 0; i < n; i++) out[i] = v.getFloat32(i * 4, true);
      return;
    case 'f8':
      for (let i = 0; i < n; i++) out[i] = v.getFloat64(i * 8, true);
      return;
    case 'i1':
      for (let i = 0; i < n; i++) out[i] = v.getInt8(i);
      return;
    case 'u1':
      for (let i = 0; i < n; i++) out[i] = v.getUint8(i);
      return;
    case 'i2':
      for (let i = 0; i < n; i++) out[i] = v.getInt16(i * 2, true);
      return;
    case 'u2':
      for (let i = 0; i < n; i++) out[i] = v.getUint16(i * 2, true);
      return;
    case 'i4':
      for (let i = 0; i < n; i++) out[i] = v.getInt32(i * 4, true);
      return;
    case 'u4':
      for (let i = 0; i < n; i++) out[i] = v.getUint32(i * 4, true);
      return;
    case 'i8':
      for (let i = 0; i < n; i++) out[i] = Number(v.getBigInt64(i * 8, true));
      return;
    case 'u8':
      for (let i = 0; i < n; i++) out[i] = Number(v.getBigUint64(i * 8, true));
      return;
    default:
      throw new Error(`no decoder for ${dtype.descr}`);
  }
}

/**
 * Every element of `array` in order, as float64 (exact for every integer below 2^53), `chunk` at a time:
 * `each(values, first)` with the values of elements first, first + 1, ….
 */
export function forEachChunk(
  array: NpyArray,
  each: (values: Float64Array, first: number) => void,
  chunk = 1 << 20,
): void {
  const count = array.shape.reduce((a, d) => a * d, 1);
  for (let first = 0; first < count; first += chunk) {
    const n = Math.min(chunk, count - first);
    const values = new Float64Array(n);
    const size = array.dtype.size;
    decodeInto(readBytes(array.bytes, array.offset + first * size, n * size), array.dtype, values);
    each(values, first);
  }
}

// ---- The .npz archive: a zip ----

const EOCD = 0x06054b50;
const EOCD64 = 0x06064b50;
const EOCD64_LOCATOR = 0x07064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;
const U32 = 0xffffffff;

/** One member of an archive, as its central directory describes it. */
interface Member {
  readonly name: string;
  readonly method: number;
  readonly flags: number;
  readonly crc: number;
  readonly compressedSize: number;
  readonly size: number;
  readonly localOffset: number;
}

const u64 = (v: DataView, at: number) => Number(v.getBigUint64(at, true));

/** The central directory of the zip `bytes`: its members by name. */
function centralDirectory(file: string, bytes: ByteSource): Map<string, Member> {
  const notZip = (why: string): never =>
    refuse(file, undefined, `not an .npz (a zip archive): ${why}; give an .npz, or {x: X.npy, y: Y.npy}`);
  // The end record: 22 bytes and a comment of at most 65,535, at the end of the file.
  const tailLength = Math.min(bytes.size, 22 + 0xffff);
  const tail = readBytes(bytes, bytes.size - tailLength, tailLength);
  const t = new DataView(tail.buffer);
  let end = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (t.getUint32(i, true) === EOCD) {
      end = i;
      break;
    }
  }
  if (end < 0) {
    const head = readBytes(bytes, 0, Math.min(bytes.size, 6));
    if (head[0] === 0x93 && new TextDecoder().decode(head.subarray(1)) === 'NUMPY') {
      refuse(file, undefined, 'a .npy holds one array: give {x: X.npy, y: Y.npy}, or an .npz holding both');
    }
    notZip('no end of central directory record (or the file was cut short)');
  }
  let entries = t.getUint16(end + 10, true);
  let cdSize = t.getUint32(end + 12, true);
  let cdOffset = t.getUint32(end + 16, true);
  if (entries === 0xffff || cdSize === U32 || cdOffset === U32) {
    // ZIP64: a locator right before the end record points to the 64-bit end record.
    const at = end - 20;
    if (at < 0 || t.getUint32(at, true) !== EOCD64_LOCATOR) notZip('no ZIP64 end record locator');
    const where64 = u64(t, at + 8);
    if (where64 + 56 > bytes.size) notZip('the ZIP64 end record is past the end of the file');
    const r = new DataView(readBytes(bytes, where64, 56).buffer);
    if (r.getUint32(0, true) !== EOCD64) notZip('no ZIP64 end record');
    entries = u64(r, 32);
    cdSize = u64(r, 40);
    cdOffset = u64(r, 48);
  }
  if (cdOffset + cdSize > bytes.size) {
    refuse(file, undefined, 'truncated: the zip central directory is past the end of the file');
  }
  const cd = readBytes(bytes, cdOffset, cdSize);
  const v = new DataView(cd.buffer);
  const members = new Map<string, Member>();
  let at = 0;
  for (let e = 0; e < entries; e++) {
    if (at + 46 > cd.length || v.getUint32(at, true) !== CENTRAL)
      notZip(`central directory entry ${e} is damaged`);
    const nameLength = v.getUint16(at + 28, true);
    const extraLength = v.getUint16(at + 30, true);
    const commentLength = v.getUint16(at + 32, true);
    const extraEnd = at + 46 + nameLength + extraLength;
    if (extraEnd + commentLength > cd.length) notZip(`central directory entry ${e} is damaged`);
    const name = new TextDecoder().decode(cd.subarray(at + 46, at + 46 + nameLength));
    let size = v.getUint32(at + 24, true);
    let compressedSize = v.getUint32(at + 20, true);
    let localOffset = v.getUint32(at + 42, true);
    // ZIP64 extra field (0x0001): the 64-bit values of those fields that hold 0xFFFFFFFF, in this order.
    for (let x = at + 46 + nameLength; x + 4 <= extraEnd; ) {
      const id = v.getUint16(x, true);
      const length = v.getUint16(x + 2, true);
      if (id === 0x0001) {
        let p = x + 4;
        const next = () => {
          if (p + 8 > Math.min(x + 4 + length, extraEnd)) notZip(`central directory entry ${e} is damaged`);
          const value = u64(v, p);
          p += 8;
          return value;
        };
        if (size === U32) size = next();
        if (compressedSize === U32) compressedSize = next();
        if (localOffset === U32) localOffset = next();
      }
      x += 4 + length;
    }
    members.set(name, {
      name,
      method: v.getUint16(at + 10, true),
      flags: v.getUint16(at + 8, true),
      crc: v.getUint32(at + 16, true),
      compressedSize,
      size,
      localOffset,
    });
    at = extraEnd + commentLength;
  }
  return members;
}

/** An `.npz` archive: its members, each read as an array on demand. */
export class Npz {
  readonly #members: Map<string, Member>;

  constructor(
    readonly file: string,
    readonly bytes: ByteSource,
  ) {
    this.#members = centralDirectory(file, bytes);
  }

  /** The array `key` (the member `key.npy`, as np.savez names it, or `key` itself). */
  array(key: string): NpyArray {
    const member = this.#members.get(`${key}.npy`) ?? this.#members.get(key);
    if (!member) {
      const names = [...this.#members.keys()].map((n) => n.replace(/\.npy$/, ''));
      refuse(
        this.file,
        undefined,
        `no member '${key}.npy' (the archive holds ${names.length > 0 ? names.join(', ') : 'nothing'}): name the arrays with x: and y:`,
      );
    }
    return readNpy({ file: this.file, member: member.name }, this.#memberBytes(member));
  }

  /** A stored member in place in the file; a deflated one inflated into memory (and its CRC checked). */
  #memberBytes(m: Member): ByteSource {
    const where = { file: this.file, member: m.name };
    if (m.flags & 1) refuseArray(where, 'encrypted: save the archive without a password');
    if (m.localOffset + 30 > this.bytes.size)
      refuseArray(where, 'truncated: the member is past the end of the file');
    const local = new DataView(readBytes(this.bytes, m.localOffset, 30).buffer);
    if (local.getUint32(0, true) !== LOCAL)
      refuseArray(where, 'no zip local header where the directory says');
    const start = m.localOffset + 30 + local.getUint16(26, true) + local.getUint16(28, true);
    if (start + m.compressedSize > this.bytes.size) {
      refuseArray(
        where,
        `truncated: the member's ${m.compressedSize} bytes run past the end of the file (${this.bytes.size} bytes)`,
      );
    }
    if (m.method === 0) {
      if (m.size !== m.compressedSize) {
        refuseArray(
          where,
          `stored, yet ${m.compressedSize} bytes in the archive and ${m.size} unpacked: the file is damaged`,
        );
      }
      return new SliceBytes(this.bytes, start, m.compressedSize);
    }
    if (m.method !== 8) {
      refuseArray(
        where,
        `compression method ${m.method}: kd-launch reads stored and deflated members (np.savez, np.savez_compressed)`,
      );
    }
    let data: Uint8Array;
    try {
      data = inflateRawSync(readBytes(this.bytes, start, m.compressedSize));
    } catch (err) {
      refuseArray(where, `cannot inflate it (${(err as Error).message})`);
    }
    if (data.length !== m.size) {
      refuseArray(where, `inflates to ${data.length} bytes, the archive says ${m.size}`);
    }
    if (crc32(data) !== m.crc)
      refuseArray(where, 'its CRC-32 does not match the archive’s: the file is damaged');
    return new BufferBytes(data);
  }
}
