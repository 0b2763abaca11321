/**
 * Flags several commands share, defined once so that they parse and read the same in every --help.
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { parseShardSize } from '../io/safetensors.js';
import type { FloatDType } from '../io/types.js';
import { UsageError } from './errors.js';

const DTYPE_NAMES: Record<string, FloatDType> = {
  f32: 'F32', fp32: 'F32', float32: 'F32',
  f16: 'F16', fp16: 'F16', float16: 'F16',
  bf16: 'BF16', bfloat16: 'BF16',
};

/** `--dtype` accepting f32/f16/bf16 in any case (and the torch spellings). */
export function dtypeOption(description: string): Option {
  return new Option('--dtype <dtype>', `${description} (f32, f16 or bf16)`).argParser((v: string) => {
    const d = DTYPE_NAMES[v.toLowerCase()];
    if (!d) throw new InvalidArgumentError('use f32, f16 or bf16');
    return d;
  });
}

/** `--shard-size` (e.g. 5GB, 500MB, 2GiB) in bytes; a bad size is a usage error. */
export function parseShardSizeFlag(value: string): number {
  try {
    return parseShardSize(value);
  } catch (err) {
    throw new UsageError(`--shard-size: ${(err as Error).message}`);
  }
}

/**
 * The flags that end every command writing an --out folder: --threads (for commands that multiply
 * matrices), --force, --json (whose text says what the JSON is) and --quiet.
 */
export function addOutputFlags(command: Command, opts: { threads: boolean; json: string }): Command {
  if (opts.threads) command.option('--threads <n>', 'GEMM threads (default: all cores)');
  return command
    .option('--force', 'replace --out if it exists and is not empty')
    .option('--json', opts.json)
    .option('--quiet', 'no progress bar');
}
