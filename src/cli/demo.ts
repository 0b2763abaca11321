import type { Command } from 'commander';
import { DEMO_ENERGY, DEMO_SHAPE, runDemo, type DemoModule, type DemoResult } from '../demo/demo.js';
import { runTransplantDemo, TRANSPLANT_DEMO, type TransplantDemoResult } from '../demo/transplant-demo.js';
import { UsageError } from '../errors.js';
import { parseIntFlag } from './errors.js';
import { table } from './format.js';
import { lazyProgress } from './progress.js';
import { helpStyle } from './options.js';
import { checkOutFlag } from './output.js';

interface DemoFlags {
  out?: string;
  keep?: boolean;
  force?: boolean;
  seed: string;
  json?: boolean;
  quiet?: boolean;
}

function pct(x: number): string {
  return `${(x * 100).toFixed(2)}%`;
}

function shortName(module: string): string {
  return module.slice(module.lastIndexOf('.') + 1);
}

function plantedCell(m: DemoModule): string {
  if (m.plantedA && m.plantedB) return `${m.plantedA} + ${m.plantedB} = ${m.plantedA + m.plantedB}`;
  return String(m.plantedA || m.plantedB);
}

function foundCell(m: DemoModule): string {
  const same = m.found.every((r) => r === m.found[0]);
  return same ? `${m.found[0]} (all ${m.found.length} layers)` : m.found.join(', ');
}

function changedIn(m: DemoModule): string {
  return m.plantedA && m.plantedB ? 'A and B' : m.plantedA ? 'A' : 'B';
}

/** Recovered = no further from the planted ΔW than the rounding noise of the inputs. */
function withinNoise(m: DemoModule): boolean {
  return m.errors.every((e, i) => e <= m.noise[i]);
}

function formatDemo(r: DemoResult): string {
  const s = DEMO_SHAPE;
  const rep = r.report;
  const lines = [
    'loraforge demo: extract a LoRA from two fine-tunes whose differences are known',
    '',
    `Built a small Llama-style model (${s.layers} layers, hidden ${s.hidden}, ${s.heads}/${s.kvHeads} attention heads, vocab ${s.vocab}, bf16)`,
    `and two fine-tunes of it by merging random LoRAs into it (${r.buildSeconds.toFixed(1)} s):`,
    ...(['a', 'b'] as const).map((side) => {
      const mods = r.modules.filter((m) => (side === 'a' ? m.plantedA : m.plantedB) > 0);
      const rank = side === 'a' ? mods[0]?.plantedA : mods[0]?.plantedB;
      const extra = side === 'b' && rep.nonTargetDiffering.length ? '  (and a changed norm)' : '';
      return `  model ${side.toUpperCase()} = base + rank-${rank} LoRA on ${mods.map((m) => shortName(m.module)).join(', ')}${extra}`;
    }),
    '',
    `Extracted B − A, keeping per module the smallest rank that captures ${DEMO_ENERGY * 100}% of ‖ΔW‖² (${rep.totals.seconds.toFixed(1)} s):`,
    '',
    table([
      ['module', 'changed in', 'planted rank', 'found rank', 'error vs planted ΔW', 'bf16 noise in ΔW'],
      ...r.modules.map((m) => [
        shortName(m.module),
        changedIn(m),
        plantedCell(m),
        foundCell(m),
        pct(Math.max(...m.errors)),
        pct(Math.max(...m.noise)),
      ]),
    ])
      .split('\n')
      .map((l) => `  ${l}`)
      .join('\n'),
    '',
  ];
  const good = r.recovered && r.modules.every(withinNoise);
  lines.push(
    good
      ? '  ✓ Every planted rank was found, and the adapter (read back from its file) is closer to the planted ΔW\n' +
          '    than the bf16 checkpoints themselves are: the truncation removes most of their rounding noise.'
      : '  ✗ Not every planted ΔW was recovered within the rounding noise: please report this with the output of --json',
  );
  if (r.untouched.length) lines.push(`  ${r.untouched.map(shortName).join(', ')}: identical in A and B, skipped (nothing to extract).`);
  for (const d of rep.nonTargetDiffering) lines.push(`  ${d.name} differs too: not a LoRA target, so it is listed in the report (--save-modules would save it).`);
  lines.push('');
  if (r.adapterDir !== null) lines.push(`Adapter (PEFT, with report.json): ${r.adapterDir}`);
  else lines.push('The adapter and the models were in a temporary folder, now removed: pass --out DIR to keep the adapter, --keep the models.');
  if (r.models !== null) {
    lines.push(`Models A and B (config.json, tokenizer, bf16 weights): ${r.models.a}  ${r.models.b}`);
    lines.push('', 'Try other commands on them, e.g.:', `  loraforge to-gguf --model ${r.models.a} --out ./demo-a.gguf`);
  } else if (r.adapterDir !== null) lines.push('Models A and B were in a temporary folder, now removed: pass --keep to keep them beside the adapter.');
  lines.push('', 'Now with your own models:', '  loraforge extract --model-a ./model-A --model-b ./model-B --out ./adapter --energy 0.95');
  return lines.join('\n');
}

function formatTransplantDemo(r: TransplantDemoResult): string {
  const t = TRANSPLANT_DEMO;
  const rep = r.report;
  const lines = [
    'loraforge demo transplant: align a donor of another width and tokenizer whose rows are a known map of the base’s',
    '',
    `Built a small Llama-style base (width ${t.baseWidth}, vocab ${t.vocab}, bf16) and a donor of width ${t.donorWidth} whose tokenizer is the base's`,
    `with its ids shuffled; each donor embedding and lm_head row is the base's row of the same token rotated into`,
    `the wider space, scaled by ${t.scale} and shifted (${r.buildSeconds.toFixed(1)} s). Transplanted in ${rep.seconds.toFixed(1)} s:`,
    '',
    `  shared vocabulary: ${rep.shared.pairs} tokens, paired across the shuffled ids`,
    '',
    table([
      ['stage', 'outcome', 'residual before → after', 'scale found (planted 1/' + t.scale + ')', 'blended', 'PPL ratio'],
      ...rep.stages.map((s) => [
        s.stage,
        s.outcome,
        s.alignment ? `${s.alignment.residualBefore.toFixed(4)} → ${s.alignment.residualAfter.toFixed(4)}` : '',
        s.alignment ? s.alignment.scale.toFixed(4) : '',
        `${s.blended ?? ''}`,
        s.pplRatio !== undefined ? s.pplRatio.toFixed(5) : '',
      ]),
    ])
      .split('\n')
      .map((l) => `  ${l}`)
      .join('\n'),
    '',
    r.recovered
      ? '  ✓ The planted map was found to bf16 rounding, so every blended row keeps its direction and the guard sees\n' +
          `    no change (symmetric KL ${rep.final.kl.symmetric.toExponential(1)} nats).`
      : '  ✗ The planted map was not recovered: please report this with the output of --json',
    '',
    r.outDir !== null ? `Transplanted model: ${r.outDir}` : 'The models were in a temporary folder, now removed: pass --out DIR to keep the transplanted one.',
    '',
    'Now with your own models:',
    '  loraforge transplant --base ./base --donor ./donor --out ./merged --prompts my-domain.txt',
  ];
  return lines.join('\n');
}

export function registerDemo(program: Command): void {
  helpStyle(program.command('demo'))
    .description(
      'Build two small fine-tunes with known differences and extract the LoRA between them; or (demo transplant) a base and a donor ' +
        'of another width and tokenizer with a planted map between their embeddings, and transplant (no downloads, a few seconds).',
    )
    .argument('[which]', 'extract (default) or transplant')
    .option('--out <dir>', 'keep the extracted adapter (demo transplant: the transplanted model) in this folder')
    .option('--keep', 'keep the generated models A and B: beside --out (<out>-model-a, <out>-model-b), or without --out in a temporary folder whose path is printed')
    .option('--force', 'replace a non-empty --out')
    .option('--seed <n>', 'seed for the generated models and the SVD', '0')
    .option('--json', 'print the result as JSON')
    .option('--quiet', 'no progress bar')
    .addHelpText(
      'after',
      `
Examples:
  loraforge demo
  loraforge demo --out ./demo-adapter --keep
  loraforge demo transplant`,
    )
    .action(async (which: string | undefined, flags: DemoFlags) => {
      if (which !== undefined && which !== 'extract' && which !== 'transplant') throw new UsageError(`demo: "${which}" is not a demo; choose extract (the default) or transplant`);
      const seed = parseIntFlag('--seed', flags.seed, 0);
      // an existing --out is a usage error (exit 2), refused before the models are built
      if (flags.out !== undefined) await checkOutFlag(flags.out, [], flags.force === true);
      if (which === 'transplant') {
        if (flags.keep) throw new UsageError('demo transplant: --keep applies to the extract demo; --out DIR keeps the transplanted model');
        const bar = lazyProgress('transplant', flags.quiet === true || flags.json === true);
        const result = await runTransplantDemo({ out: flags.out, overwrite: flags.force, seed, onProgress: bar.tick }).finally(bar.done);
        process.stdout.write((flags.json ? JSON.stringify(result, null, 2) : formatTransplantDemo(result)) + '\n');
        if (!result.recovered) process.exitCode = 1;
        return;
      }
      const bar = lazyProgress('extract', flags.quiet === true || flags.json === true);
      let result: DemoResult;
      try {
        result = await runDemo({
          out: flags.out,
          keep: flags.keep,
          overwrite: flags.force,
          seed,
          onProgress: bar.tick,
        });
      } finally {
        bar.done();
      }
      process.stdout.write((flags.json ? JSON.stringify(result, null, 2) : formatDemo(result)) + '\n');
      if (!result.recovered) process.exitCode = 1;
    });
}
