// Builds the SMART app into app/dist/: bundles src/*.js (fhirclient, d3) with esbuild and copies
// public/ (HTML, CSS). No CDN: everything the page loads comes from the service's own origin.
// Run by `npm run build` (make app, scripts/setup-test-env.sh).
import { build } from 'esbuild';
import { cpSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist');
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
await build({
  entryPoints: { launch: join(root, 'src/launch.js'), timeline: join(root, 'src/timeline.js') },
  bundle: true,
  minify: true,
  sourcemap: false,
  format: 'iife',
  platform: 'browser',
  target: ['es2020'],
  outdir: dist,
  legalComments: 'linked',
  logLevel: 'warning',
});
cpSync(join(root, 'public'), dist, { recursive: true });
process.stdout.write(`built ${dist}\n`);
