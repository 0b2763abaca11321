import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { convertToGguf } from '../to-gguf/to-gguf.js';
import { assertNotInput } from '../io/atomic.js';
import type { FloatDType } from '../io/types.js';
import { lazyProgress } from './progress.js';
import { UsageError } from './errors.js';
import { pathExists } from '../io/paths.js';
import { DTYPE_VALUES, dtypeOption, helpStyle, parseDtype, hubOptions, HUB_IDS_HELP } from './options.js';

interface ToGgufFlags {
  offline?: boolean;
  model?: string;
  out?: string;
  outfile?: string;
  dtype?: FloatDType;
  outtype?: FloatDType;
  vocabFrom?: string;
  name?: string;
  force?: boolean;
  json?: boolean;
  quiet?: boolean;
}

/**
 * llama.cpp's convert_hf_to_gguf.py --outtype: its float types are ours; its quantized ones (and "auto")
 * are a usage error that says how to get them.
 */
function outtypeArg(value: string): FloatDType {
  const d = parseDtype(value);
  if (d) return d;
  if (/^(q\d|tq\d|iq\d)/i.test(value)) {
    throw new InvalidArgumentError(`loraforge writes ${DTYPE_VALUES} only; write f16, then quantize with llama.cpp: llama-quantize model-f16.gguf model-${value.toLowerCase()}.gguf ${value.toUpperCase()}`);
  }
  if (value.toLowerCase() === 'auto') throw new InvalidArgumentError('name the type: f16 (the default) or bf16, as the model was trained');
  throw new InvalidArgumentError(`use ${DTYPE_VALUES}`);
}

/** One value given under two spellings (argument and flag, or flag and alias): both only if they agree. */
function oneOf<T>(what: string, a: [string, T | undefined], b: [string, T | undefined], same = (x: T, y: T) => x === y): T | undefined {
  if (a[1] !== undefined && b[1] !== undefined && !same(a[1], b[1])) throw new UsageError(`${a[0]} and ${b[0]} give two different ${what}: give one`);
  return a[1] ?? b[1];
}

const samePath = (x: string, y: string) => resolve(x) === resolve(y);

export function registerToGguf(program: Command): void {
  helpStyle(program.command('to-gguf [model]'))
    .description(
      "Convert a Hugging Face Llama/Mistral/Mixtral/Qwen2/Qwen3/Qwen3-MoE/Gemma2 checkpoint (safetensors folder) to a llama.cpp GGUF model with the tensor names, Q/K permutation and metadata of llama.cpp's convert_hf_to_gguf.py.",
    )
    .option('--model <path>', 'model folder (config.json + safetensors, sharded or not), or give it as the argument (required: one of the two)')
    .option('--out <file>', 'GGUF file to write (required; --outfile, as llama.cpp names it, works too)')
    .addOption(new Option('--outfile <file>').hideHelp())
    .addOption(dtypeOption('storage type of the 2-D weights (1-D tensors and norms are always f32)', 'f16'))
    .addOption(new Option('--outtype <type>', "llama.cpp's name for --dtype (f32, f16, bf16; quantize with llama-quantize)").argParser(outtypeArg))
    .option('--vocab-from <file>', 'copy all tokenizer.* metadata from this GGUF (e.g. llama.cpp models/ggml-vocab-llama-spm.gguf) instead of reading the folder\'s tokenizer files')
    .option('--name <name>', 'general.name (default: the model folder name)')
    .option('--force', 'replace --out if it exists')
    .option('--json', 'print a JSON summary on stdout')
    .option('--quiet', 'no progress bar')
    .option('--offline', 'Hub ids: use only what the Hugging Face cache holds, never the network (as HF_HUB_OFFLINE=1)')
    .addHelpText(
      'after',
      `
Tokenizer: tokenizer.model (SentencePiece) or tokenizer.json (Llama-2 style BPE with byte fallback,
or byte-level BPE with the Llama 3 / Qwen2 / GPT-2 pre-tokenizer) from the model folder; for other
tokenizers pass --vocab-from with any GGUF of the same tokenizer.

This converts models. For a LoRA adapter in llama.cpp's GGUF format use
  loraforge convert --adapter ./my-lora --base ./model --format gguf --out ./adapter-gguf
  loraforge extract --model-a ./base --model-b ./tuned --format gguf --out ./adapter-gguf

Examples:
  loraforge to-gguf --model ./Llama-3.2-1B --out llama-3.2-1b-f16.gguf
  loraforge to-gguf --model ./tiny-llama --out tiny.gguf --dtype f32 --vocab-from ggml-vocab-llama-spm.gguf
  loraforge to-gguf --model ./Qwen2.5-0.5B --out qwen.gguf --dtype bf16 --json
  loraforge to-gguf ./Qwen2.5-0.5B --outfile qwen.gguf --outtype bf16      # llama.cpp's spelling
${HUB_IDS_HELP}`,
    )
    .action(async (modelArg: string | undefined, flags: ToGgufFlags) => {
      const model = oneOf('model folders', ['the model argument', modelArg], ['--model', flags.model], samePath);
      if (model === undefined) throw new UsageError('no model folder: loraforge to-gguf MODEL_DIR --out FILE.gguf (or --model MODEL_DIR)');
      const out = oneOf('output files', ['--out', flags.out], ['--outfile', flags.outfile], samePath);
      if (out === undefined) throw new UsageError('no output file: pass --out FILE.gguf');
      const dtype = oneOf('dtypes', ['--dtype', flags.dtype], ['--outtype', flags.outtype]) ?? 'F16';
      try {
        assertNotInput(out, [model, ...(flags.vocabFrom ? [flags.vocabFrom] : [])]);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      if ((await stat(out).catch(() => undefined))?.isDirectory()) {
        throw new UsageError(`--out ${out} is a folder; to-gguf writes one .gguf file: give a file path (e.g. ${join(out, 'model.gguf')})`);
      }
      if (!flags.force && (await pathExists(out, 'output'))) {
        throw new UsageError(`${out} already exists: choose another --out or pass --force to replace it`);
      }
      const progress = lazyProgress('to-gguf', Boolean(flags.quiet || flags.json));
      const started = Date.now();
      const result = await convertToGguf({
        hub: hubOptions(flags),
        model,
        out,
        dtype,
        vocabFrom: flags.vocabFrom,
        name: flags.name,
        onProgress: progress.tick,
      }).finally(progress.done);
      const seconds = (Date.now() - started) / 1000;
      // on stderr, so --json output stays one JSON document (which holds them too)
      for (const n of result.notes) process.stderr.write(`loraforge: note: ${n}\n`);
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ ...result, seconds }, null, 2)}\n`);
        return;
      }
      process.stdout.write(
        `wrote ${result.path}: ${result.arch}, ${result.tensors} tensors, ${result.dtype}, ${result.vocabSize} tokens (tokenizer from ${result.tokenizer}) in ${seconds.toFixed(1)}s\n`,
      );
    });
}
