/** The seeded streams DARE masks are drawn from. */
import { createRng, fnv1a32, type Rng } from '../linalg/random.js';

/**
 * The DARE stream for input `input` of output tensor `tensor`: seeded by fnv1a32("seed/tensor/input"),
 * so a mask depends on nothing but the seed, the tensor and the input's position in its slice.
 */
export function maskRng(seed: number, tensor: string, input: number): Rng {
  return createRng(fnv1a32(`${seed}/${tensor}/${input}`));
}
