/**
 * Layers a zoo model may list: an MLP's sizes, a CNN's conv blocks or dense layers, a Transformer's encoder layers.
 * Far more than any of them trains well here, and few enough that planning stays quick: the launcher builds the
 * model's blocks before any worker starts (a Transformer of 4e9 layers built them until the heap ran out), and a
 * pipeline's balanced partition is cubic in the number of blocks.
 */
export const MAX_MODEL_LAYERS = 256;
