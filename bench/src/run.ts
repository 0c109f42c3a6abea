/** Lists the benchmarks; each is its own script: `node bench/dist/<name>.js`. */
import { readdirSync } from 'node:fs';
const names = readdirSync(import.meta.dirname).filter((f) => f.endsWith('.js') && f !== 'run.js');
console.log('benchmarks (run one with node bench/dist/<name>.js):');
for (const n of names) console.log('  ' + n.replace(/\.js$/, ''));
