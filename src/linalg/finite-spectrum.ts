/** The check every SVD result gets before it reaches a report or an adapter (spectrum, edit). */

/** Refuses singular values that are NaN/∞ (from NaN or overflowed factors) before they reach a report or an adapter. */
export function assertFiniteSpectrum(sigma: ArrayLike<number>, where: string): void {
  for (let i = 0; i < sigma.length; i++) {
    if (!Number.isFinite(sigma[i])) throw new Error(`${where}: the update has NaN or infinite values (corrupt or overflowed factors); exclude this module`);
  }
}
