import type { Command } from 'commander';

// PLACEHOLDER: the lead is writing inspect.
export function registerInspect(program: Command): void {
  program.command('inspect <path>').description('List tensors, dtypes, shapes and metadata of a model, adapter or GGUF file.');
}
