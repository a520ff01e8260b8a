/**
 * The first frame of every data-plane message: a small msgpack array saying which receive it answers.
 * The payload (tensor bytes) is always the second frame, raw.
 */
import { Packr } from 'msgpackr';
import type { WireDtype } from './types.ts';

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
  /** Sender's rank in the group. */
  src: number;
  dtype: WireDtype;
  /** Set when the sender waits for a receipt: its endpoint and the receipt's id there. */
  receipt?: { to: string; id: number };
}

// Records (msgpackr's shared structures) would make one message depend on earlier ones: keep each stand-alone.
const packr = new Packr({ useRecords: false });
const KINDS: readonly MessageKind[] = ['collective', 'p2p', 'receipt'];

type Packed = [number, string, string, number, number, number, number, WireDtype, string?, number?];

export function packHeader(h: Header): Buffer {
  const a: Packed = [KINDS.indexOf(h.kind), h.group, h.op, h.seq, h.step, h.seg, h.src, h.dtype];
  if (h.receipt) a.push(h.receipt.to, h.receipt.id);
  return packr.pack(a);
}

export function unpackHeader(frame: Buffer): Header {
  const a = packr.unpack(frame) as Packed;
  if (!Array.isArray(a) || a.length < 8 || KINDS[a[0]] === undefined)
    throw new Error('not a kd-launch header');
  const h: Header = {
    kind: KINDS[a[0]],
    group: a[1],
    op: a[2],
    seq: a[3],
    step: a[4],
    seg: a[5],
    src: a[6],
    dtype: a[7],
  };
  if (a.length >= 10) h.receipt = { to: a[8] as string, id: a[9] as number };
  return h;
}

/** The mailbox key of a message: everything that tells two in-flight messages apart (the op is checked, not keyed). */
export function mailboxKey(h: Pick<Header, 'kind' | 'group' | 'seq' | 'step' | 'seg' | 'src'>): string {
  return `${h.kind}|${h.group}|${h.seq}|${h.step}|${h.seg}|${h.src}`;
}
