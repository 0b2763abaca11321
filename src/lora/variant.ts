/**
 * Which LoRA variant an adapter is (LoRA, rsLoRA, DoRA, EDoRA, LoRA-XS), checked for consistency
 * before any work is done, plus EDoRA's `reconstr_config.json`.
 *
 * EDoRA's reference code (Nasiri et al. 2025, github.com/Hamid-Nasiri/EDoRA) writes
 * reconstr_config.json into its training output folder; the adapter is saved in that folder at the
 * end and in `checkpoint-N/` subfolders during training, and its merge script reads the file from
 * the adapter folder's parent. So we look in the adapter folder first, then in its parent. The
 * file only says how A and B were initialised (SVD rank, iterations, seed); PEFT saves A and B
 * with the adapter anyway, so it is cross-checked when present and never required.
 */
import { dirname, join, resolve } from 'node:path';
import type { PeftAdapter } from './adapter.js';
import { adapterMethod, type AdapterMethod } from './weight-update.js';
import { readJsonFileIfPresent } from '../io/json-file.js';

export const RECONSTR_CONFIG_FILE = 'reconstr_config.json';

/** The reference code's reconstruction config (its YAML plus the rank it adds before saving). */
export interface ReconstrConfig {
  reconstruction_type: string;
  reconstr_mode: string;
  half_init_dec: boolean;
  replacement_module_random_init: boolean;
  /** true: an r×r latent R sits between A and B (EDoRA); false: plain DoRA with SVD-initialised A, B */
  r_squared: boolean;
  svd: { n_iter: number; random_state: number; rank?: number };
  [key: string]: unknown;
}

/** The config edora-init writes: SVD initialisation of A and B, latent R between them. */
export function edoraReconstrConfig(rank: number, powerIters: number, seed: number): ReconstrConfig {
  return {
    reconstruction_type: 'svd',
    reconstr_mode: 'separated',
    half_init_dec: false,
    replacement_module_random_init: false,
    r_squared: true,
    svd: { n_iter: powerIters, random_state: seed, rank },
  };
}

/** reconstr_config.json beside the adapter (its folder, then the folder above), if any. */
export async function findReconstrConfig(adapterDir: string): Promise<{ path: string; config: ReconstrConfig } | undefined> {
  const dir = resolve(adapterDir);
  for (const candidate of [join(dir, RECONSTR_CONFIG_FILE), join(dirname(dir), RECONSTR_CONFIG_FILE)]) {
    const json = await readJsonFileIfPresent(candidate);
    if (json === undefined) continue;
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${candidate}: expected a JSON object`);
    return { path: candidate, config: json as ReconstrConfig };
  }
  return undefined;
}

export interface AdapterVariant {
  /** method per module name */
  methods: Map<string, AdapterMethod>;
  /** 'lora' | 'rslora' | 'dora' | 'edora' | 'lora-xs' or a mix such as 'dora+lora' */
  summary: string;
  /** the reconstr_config.json consulted (EDoRA only) */
  reconstrConfig?: string;
  notes: string[];
}

/**
 * Checks that adapter_config.json and the tensors agree on the variant: a magnitude needs use_dora
 * (PEFT would silently drop it otherwise, changing the result; the adapter reader already refused
 * use_dora without magnitudes); an EDoRA reconstr_config.json must agree on the latent and its rank.
 */
export async function checkAdapterVariant(adapter: PeftAdapter): Promise<AdapterVariant> {
  const where = `${adapter.dir}`;
  const useDora = adapter.config.use_dora === true;
  const methods = new Map<string, AdapterMethod>();
  const notes: string[] = [];
  for (const m of adapter.modules) {
    if (!useDora && m.hasMagnitude) {
      throw new Error(
        `${where}: module "${m.name}" has a lora_magnitude_vector but adapter_config.json does not set use_dora: true; set it if this is a DoRA/EDoRA adapter`,
      );
    }
    methods.set(m.name, adapterMethod(m));
  }

  let reconstrConfig: string | undefined;
  if (adapter.modules.some((m) => m.hasLatent)) {
    const found = await findReconstrConfig(adapter.dir);
    if (found) {
      reconstrConfig = found.path;
      const { config } = found;
      if (config.r_squared === false) {
        throw new Error(`${found.path} says r_squared: false (no latent R) but ${where} stores lora_latent_mapping tensors: the config belongs to another run`);
      }
      const rank = config.svd?.rank;
      for (const m of adapter.modules) {
        if (!m.hasLatent) {
          throw new Error(`${where}: module "${m.name}" has no lora_latent_mapping while others have one (and ${found.path} says r_squared): the adapter is incomplete`);
        }
        if (rank !== undefined && m.rank !== rank) {
          throw new Error(`${where}: module "${m.name}" has rank ${m.rank} but ${found.path} says svd.rank ${rank}: the config belongs to another run`);
        }
      }
      if (config.replacement_module_random_init === true) {
        notes.push(`${found.path}: A and B were initialised at random (replacement_module_random_init), not by SVD; the stored A and B are used`);
      }
    }
  }

  const kinds = new Set<string>();
  for (const method of methods.values()) kinds.add(method === 'lora' && adapter.config.use_rslora === true ? 'rslora' : method);
  return { methods, summary: [...kinds].sort().join('+') || 'empty', reconstrConfig, notes };
}
