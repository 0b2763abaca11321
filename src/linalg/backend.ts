import type { Matrix } from '../tensor/matrix.js';

export interface GemmOptions {
  /** use Aᵀ instead of A */
  transA?: boolean;
  /** use Bᵀ instead of B */
  transB?: boolean;
}

/**
 * The one heavy kernel everything else is built on: C = op(A)·op(B), f32, row-major.
 * Async because the native backend runs on its own thread pool.
 */
export interface LinalgBackend {
  readonly name: string;
  gemm(a: Matrix, b: Matrix, opts?: GemmOptions): Promise<Matrix>;
  dispose?(): Promise<void>;
}
