/**
 * The family registry: which record of families.ts a config.json belongs to, and the GGUF facts
 * of a `general.architecture`. Callers ask here instead of comparing model_type strings.
 */
import type { ExpertLayout } from '../lora/expert-stack.js';
import type { ModelConfig } from './config.js';
import { FAMILIES, type ArchFamily, type GgufFacts } from './families.js';

export { FAMILIES, type ArchFamily, type GgufFacts } from './families.js';
export { modelConfig, readModelConfig, ropeParameters, textFields, type ModelConfig, type RawConfig } from './config.js';

/** A `general.architecture` name; ggufFacts tells whether loraforge knows it. */
export type GgufArch = string;

/** The family whose architectures list config.json's `architectures[0]`. */
export function familyByArchitecture(name: string): ArchFamily | undefined {
  return FAMILIES.find((f) => f.architectures.includes(name));
}

/** The family of a `model_type`. */
export function familyByModelType(modelType: string): ArchFamily | undefined {
  return FAMILIES.find((f) => f.modelTypes.includes(modelType));
}

/** The family of a config.json (architectures[0], else model_type), or undefined: use the generic behaviour. */
export function familyOf(c: ModelConfig): ArchFamily | undefined {
  const byClass = c.architectures.length > 0 ? familyByArchitecture(c.architectures[0]!) : undefined;
  return byClass ?? (c.modelType === undefined ? undefined : familyByModelType(c.modelType));
}

/** How a family stores 3-D expert tensors; unknown families use transformers' default (E, out, in). */
export function familyExpertLayout(config: ModelConfig): ExpertLayout {
  return familyOf(config)?.expertLayout ?? 'out-in';
}

/** The GGUF architectures loraforge names tensors for, in registry order. */
export const GGUF_ARCHS: readonly GgufArch[] = [...new Set(FAMILIES.flatMap((f) => (f.gguf ? [f.gguf.arch] : [])))];

/** The GGUF architectures `to-gguf` writes whole models of. */
export const TO_GGUF_ARCHS: readonly GgufArch[] = [...new Set(FAMILIES.flatMap((f) => (f.gguf?.toGguf ? [f.gguf.arch] : [])))];

/** The first family registered under a GGUF architecture: its facts and HF defaults stand for the arch. */
export function familyOfGgufArch(arch: string): (ArchFamily & { gguf: GgufFacts }) | undefined {
  return FAMILIES.find((f): f is ArchFamily & { gguf: GgufFacts } => f.gguf?.arch === arch);
}

/** The GGUF facts of `arch`, or a one-line refusal naming it and the supported ones. */
export function ggufFacts(arch: string): GgufFacts {
  const family = familyOfGgufArch(arch);
  if (!family) throw new Error(`GGUF architecture "${arch}" is not supported for name mapping; supported: ${GGUF_ARCHS.join(', ')}`);
  return family.gguf;
}
