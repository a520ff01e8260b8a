/** The Transformer's spec lives with the other model specs in the config layer; re-exported for the zoo. */
export { TransformerSpec } from '../config/transformer.ts';
