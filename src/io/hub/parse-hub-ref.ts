/** A model or adapter on the Hub: `repo` is `org/name`; `path` a file or folder inside it. */
export interface HubRef {
  repo: string;
  revision?: string;
  path?: string;
}

/** An org or repo name as the Hub allows it: letters, digits, `.`, `_`, `-`, not starting with a dot or dash, at most 96 characters. */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,95}$/;
/** A branch, tag or commit: git ref characters, never `..` (which would climb out of refs/ in the cache). */
const REVISION = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
/** A repo name ending like a file is almost surely a local path that does not exist (`out/model.safetensors`). */
const FILE_LIKE = /\.(safetensors|gguf|json|ya?ml|bin|pt|pth|onnx|txt)$/i;

function validName(part: string): boolean {
  return NAME.test(part) && !part.includes('--') && !part.includes('..') && !part.endsWith('.');
}

/**
 * Syntax only: `org/name`, `org/name@rev`, `org/name/sub/file.safetensors`, `org/name@rev/file`
 * (a `refs/pr/N` revision keeps its slashes). undefined when `text` is not a Hub id, so the
 * caller treats it as a local path. Whether the repo exists is the Hub's to say.
 */
export function parseHubRef(text: string): HubRef | undefined {
  if (text.includes('\\') || text.includes('//') || text.endsWith('/')) return undefined;
  const parts = text.split('/');
  if (parts.length < 2) return undefined;
  const org = parts[0]!;
  let name = parts[1]!;
  let rest = parts.slice(2);
  let revision: string | undefined;
  const at = name.indexOf('@');
  if (at >= 0) {
    revision = name.slice(at + 1);
    name = name.slice(0, at);
    // refs/pr/3: the Hub's pull-request refs are the one revision form with slashes
    if (revision === 'refs' && rest[0] === 'pr' && rest[1] !== undefined && /^\d+$/.test(rest[1])) {
      revision = `refs/pr/${rest[1]}`;
      rest = rest.slice(2);
    } else if (!REVISION.test(revision) || revision.includes('..')) {
      return undefined;
    }
  }
  if (!validName(org) || !validName(name) || FILE_LIKE.test(name)) return undefined;
  if (rest.some((p) => p === '' || p === '.' || p === '..')) return undefined;
  const ref: HubRef = { repo: `${org}/${name}` };
  if (revision !== undefined) ref.revision = revision;
  if (rest.length > 0) ref.path = rest.join('/');
  return ref;
}
