import type { Command } from 'commander';
import { inspectPath } from '../inspect/inspect.js';
import { parseIntFlag } from './errors.js';
import { formatBytes, formatCount, table } from './format.js';
import { addHubFlag, helpStyle, hubOptions, HUB_IDS_HELP } from './options.js';

export function registerInspect(program: Command): void {
  const command = helpStyle(program.command('inspect <path>'))
    .description('List tensors, dtypes, shapes, bytes, parameter count and metadata of a model folder, safetensors file, GGUF file or PEFT adapter folder, local or on the Hub (headers only: a Hub model\'s weights are never downloaded).')
    .option('--json', 'print the result as JSON')
    .option('--limit <n>', 'show at most this many tensors in the table (0 = all)', '50');
  addHubFlag(command)
    .addHelpText(
      'after',
      `
Examples:
  loraforge inspect ./Llama-3.2-1B              # sharded or single-file model folder
  loraforge inspect ./my-adapter                 # PEFT adapter folder
  loraforge inspect adapter.gguf --json | jq .metadata
  loraforge inspect meta-llama/Llama-3.2-1B      # Hub model: shard headers by range requests
${HUB_IDS_HELP}

Hub safetensors headers are read by HTTP range requests (a few KB per file); a file already in the
cache is read there. Only config.json, adapter_config.json and the safetensors index come down.`,
    )
    .action(async (path: string, opts: { json?: boolean; limit: string; offline?: boolean }) => {
      const limitFlag = parseIntFlag('--limit', opts.limit, 0);
      const r = await inspectPath({ path, hub: hubOptions(opts) });
      if (opts.json) {
        process.stdout.write(JSON.stringify(r, null, 2) + '\n');
        return;
      }
      const limit = limitFlag || r.tensors.length;
      const rows = [['tensor', 'dtype', 'shape', 'bytes'], ...r.tensors.slice(0, limit).map((t) => [t.name, t.dtype, `[${t.shape.join(', ')}]`, formatBytes(t.bytes)])];
      const lines = [
        `${r.path} (${r.kind})`,
        `${r.tensors.length} tensors, ${formatCount(r.totalParameters)} parameters, ${formatBytes(r.totalBytes)}; dtypes: ${Object.entries(r.dtypes).map(([d, n]) => `${d}×${n}`).join(', ')}`,
        '',
        table(rows),
      ];
      if (r.tensors.length > limit) lines.push(`… ${r.tensors.length - limit} more (--limit 0 shows all)`);
      const meta = Object.entries(r.metadata);
      if (meta.length) lines.push('', 'metadata:', ...meta.map(([k, v]) => `  ${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`));
      if (r.experts?.length) {
        lines.push(
          '',
          'expert stacks (PEFT target_parameters):',
          ...r.experts.map((x) => `  ${x.parameter}: ${x.count} experts × rank ${x.rank}, ΔW_e ${x.outFeatures}×${x.inFeatures}, scaling ${x.scaling} (factors under ${x.module})`),
        );
      }
      if (r.config) lines.push('', 'config:', ...Object.entries(r.config).map(([k, v]) => `  ${k}: ${JSON.stringify(v)}`));
      process.stdout.write(lines.join('\n') + '\n');
    });
}
