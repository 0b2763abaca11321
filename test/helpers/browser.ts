/**
 * A real headless Chromium for tests of the HTML report: the Chromium of the npm package
 * @sparticuz/chromium, driven by playwright-core, both installed outside package.json into
 * .browser/ by scripts/setup-test-deps.mjs (`npm test` runs it first). It brings the libraries it
 * links beyond glibc and its own fonts, so nothing needs installing on the system. Missing pieces
 * make the test fail with the command to run, never skip it.
 */
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT } from './cli.js';

const CHROMIUM_DIR = join(REPO_ROOT, '.browser', 'chromium');
export const CHROMIUM_PATH = join(CHROMIUM_DIR, 'chromium');
export const PLAYWRIGHT_ENTRY = join(REPO_ROOT, '.browser', 'node_modules', 'playwright-core', 'index.mjs');
const SETUP_HINT = 'run `node scripts/setup-test-deps.mjs` (`npm test` runs it first), which installs playwright-core and @sparticuz/chromium into .browser/ (Linux x64 only)';
/** Its NSS/expat libraries (unpacked from the package's al2023 archive) and its fonts, not the system's. */
const CHROMIUM_ENV = {
  LD_LIBRARY_PATH: join(CHROMIUM_DIR, 'al2023', 'lib'),
  FONTCONFIG_PATH: join(CHROMIUM_DIR, 'fonts'),
};

/** Offline and quiet: no first-run UI, no background traffic, no GPU. */
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** The small part of playwright-core's API the tests use (it is imported by path, so without its types). */
export interface BrowserPage {
  on(event: 'console', cb: (msg: { type(): string; text(): string }) => void): void;
  on(event: 'pageerror', cb: (err: Error) => void): void;
  on(event: 'request', cb: (req: { url(): string }) => void): void;
  on(event: 'requestfailed', cb: (req: { url(): string }) => void): void;
  goto(url: string, opts?: { waitUntil?: 'load' | 'networkidle' }): Promise<unknown>;
  /**
   * Evaluates a JavaScript expression in the page. A string, not a function: tsx compiles test
   * functions with helpers (`__name`) that do not exist inside the page.
   */
  evaluate<T>(expression: string): Promise<T>;
  screenshot(opts: { path: string; fullPage?: boolean }): Promise<unknown>;
  setViewportSize(size: { width: number; height: number }): Promise<void>;
}

export interface Browser {
  newPage(): Promise<BrowserPage>;
  close(): Promise<void>;
}

interface PlaywrightCore {
  chromium: {
    launchPersistentContext(
      userDataDir: string,
      opts: { executablePath: string; args: string[]; headless: boolean; env: Record<string, string | undefined> },
    ): Promise<Browser>;
  };
}

/** Launches Chromium with a fresh profile; close() also removes the profile. */
export async function launchChromium(): Promise<Browser> {
  await access(CHROMIUM_PATH).catch(() => {
    throw new Error(`${CHROMIUM_PATH} not found: ${SETUP_HINT}`);
  });
  await access(PLAYWRIGHT_ENTRY).catch(() => {
    throw new Error(`playwright-core not found at ${PLAYWRIGHT_ENTRY}: ${SETUP_HINT}`);
  });
  const pw = (await import(pathToFileURL(PLAYWRIGHT_ENTRY).href)) as PlaywrightCore;
  const profile = await mkdtemp(join(tmpdir(), 'lf-chromium-'));
  try {
    const context = await pw.chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM_PATH,
      args: CHROMIUM_ARGS,
      headless: true,
      env: { ...process.env, ...CHROMIUM_ENV },
    });
    return {
      newPage: () => context.newPage(),
      async close() {
        await context.close();
        await rm(profile, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await rm(profile, { recursive: true, force: true });
    throw err;
  }
}
