// The layering dsl/compiler/caches/runtime/models as a checked fact: every import (type-only ones too, and
// re-exports) between these folders is an edge, and a cycle among the folders fails this file.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const FOLDERS = ['dsl', 'compiler', 'caches', 'runtime', 'models'] as const;

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return sourceFiles(full);
    return name.endsWith('.ts') ? [full] : [];
  });
}

/** The top-level folder a file lives in, relative to the repository root. */
const folderOf = (file: string) => path.relative(ROOT, file).split(path.sep)[0]!;

/** Folder -> folder edges, each with one file import that makes it (for the failure message). */
export function folderEdges(files: string[]): Map<string, Map<string, string>> {
  const edges = new Map<string, Map<string, string>>();
  for (const file of files) {
    const from = folderOf(file);
    for (const ref of ts.preProcessFile(readFileSync(file, 'utf8'), true, true).importedFiles) {
      if (!ref.fileName.startsWith('.')) continue;
      const to = folderOf(path.resolve(path.dirname(file), ref.fileName));
      if (to === from || !(FOLDERS as readonly string[]).includes(to)) continue;
      if (!edges.has(from)) edges.set(from, new Map());
      if (!edges.get(from)!.has(to)) edges.get(from)!.set(to, `${path.relative(ROOT, file)} imports ${ref.fileName}`);
    }
  }
  return edges;
}

/** Every elementary cycle's folders, found by depth-first search from each folder (the graph has 5 nodes). */
export function folderCycles(edges: Map<string, Map<string, string>>): string[][] {
  const cycles = new Map<string, string[]>();
  const walk = (start: string, at: string, trail: string[]) => {
    for (const next of edges.get(at)?.keys() ?? []) {
      if (next === start) {
        const rotated = [...trail];
        const first = rotated.indexOf([...trail].sort()[0]!);
        const key = [...rotated.slice(first), ...rotated.slice(0, first)];
        cycles.set(key.join(' -> '), key);
      } else if (!trail.includes(next)) walk(start, next, [...trail, next]);
    }
  };
  for (const folder of edges.keys()) walk(folder, folder, [folder]);
  return [...cycles.values()];
}

describe('folder layering', () => {
  it('the detector finds a cycle through three folders', () => {
    const edges = new Map([
      ['caches', new Map([['runtime', 'a']])],
      ['runtime', new Map([['models', 'b']])],
      ['models', new Map([['caches', 'c']])],
      ['dsl', new Map([['compiler', 'd']])],
    ]);
    expect(folderCycles(edges)).toEqual([['caches', 'runtime', 'models']]);
  });

  it('no folder-level import cycle among dsl, compiler, caches, runtime, models', () => {
    const edges = folderEdges(FOLDERS.flatMap((f) => sourceFiles(path.join(ROOT, f))));
    const described = folderCycles(edges).map((cycle) =>
      cycle.map((from, i) => `${from} -> ${cycle[(i + 1) % cycle.length]} (${edges.get(from)!.get(cycle[(i + 1) % cycle.length]!)})`).join('; '),
    );
    expect(described).toEqual([]);
  });
});
