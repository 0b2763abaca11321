/**
 * Σ edits of a kohya or diffusers LoRA `.safetensors` file (edit.ts gives the semantics): each
 * selected module's update (alpha/r)·up·down (a conv one flattened to out × (in·kh·kw)) is
 * re-factorised with its alpha kept, and the file is written back in its own layout (kohya: alpha
 * tensors, conv factors 4-D, the header kept with ss_network_dim/alpha/args recomputed from the
 * written ranks) or in the one --out-format names. Modules are selected by the image-model naming
 * rule (lora-file-format.ts). A selected module whose edit changes no σ (e.g. --scale 0:1) is
 * written as read, so the identity edit reproduces every module's product exactly.
 */
import { stat } from 'node:fs/promises';
import { getBackend } from '../linalg/index.js';
import { productSvd } from '../linalg/product-svd.js';
import { assertFiniteSpectrum } from '../linalg/finite-spectrum.js';
import { createRng } from '../linalg/random.js';
import { UsageError } from '../errors.js';
import type { LoraModule, LoraModuleInfo } from '../lora/adapter.js';
import { openLoraFile, type LoraFile } from '../lora/lora-file.js';
import { loraFileLayerIndex, loraFileModuleType } from '../lora/lora-file-format.js';
import { checkLoraFileOutPath, checkLoraFileOutput, createLoraFileOutput, type LoraFileOutFormat } from '../lora/lora-file-output.js';
import { naturalCompare } from '../lora/module-names.js';
import { scaledLeftFactor } from '../lora/scaled-left-factor.js';
import { runCommand } from '../pipeline/run.js';
import { editComponents, refactorEdited } from './sigma-edit.js';
import { isSelected, type ModuleNaming } from './selectors.js';
import { checkIndices, componentCount, dominantDType, drawNoise, summarize, type EditAdapterOptions, type EditSummary, type ModuleEditReport } from './edit.js';
import { localInput } from '../io/local-inputs.js';

export interface EditLoraFileOptions extends Omit<EditAdapterOptions, 'format' | 'baseConfig'> {
  /** default: the input's layout */
  outFormat?: LoraFileOutFormat;
}

const FILE_NAMING: ModuleNaming = { layerOf: loraFileLayerIndex, typeOf: loraFileModuleType };

/**
 * The alpha that gives the module's scale as alpha/r: its own, unless a diffusers header asked for
 * rsLoRA (alpha/√r), which no output here keeps; then scaling·r.
 */
function plainAlpha(info: LoraModuleInfo): number {
  return info.scaling === info.alpha / info.rank ? info.alpha : info.scaling * info.rank;
}

interface FileItem {
  name: string;
  info: LoraModuleInfo;
  selected: boolean;
}

function planFileEdit(file: LoraFile, opts: EditLoraFileOptions, format: LoraFileOutFormat) {
  const select = opts.select ?? {};
  const items: FileItem[] = [...file.modules]
    .sort((a, b) => naturalCompare(a.name, b.name))
    .map((info) => ({ name: info.name, info, selected: isSelected(select, info.name, FILE_NAMING) }));
  checkLoraFileOutput({ format, moduleNames: items.map((i) => i.name) });
  checkIndices(opts.edit, items.filter((i) => i.selected).map((i) => componentCount(i.info.rank, i.info.outFeatures, i.info.inFeatures)), opts.adapter);
  return { items, rng: opts.edit.perturb ? createRng(opts.seed ?? 0) : undefined };
}

/** Edits Σ of the selected modules of a LoRA file and writes the result; see the top of this file. */
export async function editLoraFile(params: EditLoraFileOptions): Promise<EditSummary> {
  const opts = { ...params, adapter: await localInput(params.adapter, 'adapter', params) };
  const file = await openLoraFile(opts.adapter);
  const format = opts.outFormat ?? file.format;
  await file.close();
  checkLoraFileOutPath(opts.out, format);
  if (format !== 'peft' && !opts.overwrite && (await stat(opts.out).catch(() => undefined))) {
    throw new UsageError(`--out ${opts.out} exists: choose another file or pass --force to replace it`);
  }
  const dtype = opts.dtype ?? (await dominantDType(opts.adapter));
  return runCommand({
    inputs: [opts.adapter],
    open: async (keep) => ({ backend: opts.backend ?? (await getBackend()), file: keep(await openLoraFile(opts.adapter)) }),
    plan: ({ file }) => planFileEdit(file, opts, format),
    output: {
      ...(format === 'peft' ? { dir: opts.out, overwrite: opts.overwrite } : { file: opts.out }),
      // the header is the input's when the layout is kept (the writer recomputes kohya's ss_network_* fields)
      sink: (path, { res: { file }, plan: { items } }) =>
        createLoraFileOutput(path, { format, dtype, moduleNames: items.map((i) => i.name), metadata: format === file.format ? file.metadata : undefined }),
    },
    load: (item, { res: { file } }) => file.load(item.name),
    each: async ({ info, selected }, m, { res: { backend }, plan: { rng }, sink }): Promise<ModuleEditReport> => {
      const noise = drawNoise(rng, componentCount(info.rank, info.outFeatures, info.inFeatures));
      const alpha = plainAlpha(info);
      const asRead: LoraModule = { ...m, alpha };
      if (!selected) {
        await sink.addModule(asRead);
        return { name: info.name, edited: false, rankBefore: info.rank, rankAfter: info.rank };
      }
      const svd = await productSvd(backend, await scaledLeftFactor(backend, m, info.scaling), m.A);
      assertFiniteSpectrum(svd.S, `${opts.adapter}: module "${info.name}"`);
      const { sigmaAfter, kept } = editComponents(svd.S, opts.edit, noise);
      const unchanged = kept.length === svd.S.length && sigmaAfter.every((s, i) => s === svd.S[i]);
      const r = unchanged ? { A: m.A, B: m.B, rank: info.rank, sigmaAfter } : refactorEdited(svd, opts.edit, alpha, false, noise);
      const edited: LoraModule = { name: m.name, kind: 'linear', A: r.A, B: r.B, alpha };
      if (m.conv) edited.conv = m.conv;
      await sink.addModule(edited);
      return { name: info.name, edited: true, rankBefore: info.rank, rankAfter: r.rank, sigmaBefore: Array.from(svd.S), sigmaAfter: Array.from(r.sigmaAfter) };
    },
    finish: async (rows, { sink }) => {
      await sink.finish();
      return summarize(opts.out, format, dtype, rows, 0);
    },
    onProgress: opts.onProgress,
  });
}
