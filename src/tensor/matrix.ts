/** A dense row-major f32 matrix. `data.length === rows * cols`; views share `data`. */
export interface Matrix {
  rows: number;
  cols: number;
  data: Float32Array;
}

export function matrix(rows: number, cols: number, data?: Float32Array): Matrix {
  const d = data ?? new Float32Array(rows * cols);
  if (d.length !== rows * cols) {
    throw new Error(`matrix: data has ${d.length} elements, expected ${rows}×${cols} = ${rows * cols}`);
  }
  return { rows, cols, data: d };
}

export function transpose(m: Matrix): Matrix {
  const out = new Float32Array(m.rows * m.cols);
  const { rows, cols, data } = m;
  for (let i = 0; i < rows; i++) {
    const row = i * cols;
    for (let j = 0; j < cols; j++) out[j * rows + i] = data[row + j];
  }
  return { rows: cols, cols: rows, data: out };
}

/** Σ data[i]², accumulated in f64. */
export function sumSquares(data: Float32Array): number {
  let s = 0;
  for (let i = 0; i < data.length; i++) s += data[i] * data[i];
  return s;
}

/** Frobenius norm, accumulated in f64. */
export function frobenius(data: Float32Array): number {
  return Math.sqrt(sumSquares(data));
}
