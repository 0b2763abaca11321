/**
 * mergekit-yaml's own flags, which users bring to `loraforge merge` from habit. Each gets one line saying
 * what loraforge does instead: a note on stderr where going on does what the user wanted anyway, a usage
 * error where they expect something loraforge does not do. Hidden from --help except as one summary line.
 */
import { Option, type Command } from 'commander';
import { UsageError } from './errors.js';

type Reaction = { note: string } | { refuse: string };

interface MergekitFlag {
  /** the long name without dashes; `--no-<name>` exists when `off` is given */
  name: string;
  /** placeholder of the value the flag takes, if any */
  arg?: string;
  on: Reaction;
  off?: Reaction;
}

const CPU = { note: 'loraforge merges on the CPU, streaming tensors through worker threads; ignored' };

const MERGEKIT_FLAGS: readonly MergekitFlag[] = [
  { name: 'cuda', on: CPU, off: CPU },
  { name: 'read-to-gpu', on: CPU },
  { name: 'multi-gpu', on: CPU },
  { name: 'gpu-rich', on: CPU },
  { name: 'device', arg: '<device>', on: CPU },
  { name: 'num-threads', arg: '<n>', on: { note: 'loraforge sizes its worker threads to the cores; ignored' } },
  { name: 'lazy-unpickle', on: { note: 'loraforge reads safetensors lazily, one tensor at a time, and never unpickles; ignored' } },
  {
    name: 'low-cpu-memory',
    on: { note: 'loraforge always streams: memory is about 2 × (models + working arrays) + 1 copies of the largest tensor as f32, whatever the model size (--max-memory sets it); ignored' },
    off: { note: 'loraforge always streams: memory is about 2 × (models + working arrays) + 1 copies of the largest tensor as f32, whatever the model size (--max-memory sets it); ignored' },
  },
  {
    name: 'allow-crimes',
    on: { note: 'loraforge merges models of one architecture and refuses mixed ones with a message; ignored' },
    off: { note: 'loraforge refuses models of different architectures anyway; ignored' },
  },
  {
    name: 'copy-tokenizer',
    on: { note: 'loraforge copies the tokenizer files of the base model (else the first model) anyway; ignored' },
    off: { refuse: 'loraforge always copies the tokenizer files of the base model (else the first model); delete them from --out afterwards' },
  },
  {
    name: 'out-shard-size',
    arg: '<count>',
    on: { refuse: "mergekit counts parameters per shard; loraforge's --shard-size takes bytes, e.g. --shard-size 5GB" },
  },
  {
    name: 'trust-remote-code',
    on: { note: 'loraforge never runs model code; ignored' },
    off: { note: 'loraforge never runs model code; ignored' },
  },
  { name: 'clone-tensors', on: { note: 'loraforge writes every output tensor from its own buffer; ignored' }, off: { note: 'ignored' } },
  {
    name: 'safe-serialization',
    on: { note: 'loraforge always writes safetensors; ignored' },
    off: { refuse: 'loraforge writes safetensors only (no pytorch_model.bin)' },
  },
  {
    name: 'write-model-card',
    on: { note: 'loraforge writes no README.md model card; the config is saved as mergekit_config.yml' },
    off: { note: 'loraforge writes no model card anyway; ignored' },
  },
  { name: 'transformers-cache', arg: '<dir>', on: { refuse: 'loraforge reads local model folders only: download the models and name their folders in the config' } },
  { name: 'lora-merge-cache', arg: '<dir>', on: { note: 'loraforge applies MODEL+ADAPTER references tensor by tensor while merging and writes no merged copy to cache; ignored' } },
  { name: 'random-seed', arg: '<n>', on: { refuse: 'loraforge calls it --seed: use --seed N' } },
];

/** The mergekit-yaml flags, named in --help's text. */
export const MERGEKIT_FLAG_NAMES = MERGEKIT_FLAGS.map((f) => `--${f.name}`);

function attribute(name: string): string {
  return name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** Adds the mergekit-yaml flags to `command`, hidden from its option list. */
export function addMergekitFlags(command: Command): Command {
  for (const f of MERGEKIT_FLAGS) {
    command.addOption(new Option(`--${f.name}${f.arg ? ` ${f.arg}` : ''}`).hideHelp());
    if (f.off) command.addOption(new Option(`--no-${f.name}`).hideHelp());
  }
  return command;
}

/**
 * The notes for the mergekit-yaml flags the user gave, one line each; throws a UsageError for one that
 * asks for something loraforge does not do.
 */
export function mergekitFlagNotes(flags: Record<string, unknown>): string[] {
  const notes: string[] = [];
  for (const f of MERGEKIT_FLAGS) {
    const value = flags[attribute(f.name)];
    if (value === undefined) continue;
    const flag = value === false ? `--no-${f.name}` : `--${f.name}`;
    const reaction = value === false ? f.off! : f.on;
    if ('refuse' in reaction) throw new UsageError(`${flag} is a mergekit-yaml flag: ${reaction.refuse}`);
    notes.push(`${flag} is a mergekit-yaml flag: ${reaction.note}`);
  }
  return notes;
}
