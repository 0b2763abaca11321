/**
 * The errors loraforge raises on purpose, so a caller can tell a mistake in its request from a
 * bad input file without reading messages. The CLI maps them to exit codes (src/cli/main.ts).
 * Any other error is a failure too (I/O, numerics); messages always name the path involved.
 */

/** A mistake in the request itself (a bad option value, an impossible combination): fix the call. */
export class UsageError extends Error {}

/** Where in the inputs a problem sits: the file, and the tensor inside it when there is one. */
export interface InputLocation {
  file?: string;
  tensor?: string;
}

/** An input file that cannot be used as it is (corrupt values, an inconsistent adapter). */
export class InputError extends Error {
  readonly file?: string;
  readonly tensor?: string;

  constructor(message: string, at: InputLocation = {}) {
    super(message);
    this.file = at.file;
    this.tensor = at.tensor;
  }
}
