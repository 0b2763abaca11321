/** The seeded streams DARE masks are drawn from. */
import { createRng, type Rng } from '../linalg/random.js';

/** FNV-1a, 32 bits: a fixed way to turn a mask's identity into an RNG seed. */
function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * The DARE stream for input `input` of output tensor `tensor`: seeded by fnv1a32("seed/tensor/input"),
 * so a mask depends on nothing but the seed, the tensor and the input's position in its slice.
 */
export function maskRng(seed: number, tensor: string, input: number): Rng {
  return createRng(fnv1a32(`${seed}/${tensor}/${input}`));
}
