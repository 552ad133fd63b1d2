// The browser's meaning of a model location given as a string: a URL (relative to the page), read with fetch and
// HTTP range requests. Swapped in for defaultSource.ts by the browser bundle (scripts/build.mjs).
import type { ModelSource } from './modelSource.ts';
import { FetchSource } from './fetchSource.ts';

export function sourceFor(location: string): ModelSource {
  return new FetchSource(location);
}
