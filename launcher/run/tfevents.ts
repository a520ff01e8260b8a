/**
 * TensorBoard event files, written without TensorFlow: a TFRecord file (each record: uint64 LE length, its masked
 * CRC-32C, the data, the data's masked CRC-32C) whose records are `Event` protobufs
 * (tensorflow/core/util/event.proto), the first naming the file version, then one per step of scalars.
 */
import { mkdirSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { AppendFile } from './append-file.ts';
import { maskedCrc32c } from './crc32c.ts';

export interface Scalar {
  tag: string;
  value: number;
}

/** What TensorBoard expects in the first record of an event file. */
const FILE_VERSION = 'brain.Event:2';

/** One event file in `dir` (created), named as TensorFlow names them, so TensorBoard finds it. */
export class EventFileWriter {
  private readonly file: AppendFile;

  constructor(dir: string, wallTime = Date.now() / 1000) {
    mkdirSync(dir, { recursive: true });
    this.file = new AppendFile(join(dir, `events.out.tfevents.${Math.floor(wallTime)}.${hostname()}`));
    try {
      this.file.append(tfRecord(encodeEvent({ wallTime, fileVersion: FILE_VERSION })));
    } catch (err) {
      this.file.close();
      throw err;
    }
  }

  /** One Event at `step` and `wallTime` (seconds since the Unix epoch) holding every scalar. */
  scalars(step: number, wallTime: number, scalars: readonly Scalar[]): void {
    this.file.append(tfRecord(encodeEvent({ wallTime, step, scalars })));
  }

  close(): void {
    this.file.close();
  }
}

/** A TFRecord: the CRC of the length guards the framing itself, so a torn length is not read as one. */
function tfRecord(data: Uint8Array): Uint8Array {
  const out = Buffer.alloc(8 + 4 + data.length + 4);
  out.writeBigUInt64LE(BigInt(data.length), 0);
  out.writeUInt32LE(maskedCrc32c(out.subarray(0, 8)), 8);
  out.set(data, 12);
  out.writeUInt32LE(maskedCrc32c(data), 12 + data.length);
  return out;
}

/** Protobuf wire types. */
const VARINT = 0;
const FIXED64 = 1;
const LENGTH_DELIMITED = 2;
const FIXED32 = 5;

/** The few protobuf encodings an Event of scalars needs. */
class ProtoWriter {
  private readonly parts: Uint8Array[] = [];

  private key(field: number, wireType: number): void {
    this.varint(field * 8 + wireType);
  }

  private varint(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`cannot encode ${v} as a varint`);
    const bytes: number[] = [];
    for (; v >= 0x80; v = Math.floor(v / 0x80)) bytes.push((v % 0x80) | 0x80);
    bytes.push(v);
    this.parts.push(Uint8Array.from(bytes));
  }

  uint(field: number, v: number): this {
    this.key(field, VARINT);
    this.varint(v);
    return this;
  }

  double(field: number, v: number): this {
    this.key(field, FIXED64);
    const b = Buffer.alloc(8);
    b.writeDoubleLE(v);
    this.parts.push(b);
    return this;
  }

  float(field: number, v: number): this {
    this.key(field, FIXED32);
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.parts.push(b);
    return this;
  }

  bytes(field: number, data: Uint8Array): this {
    this.key(field, LENGTH_DELIMITED);
    this.varint(data.length);
    this.parts.push(data);
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, Buffer.from(s, 'utf8'));
  }

  finish(): Uint8Array {
    return Buffer.concat(this.parts);
  }
}

/**
 * Event { double wall_time = 1; int64 step = 2; oneof what { string file_version = 3; Summary summary = 5; } };
 * Summary { repeated Value value = 1; }; Value { string tag = 1; float simple_value = 2; }.
 */
function encodeEvent(e: {
  wallTime: number;
  step?: number;
  fileVersion?: string;
  scalars?: readonly Scalar[];
}): Uint8Array {
  const event = new ProtoWriter().double(1, e.wallTime);
  if (e.step !== undefined) event.uint(2, e.step);
  if (e.fileVersion !== undefined) event.string(3, e.fileVersion);
  if (e.scalars !== undefined) {
    const summary = new ProtoWriter();
    for (const s of e.scalars)
      summary.bytes(1, new ProtoWriter().string(1, s.tag).float(2, s.value).finish());
    event.bytes(5, summary.finish());
  }
  return event.finish();
}
