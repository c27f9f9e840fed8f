// The package's version, read once from package.json (beside dist/ and src/ alike), for
// `keygate --version`, the start-up log line and keygate_build_info.

import { readFileSync } from 'node:fs';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
