// Assembles the README's "Commands" section from docs/usage/*.md, in the order users meet the commands.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';

const order = ['demo', 'extract', 'merge-adapters', 'merge', 'spectrum', 'edit', 'apply', 'convert', 'edora-init', 'to-gguf', 'inspect', 'eval', 'compare', 'transplant'];
const readme = readFileSync('README.md', 'utf8');
const start = '<!-- usage sections -->';
const end = '<!-- end usage sections -->';
const sections = order
  .filter((c) => existsSync(`docs/usage/${c}.md`))
  .map((c) => demoteHeadings(readFileSync(`docs/usage/${c}.md`, 'utf8').trim()));
/** Usage pages open at level 1 or 2; in the README they sit under "## Commands". Code blocks are left alone. */
function demoteHeadings(md) {
  let inCode = false;
  return md
    .split('\n')
    .map((line) => {
      if (line.startsWith('```')) inCode = !inCode;
      if (inCode) return line;
      return line.replace(/^### /, '#### ').replace(/^#{1,2} /, '### ');
    })
    .join('\n');
}

const body = `${start}\n\n${sections.join('\n\n')}\n\n${end}`;
const i = readme.indexOf(start);
const j = readme.indexOf(end);
writeFileSync('README.md', readme.slice(0, i) + body + (j >= 0 ? readme.slice(j + end.length) : readme.slice(i + start.length)));
