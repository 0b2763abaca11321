/**
 * Flags several commands share, defined once so that they parse and read the same in every --help.
 */
import { existsSync } from 'node:fs';
import type { KlPositions } from '../scoring/scoring.js';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { parseShardSize } from '../io/safetensors.js';
import type { FloatDType } from '../io/types.js';
import { parseAdapterSpec, type AdapterSpec } from '../lora/adapter-spec.js';
import { noteInput, readInputText } from '../io/inputs.js';
import { UsageError } from './errors.js';
import { parseJsonText } from '../io/json-file.js';
import type { HubOptions } from '../io/hub/index.js';
import { localInput } from '../io/local-inputs.js';

/** Every spelling users bring (ours, llama.cpp's, torch's, numpy's) of the three float types we write. */
const DTYPE_SPELLINGS: Readonly<Record<FloatDType, readonly string[]>> = {
  F32: ['f32', 'fp32', 'float32', 'float'],
  F16: ['f16', 'fp16', 'float16', 'half'],
  BF16: ['bf16', 'bfloat16'],
};

/** The accepted values, as error messages and --help list them. */
export const DTYPE_VALUES = 'f32, f16 or bf16 (also fp32/float32/float, fp16/float16/half, bfloat16)';

/** A dtype in any of DTYPE_SPELLINGS, any case; undefined when it is none of them. */
export function parseDtype(value: string): FloatDType | undefined {
  const v = value.trim().toLowerCase();
  return (Object.keys(DTYPE_SPELLINGS) as FloatDType[]).find((d) => DTYPE_SPELLINGS[d].includes(v));
}

/**
 * The one `--dtype` of every command: parsed while the command line is read, so a bad value stops the
 * run (exit 2, naming the flag and the accepted values) before any work. `fallback` is what the command
 * does without it, shown in --help.
 */
export function dtypeOption(description: string, fallback: string, flags = '--dtype <dtype>'): Option {
  return new Option(flags, `${description}: ${DTYPE_VALUES}`).default(undefined, fallback).argParser(dtypeArg);
}

function dtypeArg(value: string): FloatDType {
  const d = parseDtype(value);
  if (!d) throw new InvalidArgumentError(`use ${DTYPE_VALUES}`);
  return d;
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
 * `--adapter DIR[:WEIGHT]`. A value that exists as a path is a path, colons and all; otherwise a last
 * `:` followed by no path separator announces a weight, which must then be a number.
 */
export function parseAdapterFlag(text: string, flag = '--adapter'): AdapterSpec {
  if (existsSync(text)) return { dir: text };
  const spec = parseAdapterSpec(text);
  if (spec.weight !== undefined) return spec;
  const colon = text.lastIndexOf(':');
  const tail = text.slice(colon + 1);
  if (colon > 0 && !/[\\/]/.test(tail)) {
    throw new UsageError(`${flag} ${text}: the weight "${tail}" after the last ":" is not a number; write DIR:WEIGHT, e.g. ${text.slice(0, colon)}:0.5`);
  }
  return spec;
}

/** --base-config: a config.json, or a model folder holding one, or a Hub model (its config.json alone is fetched). */
export async function readBaseConfig(given: string, hub?: HubOptions): Promise<Record<string, unknown>> {
  const path = await localInput(given, 'config', { hub });
  noteInput(path); // a folder named here is protected from --out as a whole, not only its config.json
  const file = (await stat(path).catch(() => undefined))?.isDirectory() ? join(path, 'config.json') : path;
  let text: string;
  try {
    text = await readInputText(file);
  } catch {
    throw new UsageError(`--base-config ${path}: cannot read ${file}; pass the base model's config.json or its folder`);
  }
  try {
    return parseJsonText(file, text) as Record<string, unknown>;
  } catch (err) {
    throw new UsageError(`--base-config ${(err as Error).message}`);
  }
}

/** Collects a repeatable flag's values; no default, so requiredOption can tell when it was never given. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
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

/**
 * One style for every option line of --help: "(required)" on mandatory flags, choices and defaults as
 * "(choices: a, b; default: x)", unquoted, and no default shown for a repeatable flag's empty list.
 */
function optionHelp(option: Option): string {
  const extra: string[] = [];
  if (option.mandatory) extra.push('required');
  if (option.argChoices) extra.push(`choices: ${option.argChoices.join(', ')}`);
  // a default the library applies is given as .default(undefined, 'text'): shown, but never passed on
  const value: unknown = option.defaultValue;
  const shown = value !== undefined && !(Array.isArray(value) && value.length === 0) && (option.required || option.optional);
  const text = option.defaultValueDescription ?? (shown ? String(value) : undefined);
  if (text !== undefined) extra.push(`default: ${text}`);
  return extra.length ? `${option.description} (${extra.join('; ')})` : option.description;
}

/** Applies optionHelp to a command's --help. */
export function helpStyle<C extends Command>(command: C): C {
  command.configureHelp({ optionDescription: (option: Option) => optionHelp(option) });
  return command;
}

/** `--kl-positions all|tail:N` (eval, transplant). */
export function parseKlPositions(text: string): KlPositions {
  if (text === 'all') return 'all';
  const m = /^tail:(\d+)$/.exec(text);
  if (!m || Number(m[1]) < 1) throw new UsageError(`--kl-positions must be "all" or "tail:N" with N ≥ 1, got "${text}"`);
  return { tail: Number(m[1]) };
}

/** `--offline`, for every command that takes models or adapters (which may be Hub ids). */
export function addHubFlag(command: Command): Command {
  return command.option('--offline', 'Hub ids: use only what the Hugging Face cache holds, never the network (as HF_HUB_OFFLINE=1)');
}

/** The library's Hub options from the command line (the environment adds the rest). */
export function hubOptions(flags: { offline?: boolean }): HubOptions {
  return { offline: flags.offline === true, onWarning: warnOnStderr };
}

/** A library warning (e.g. the Hub unreachable, the cache used) as the CLI prints warnings. */
function warnOnStderr(message: string): void {
  process.stderr.write(`loraforge: warning: ${message}\n`);
}

/** The --help paragraph of every command that takes models or adapters. */
export const HUB_IDS_HELP = `
Models and adapters may be local paths or Hugging Face Hub ids: org/name, org/name@revision (branch,
tag or commit), org/name/sub/file.safetensors. A local path that exists always wins over a Hub id.
Hub files go into the cache transformers and PEFT share (HF_HUB_CACHE, else HF_HOME/hub), only those
the command reads; HF_TOKEN (or huggingface-cli login) for gated or private repos.`;
