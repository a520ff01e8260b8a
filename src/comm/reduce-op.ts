/**
 * The elementwise reductions, in fp32: native/shm.c's loops when its binding is built (vectorised; KD_SHM=off
 * turns them off with the shared-memory plane), else tight JS loops, which are the specification the C
 * matches bit for bit (one per op so that V8 keeps each monomorphic).
 */
import { loadShmBinding } from './shm-ring.ts';
import type { ReduceOp } from './types.ts';

/** Below this many elements the call into C costs more than the JS loop saves. */
const NATIVE_MIN_ELEMENTS = 2048;
const NATIVE_OP = { sum: 0, avg: 0, max: 1, min: 2 } as const;

/** `acc[i] = op(acc[i], x[i])` for every i; `avg` sums here and is divided once by the owner of each chunk
 * (`WireCodec.addEncode`'s divisor). */
export function reduceInto(op: ReduceOp, acc: Float32Array, x: Float32Array): void {
  const native = acc.length >= NATIVE_MIN_ELEMENTS ? loadShmBinding().binding : undefined;
  if (native && x.length === acc.length && op in NATIVE_OP) native.reduce(NATIVE_OP[op], acc, x);
  else reduceIntoJs(op, acc, x);
}

/**
 * `x[i] = (wire[i] + x[i]) / divisor`, each step rounded to fp32: the fp32 codec's finishing hop
 * (`addEncode`) with the result written to `x` instead of the wire (same bits, NaN payloads included). With
 * `copy`, the same values are written there too, in the same pass.
 */
export function addDivideInto(
  wire: Float32Array,
  x: Float32Array,
  divisor: number,
  copy?: Float32Array,
): void {
  if (wire.length !== x.length || (copy && copy.length !== x.length))
    throw new RangeError(`reduce over ${wire.length} and ${x.length} elements`);
  const native = x.length >= NATIVE_MIN_ELEMENTS ? loadShmBinding().binding : undefined;
  if (native) native.addDivideInto(wire, x, divisor, copy);
  else if (copy) {
    addDivideInto(wire, x, divisor);
    copy.set(x);
  } else if (divisor === 1) for (let i = 0; i < x.length; i++) x[i] = wire[i] + x[i];
  else for (let i = 0; i < x.length; i++) x[i] = Math.fround(wire[i] + x[i]) / divisor;
}

/** `dst[i] = (wire[i] + x[i]) / divisor`, each step rounded to fp32, as `addDivideInto`; neither operand written. */
export function addDivideTo(wire: Float32Array, x: Float32Array, divisor: number, dst: Float32Array): void {
  if (wire.length !== x.length || dst.length !== x.length)
    throw new RangeError(`reduce over ${wire.length} and ${x.length} elements into ${dst.length}`);
  const native = x.length >= NATIVE_MIN_ELEMENTS ? loadShmBinding().binding : undefined;
  if (native) native.addDivideTo(wire, x, divisor, dst);
  else if (divisor === 1) for (let i = 0; i < x.length; i++) dst[i] = wire[i] + x[i];
  else for (let i = 0; i < x.length; i++) dst[i] = Math.fround(wire[i] + x[i]) / divisor;
}

/** `reduceInto` in JS: the specification. */
export function reduceIntoJs(op: ReduceOp, acc: Float32Array, x: Float32Array): void {
  const n = acc.length;
  if (x.length !== n) throw new RangeError(`reduce over ${n} and ${x.length} elements`);
  switch (op) {
    case 'sum':
    case 'avg': {
      // The hot loop of every all-reduce: unrolled by four, which V8 runs ~1.5× faster than the plain loop.
      let i = 0;
      for (; i + 3 < n; i += 4) {
        acc[i] += x[i];
        acc[i + 1] += x[i + 1];
        acc[i + 2] += x[i + 2];
        acc[i + 3] += x[i + 3];
      }
      for (; i < n; i++) acc[i] += x[i];
      return;
    }
    case 'max':
      // NaN wins, as in torch: a NaN anywhere shows up in the result rather than vanishing.
      for (let i = 0; i < n; i++) if (!(acc[i] >= x[i])) acc[i] = x[i] > acc[i] ? x[i] : acc[i] + x[i];
      return;
    case 'min':
      for (let i = 0; i < n; i++) if (!(acc[i] <= x[i])) acc[i] = x[i] < acc[i] ? x[i] : acc[i] + x[i];
      return;
    default:
      throw new RangeError(`unknown reduce op '${op satisfies never}'`);
  }
}

export function checkReduceOp(op: string): ReduceOp {
  if (op === 'sum' || op === 'avg' || op === 'max' || op === 'min') return op;
  throw new RangeError(`unknown reduce op '${op}' (sum, avg, max or min)`);
}
