import { readFileSync } from 'node:fs';

/** The management API's version: the path prefix of every endpoint. */
export const API_VERSION = 'v1';

/** tern's version, from package.json (two levels above src/ in the source tree and in dist/). */
export const TERN_VERSION: string = (() => {
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'tern' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // try the next place
    }
  }
  return '0.0.0';
})();
