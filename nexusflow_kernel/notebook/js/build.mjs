// Build the inline canvas into ../static/widget.js + widget.css: one self-contained ES module
// (React, React DOM and @xyflow/react included) that anywidget sends over the comm.
import * as esbuild from 'esbuild';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const options = {
  entryPoints: { widget: path.join(here, 'src', 'widget.jsx') },
  outdir: path.join(here, '..', 'static'),
  bundle: true,
  format: 'esm',
  minify: true,
  target: ['es2020'],
  jsx: 'automatic',
  loader: { '.js': 'jsx' },
  define: { 'process.env.NODE_ENV': '"production"' },
  legalComments: 'none',
  logLevel: 'info'
};

if (process.argv.includes('--watch')) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
} else {
  await esbuild.build(options);
}
