// What a model location given as a string means: in Node, a folder on disk. The browser bundle replaces this module
// with defaultSource.browser.ts (a URL read with fetch), so shared loaders never import node:fs themselves.
import type { ModelSource } from './modelSource.ts';
import { NodeFileSource } from './nodeFileSource.ts';

export function sourceFor(location: string): ModelSource {
  return new NodeFileSource(location);
}
