#!/usr/bin/env node
/**
 * Installs the real clients the tests drive, each into its own ignored folder, from the npm registry.
 * They stay out of package.json because users of loraforge never need them (~85 MB of llama.cpp,
 * a ~200 MB Chromium):
 *   .llama/    node-llama-cpp with its CPU prebuilt for this platform (the GGUF end-to-end tests)
 *   .browser/  playwright-core and @sparticuz/chromium, a headless Chromium shipped inside an npm
 *              package, unpacked once into .browser/chromium/ (the HTML report's browser test)
 * `npm test` runs this first (pretest). It reads the installed versions before anything else, so
 * when everything is in place it finishes at once without touching the network.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const NODE_LLAMA_CPP = '3.22.1';
/** node-llama-cpp's CPU prebuilt per platform; its other optional packages (CUDA, Vulkan) are left out. */
const LLAMA_PREBUILT = {
  'linux-x64': 'linux-x64',
  'linux-arm64': 'linux-arm64',
  'darwin-arm64': 'mac-arm64-metal',
  'darwin-x64': 'mac-x64',
  'win32-x64': 'win-x64',
  'win32-arm64': 'win-arm64',
};
/** 143.0.4 is the newest @sparticuz/chromium whose engines field accepts Node 20; its binary is Linux x64. */
const SPARTICUZ_CHROMIUM = '143.0.4';
const PLAYWRIGHT_CORE = '1.65.1';
const CHROMIUM_DIR = join(ROOT, '.browser', 'chromium');

const platform = `${process.platform}-${process.arch}`;

function installedVersion(prefix, name) {
  try {
    return JSON.parse(readFileSync(join(ROOT, prefix, 'node_modules', name, 'package.json'), 'utf8')).version;
  } catch {
    return undefined;
  }
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', shell: process.platform === 'win32', ...opts });
  if (r.status !== 0) {
    console.error(`setup-test-deps: \`${cmd} ${args.join(' ')}\` failed (exit ${r.status ?? r.signal}); the tests that need it will fail`);
    process.exit(1);
  }
}

/** npm-installs `packages` ({name: version}) under `prefix` unless exactly those versions are there. */
function ensurePackages(prefix, packages, extraFlags = []) {
  const missing = Object.entries(packages).filter(([name, version]) => installedVersion(prefix, name) !== version);
  if (missing.length === 0) return;
  console.error(`setup-test-deps: installing ${missing.map(([n, v]) => `${n}@${v}`).join(', ')} into ${prefix}/`);
  const specs = Object.entries(packages).map(([name, version]) => `${name}@${version}`);
  // --ignore-scripts: the one install script among them, node-llama-cpp's, loads llama.cpp and builds
  // it where no prebuilt fits; the tests load the prebuilt and never build (npm 11 skips it anyway).
  run('npm', ['install', '--prefix', join(ROOT, prefix), '--no-save', '--no-package-lock', '--no-audit', '--no-fund', '--ignore-scripts', ...extraFlags, ...specs]);
}

/**
 * Unpacks @sparticuz/chromium's brotli archives with its own code (they land in os.tmpdir(), pointed at
 * a staging folder): the binary, SwiftShader beside it, the Amazon Linux NSS/expat libraries it links
 * (so no system browser or libnss3 is needed) and its fonts, with a fonts.conf naming where they are.
 */
function unpackChromium() {
  const stamp = join(CHROMIUM_DIR, 'VERSION');
  if (existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === SPARTICUZ_CHROMIUM) return;
  const staging = `${CHROMIUM_DIR}.tmp-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  const lambdafs = join(ROOT, '.browser', 'node_modules', '@sparticuz', 'chromium', 'build', 'esm', 'lambdafs.js');
  const bin = join(ROOT, '.browser', 'node_modules', '@sparticuz', 'chromium', 'bin');
  const script = `const { inflate } = await import(${JSON.stringify(pathToFileURL(lambdafs).href)});
for (const f of ['chromium.br', 'swiftshader.tar.br', 'al2023.tar.br', 'fonts.tar.br']) await inflate(${JSON.stringify(bin)} + '/' + f);`;
  mkdirSync(staging, { recursive: true });
  run(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, TMPDIR: staging } });
  writeFileSync(
    join(staging, 'fonts', 'fonts.conf'),
    [
      '<?xml version="1.0"?>',
      '<!DOCTYPE fontconfig SYSTEM "fonts.dtd">',
      '<fontconfig>',
      // the system's fonts where there are any (symbols such as ‖ and ᵢ), the package's Open Sans always
      '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>',
      `  <dir>${join(CHROMIUM_DIR, 'fonts', 'fonts')}</dir>`,
      `  <cachedir>${join(CHROMIUM_DIR, 'fonts-cache')}</cachedir>`,
      '</fontconfig>',
      '',
    ].join('\n'),
  );
  writeFileSync(join(staging, 'VERSION'), `${SPARTICUZ_CHROMIUM}\n`);
  rmSync(CHROMIUM_DIR, { recursive: true, force: true });
  renameSync(staging, CHROMIUM_DIR);
}

const prebuilt = LLAMA_PREBUILT[platform];
if (prebuilt) {
  ensurePackages('.llama', { 'node-llama-cpp': NODE_LLAMA_CPP, [`@node-llama-cpp/${prebuilt}`]: NODE_LLAMA_CPP }, ['--omit=optional']);
} else {
  console.error(`setup-test-deps: node-llama-cpp has no prebuilt for ${platform}; the llama.cpp tests will fail`);
}
if (platform === 'linux-x64') {
  ensurePackages('.browser', { 'playwright-core': PLAYWRIGHT_CORE, '@sparticuz/chromium': SPARTICUZ_CHROMIUM });
  unpackChromium();
} else {
  console.error(`setup-test-deps: @sparticuz/chromium ships Linux x64 only, not ${platform}; the HTML report's browser test will fail`);
}
