// The bundled tiny-granite-code model and its reference greedy generations (reference.json), as the end-to-end
// tests read them.
import * as fs from 'node:fs';
import * as path from 'node:path';

export const TINY_GRANITE = path.resolve(import.meta.dirname, '../../assets/models/tiny-granite-code');
export interface Greedy {
  prompt: string;
  prompt_ids: number[];
  output_ids: number[];
}
export const reference: { greedy: Greedy[] } = JSON.parse(fs.readFileSync(path.join(TINY_GRANITE, 'reference.json'), 'utf8'));
/** The ids a reference generation added to its prompt. */
export const generated = (g: Greedy) => g.output_ids.slice(g.prompt_ids.length);
