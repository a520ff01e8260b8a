/**
 * One pipeline stage's share of a net: blocks [from, to) as a Net of their own, which an Engine trains like any
 * other. The view keeps what makes a pipelined run repeat the unsplit one: its initial values are the full net's
 * for those blocks (not a fresh init of a smaller net, whose random streams would differ), and each block still
 * runs under its index in the full net, which seeds its dropout masks.
 */
import { tf } from '../backend/tf.ts';
import type { Block, Net } from '../engine/net.ts';

/** `net`'s blocks [from, to) as a Net; see the module comment. */
export function stageNet(net: Net, from: number, to: number): Net {
  const n = net.blocks.length;
  if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to > n || from >= to)
    throw new RangeError(`stage blocks [${from}, ${to}) are not a non-empty range of the ${n} blocks`);
  const blocks: Block[] = net.blocks.slice(from, to).map((b) => ({
    name: b.name,
    params: b.params,
    // The engine numbers the view's blocks from 0; the block's masks must come from its place in the full net.
    forward: (params, x, mode, index, summed) => b.forward(params, x, mode, from + index, summed),
    ...(b.statistics ? { statistics: b.statistics } : {}),
  }));
  const before = net.blocks.slice(0, from).reduce((k, b) => k + b.params.length, 0);
  const count = blocks.reduce((k, b) => k + b.params.length, 0);
  return {
    kind: net.kind,
    inputShape: from === 0 ? net.inputShape : activationShape(net, from),
    // Later stages take the previous stage's activations, which travel as fp32.
    inputDtype: from === 0 ? net.inputDtype : 'float32',
    blocks,
    init: (seed) => net.init(seed).slice(before, before + count),
  };
}

/**
 * The shape of one sample's activation entering block `at` (its batch dimension left out): what a stage receives
 * from the one before. Found by running blocks [0, at) on one zero sample with zero parameters, since the Net
 * contract states shapes only through its blocks' forwards; the MLPs and CNNs of the zoo cost microseconds here.
 */
export function activationShape(net: Net, at: number): number[] {
  if (at === 0) return [...net.inputShape];
  return tf.tidy(() => {
    let h: tf.Tensor = tf.zeros([1, ...net.inputShape], net.inputDtype);
    for (let i = 0; i < at; i++) {
      const b = net.blocks[i];
      const params = b.params.map((p) => tf.zeros([...p.shape]));
      h = b.forward(params, h, { training: false, seed: 0 }, i).y;
    }
    return h.shape.slice(1);
  });
}
