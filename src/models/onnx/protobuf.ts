/**
 * The protocol-buffers wire format, write side only and only what ONNX needs: varints (int32, int64, enums),
 * fixed32 floats, and length-delimited fields (strings, bytes, nested messages). A message is built field by
 * field in the order the caller writes them; repeated fields are written one element per field, which every
 * proto2 and proto3 reader accepts.
 */

const WIRE_VARINT = 0;
const WIRE_LENGTH = 2;
const WIRE_FIXED32 = 5;

const utf8 = new TextEncoder();

/** Bytes of one message, appended to in field order. */
export class ProtoWriter {
  readonly #parts: Uint8Array[] = [];
  #length = 0;

  /** An integer field (int32, int64 or an enum): negative values take ten bytes, as int64 two's complement. */
  int(field: number, value: number): this {
    if (!Number.isSafeInteger(value))
      throw new RangeError(`protobuf field ${field}: ${value} is not an integer`);
    this.#tag(field, WIRE_VARINT);
    this.#varint(BigInt.asUintN(64, BigInt(value)));
    return this;
  }

  /** A float field (fixed32, little-endian). */
  float(field: number, value: number): this {
    this.#tag(field, WIRE_FIXED32);
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setFloat32(0, value, true);
    return this.#push(bytes);
  }

  string(field: number, value: string): this {
    return this.bytes(field, utf8.encode(value));
  }

  bytes(field: number, value: Uint8Array): this {
    this.#tag(field, WIRE_LENGTH);
    this.#varint(BigInt(value.byteLength));
    return this.#push(value);
  }

  message(field: number, value: ProtoWriter): this {
    return this.bytes(field, value.finish());
  }

  /** The message's bytes (a copy: the writer may be reused for nothing else). */
  finish(): Uint8Array {
    const out = new Uint8Array(this.#length);
    let at = 0;
    for (const part of this.#parts) {
      out.set(part, at);
      at += part.byteLength;
    }
    return out;
  }

  #tag(field: number, wireType: number): void {
    this.#varint(BigInt(field) * 8n + BigInt(wireType));
  }

  #varint(value: bigint): void {
    const bytes: number[] = [];
    let v = value;
    do {
      const low = Number(v & 0x7fn);
      v >>= 7n;
      bytes.push(v > 0n ? low | 0x80 : low);
    } while (v > 0n);
    this.#push(Uint8Array.from(bytes));
  }

  #push(bytes: Uint8Array): this {
    this.#parts.push(bytes);
    this.#length += bytes.byteLength;
    return this;
  }
}
