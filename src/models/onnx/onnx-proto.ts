/**
 * The ONNX messages a feed-forward model needs (onnx.proto, IR version 8), as plain values and their encoding:
 * a model holds one graph; a graph its nodes in topological order, its weights as initializers, and its input
 * and output with their element type and shape (a string dimension is symbolic: the batch).
 */
import { ProtoWriter } from './protobuf.ts';

/** ONNX 1.12's IR version; onnxruntime has read it since 1.12. */
export const IR_VERSION = 8;
/** The default-domain operator set the graphs are written against (ONNX 1.12). */
export const OPSET = 17;

/** TensorProto.DataType values used here. */
export const DataType = { float: 1, uint8: 2, int8: 3, int32: 6, int64: 7 } as const;
export type DataType = (typeof DataType)[keyof typeof DataType];

/** AttributeProto.AttributeType values used here. */
const AttributeType = { float: 1, int: 2, string: 3, floats: 6, ints: 7 } as const;

export type AttributeValue =
  | { float: number }
  | { int: number }
  | { string: string }
  | { floats: readonly number[] }
  | { ints: readonly number[] };

export interface OnnxNode {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name: string;
  attributes?: Readonly<Record<string, AttributeValue>>;
}

export interface OnnxTensor {
  name: string;
  dims: readonly number[];
  dataType: DataType;
  /** Little-endian element bytes, `dims`' product of them. */
  raw: Uint8Array;
}

export interface OnnxValueInfo {
  name: string;
  elemType: DataType;
  /** A number is a fixed size; a string names a dimension given at run time (the batch). */
  shape: readonly (number | string)[];
}

export interface OnnxGraph {
  name: string;
  nodes: readonly OnnxNode[];
  initializers: readonly OnnxTensor[];
  inputs: readonly OnnxValueInfo[];
  outputs: readonly OnnxValueInfo[];
}

function attribute(name: string, value: AttributeValue): ProtoWriter {
  const w = new ProtoWriter().string(1, name);
  if ('float' in value) w.float(2, value.float).int(20, AttributeType.float);
  else if ('int' in value) w.int(3, value.int).int(20, AttributeType.int);
  else if ('string' in value) w.string(4, value.string).int(20, AttributeType.string);
  else if ('floats' in value) {
    for (const f of value.floats) w.float(7, f);
    w.int(20, AttributeType.floats);
  } else {
    for (const i of value.ints) w.int(8, i);
    w.int(20, AttributeType.ints);
  }
  return w;
}

function node(n: OnnxNode): ProtoWriter {
  const w = new ProtoWriter();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name).string(4, n.opType);
  for (const [name, value] of Object.entries(n.attributes ?? {})) w.message(5, attribute(name, value));
  return w;
}

function tensor(t: OnnxTensor): ProtoWriter {
  const w = new ProtoWriter();
  for (const d of t.dims) w.int(1, d);
  return w.int(2, t.dataType).string(8, t.name).bytes(9, t.raw);
}

function valueInfo(v: OnnxValueInfo): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of v.shape) {
    shape.message(1, typeof d === 'number' ? new ProtoWriter().int(1, d) : new ProtoWriter().string(2, d));
  }
  const tensorType = new ProtoWriter().int(1, v.elemType).message(2, shape);
  return new ProtoWriter().string(1, v.name).message(2, new ProtoWriter().message(1, tensorType));
}

function graph(g: OnnxGraph): ProtoWriter {
  const w = new ProtoWriter();
  for (const n of g.nodes) w.message(1, node(n));
  w.string(2, g.name);
  for (const t of g.initializers) w.message(5, tensor(t));
  for (const i of g.inputs) w.message(11, valueInfo(i));
  for (const o of g.outputs) w.message(12, valueInfo(o));
  return w;
}

/** A ModelProto holding `g`, as the bytes of a `.onnx` file. */
export function encodeModel(g: OnnxGraph, producerVersion: string): Uint8Array {
  const opset = new ProtoWriter().string(1, '').int(2, OPSET);
  return new ProtoWriter()
    .int(1, IR_VERSION)
    .string(2, 'kd-launch')
    .string(3, producerVersion)
    .message(7, graph(g))
    .message(8, opset)
    .finish();
}
