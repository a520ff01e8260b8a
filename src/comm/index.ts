/** The data plane: process groups with ring collectives over ZeroMQ, and the wire dtypes they travel in. */
export { CommAbortedError, CommError, CommMismatchError, CommTimeoutError } from './errors.ts';
export {
  DEFAULT_SEGMENT_BYTES,
  EAGER_SEND_BYTES,
  ProcessGroup,
  type ProcessGroupOptions,
} from './process-group.ts';
export { Transport } from './transport.ts';
export {
  asRank,
  type ByteCounts,
  type CollectiveInfo,
  type CollectiveOptions,
  type Collectives,
  type Rank,
  REDUCE_OPS,
  type ReduceOp,
  type ReduceOptions,
  shardRange,
  WIRE_DTYPES,
  type WireDtype,
} from './types.ts';
export { roundToWire, type WireCodec, wireCodec } from './wire-dtype.ts';
