import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { convertToGguf } from '../convert/to-gguf.js';
import { assertNotInput } from '../io/atomic.js';
import type { FloatDType } from '../io/types.js';
import { lazyProgress } from './progress.js';
import { UsageError } from './errors.js';
import { pathExists } from '../io/paths.js';

const DTYPES: Readonly<Record<string, FloatDType>> = { f16: 'F16', bf16: 'BF16', f32: 'F32' };

interface ToGgufFlags {
  model: string;
  out: string;
  dtype: string;
  vocabFrom?: string;
  name?: string;
  force?: boolean;
  json?: boolean;
  quiet?: boolean;
}

export function registerToGguf(program: Command): void {
  program
    .command('to-gguf')
    .description(
      "Convert a Hugging Face Llama/Mistral/Qwen2/Qwen3 checkpoint (safetensors folder) to a llama.cpp GGUF model with the tensor names, Q/K permutation and metadata of llama.cpp's convert_hf_to_gguf.py.",
    )
    .requiredOption('--model <path>', 'model folder (config.json + safetensors, sharded or not)')
    .requiredOption('--out <file>', 'GGUF file to write')
    .option('--dtype <type>', 'storage type of the 2-D weights: f16, bf16 or f32 (1-D tensors and norms are always f32)', 'f16')
    .option('--vocab-from <file>', 'copy all tokenizer.* metadata from this GGUF (e.g. llama.cpp models/ggml-vocab-llama-spm.gguf) instead of reading the folder\'s tokenizer files')
    .option('--name <name>', 'general.name (default: the model folder name)')
    .option('--force', 'replace --out if it exists')
    .option('--json', 'print a JSON summary on stdout')
    .option('--quiet', 'no progress bar')
    .addHelpText(
      'after',
      `
Tokenizer: tokenizer.model (SentencePiece) or tokenizer.json (Llama-2 style BPE with byte fallback,
or byte-level BPE with the Llama 3 / Qwen2 / GPT-2 pre-tokenizer) from the model folder; for other
tokenizers pass --vocab-from with any GGUF of the same tokenizer.

Examples:
  loraforge to-gguf --model ./Llama-3.2-1B --out llama-3.2-1b-f16.gguf
  loraforge to-gguf --model ./tiny-llama --out tiny.gguf --dtype f32 --vocab-from ggml-vocab-llama-spm.gguf
  loraforge to-gguf --model ./Qwen2.5-0.5B --out qwen.gguf --dtype bf16 --json`,
    )
    .action(async (flags: ToGgufFlags) => {
      const dtype = DTYPES[flags.dtype.toLowerCase()];
      if (!dtype) throw new UsageError(`--dtype must be f16, bf16 or f32, got "${flags.dtype}"`);
      assertNotInput(flags.out, [flags.model, ...(flags.vocabFrom ? [flags.vocabFrom] : [])]);
      if ((await stat(flags.out).catch(() => undefined))?.isDirectory()) {
        throw new UsageError(`--out ${flags.out} is a folder; to-gguf writes one .gguf file: give a file path (e.g. ${join(flags.out, 'model.gguf')})`);
      }
      if (!flags.force && (await pathExists(flags.out, 'output'))) {
        throw new UsageError(`${flags.out} already exists: choose another --out or pass --force to replace it`);
      }
      const progress = lazyProgress('to-gguf', Boolean(flags.quiet || flags.json));
      const started = Date.now();
      const result = await convertToGguf(flags.model, flags.out, {
        dtype,
        vocabFrom: flags.vocabFrom,
        name: flags.name,
        onTensor: (name, _index, total) => progress.tick({ name, total }),
      }).finally(progress.done);
      const seconds = (Date.now() - started) / 1000;
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ ...result, seconds }, null, 2)}\n`);
        return;
      }
      process.stdout.write(
        `wrote ${result.path}: ${result.arch}, ${result.tensors} tensors, ${result.dtype}, ${result.vocabSize} tokens (tokenizer from ${result.tokenizer}) in ${seconds.toFixed(1)}s\n`,
      );
    });
}
