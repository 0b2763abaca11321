/** The left factor of a LoRA module's update in the form Δ = B'·A, shared by spectrum and edit. */
import type { LinalgBackend } from '../linalg/backend.js';
import type { Matrix } from '../tensor/matrix.js';
import type { LoraModule } from './adapter.js';

/** scaling·B (with an EDoRA latent folded in: scaling·B·R), the left factor of Δ = B'·A. */
export async function scaledLeftFactor(backend: LinalgBackend, m: LoraModule, scaling: number): Promise<Matrix> {
  const left = m.latent ? await backend.gemm(m.B, m.latent) : { ...m.B, data: Float32Array.from(m.B.data) };
  for (let i = 0; i < left.data.length; i++) left.data[i] *= scaling;
  return left;
}
