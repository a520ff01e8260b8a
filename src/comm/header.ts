/**
 * The first frame of every data-plane message: a small msgpack array saying which receive it answers.
 * The payload (tensor bytes) follows it raw: the second frame over ZeroMQ, the rest of the block in a ring.
 */
import { Packr } from 'msgpackr';
import { WIRE_DTYPES, type WireDtype } from './types.ts';

/** Which mailbox a message lands in: a collective's step, a tagged point-to-point message, or a receipt. */
export type MessageKind = 'collective' | 'p2p' | 'receipt';

export interface Header {
  kind: MessageKind;
  /** The process group's id (see `ProcessGroup.id`). */
  group: string;
  /** Op name: checked by the receiver, so that ranks calling different collectives fail loudly. */
  op: string;
  /** Collective sequence number in the group; for p2p the message number per (sender, receiver, tag). */
  seq: number;
  /** Ring step of the collective; for p2p the tag. */
  step: number;
  /** Segment index within the step. */
  seg: number;
  /** Sender's world rank: the transport sets it, and checks it against the link a frame came in on. */
  src: number;
  dtype: WireDtype;
  /** Set when the sender waits for a receipt: the receipt's id (it goes back on the link to the sender). */
  receipt?: number;
}

// Records (msgpackr's shared structures) would make one message depend on earlier ones: keep each stand-alone.
const packr = new Packr({ useRecords: false });
const KINDS: readonly MessageKind[] = ['collective', 'p2p', 'receipt'];

type Packed = [number, string, string, number, number, number, number, WireDtype, ...number[]];

/** Eight fields; a ninth, the receipt, when the sender waits for one. */
export function packHeader(h: Header): Buffer {
  const a: Packed = [KINDS.indexOf(h.kind), h.group, h.op, h.seq, h.step, h.seg, h.src, h.dtype];
  if (h.receipt !== undefined) a.push(h.receipt);
  return packr.pack(a);
}

/** The header in `frame`; throws naming the first field that is not what a kd-launch sender writes. */
export function unpackHeader(frame: Buffer): Header {
  const a = packr.unpack(frame) as unknown;
  if (!Array.isArray(a) || !(a.length === 8 || a.length === 9))
    throw new Error('not a header array of 8 or 9 fields');
  const count = (i: number, what: string): number => {
    const v = a[i];
    if (!Number.isSafeInteger(v) || (v as number) < 0) throw new Error(`${what} is not a count`);
    return v as number;
  };
  const text = (i: number, what: string): string => {
    const v = a[i];
    if (typeof v !== 'string' || v.length > 256) throw new Error(`${what} is not a short string`);
    return v;
  };
  const kind = KINDS[count(0, 'kind')];
  if (kind === undefined) throw new Error('kind is not collective, p2p or receipt');
  const dtype = a[7] as WireDtype;
  if (!WIRE_DTYPES.includes(dtype)) throw new Error('dtype is not fp32, fp16 or bf16');
  const h: Header = {
    kind,
    group: text(1, 'group'),
    op: text(2, 'op'),
    seq: count(3, 'seq'),
    step: count(4, 'step'),
    seg: count(5, 'seg'),
    src: count(6, 'src'),
    dtype,
  };
  if (a.length === 9) h.receipt = count(8, 'receipt');
  return h;
}

/** The mailbox key of a message: everything that tells two in-flight messages apart (the op is checked, not keyed). */
export function mailboxKey(h: Pick<Header, 'kind' | 'group' | 'seq' | 'step' | 'seg' | 'src'>): string {
  return `${h.kind}|${h.group}|${h.seq}|${h.step}|${h.seg}|${h.src}`;
}
