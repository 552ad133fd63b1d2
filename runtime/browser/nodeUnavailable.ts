// Stands in for node:fs, node:path, node:os, node:child_process and node:url in the browser bundle: the modules that
// use them (files on disk, the adapter probe) are reached only through Node-only calls, and such a call in a page
// gets one typed line instead of a bundling failure or an undefined function.
import { StrataUserError } from '../../base/errors.ts';

export class NodeOnlyError extends StrataUserError {
  override name = 'NodeOnlyError';
}

const refuse = (what: string) => (): never => {
  throw new NodeOnlyError(`${what} needs Node.js (files on disk); in a browser load models from a URL (FetchSource) or picked files (FileListSource, DirectoryHandleSource)`);
};

/** A module object whose every function refuses; plain values (constants, sep) are empty. */
export function unavailableModule(name: string): Record<string, unknown> {
  return new Proxy({}, { get: (_target, key) => (key === 'constants' ? {} : key === 'sep' ? '/' : refuse(`${name}.${String(key)}`)) });
}
