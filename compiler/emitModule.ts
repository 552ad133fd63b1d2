// Writes an AotModel as a TypeScript module with ts-morph: typed declarations, one WGSL template literal per
// distinct kernel (shared by the programs and variants that use it), and per program its buffer plan and dispatch
// list as object literals, one line each, so the module reads like printProgram and diffs well. `.js`/`.mjs`
// outputs get the same module compiled to JavaScript (ts-morph's emit), for pages that load it without a build step.
// ts-morph is an optional peer dependency (it brings TypeScript, ~30 MB): only writing a module needs it.
import type { VariableStatementStructure } from 'ts-morph';
import { StrataUserError } from '../base/errors.ts';
import type { AotModel, AotVariant } from './aotModule.ts';
import type { KernelSpec, Program } from './program.ts';

/** A package that an optional feature needs is not installed; the message names it and the command that installs it. */
export class MissingDependencyError extends StrataUserError {
  override name = 'MissingDependencyError';
}

// a variable, so that bundlers leave the import to run time (the browser bundle has no use for ts-morph)
const TS_MORPH = 'ts-morph';

/** ts-morph, or a MissingDependencyError saying how to install it. */
export async function loadTsMorph(): Promise<typeof import('ts-morph')> {
  try {
    return (await import(/* @vite-ignore */ TS_MORPH)) as typeof import('ts-morph');
  } catch (error) {
    const { code, message } = error as { code?: string; message?: string };
    if ((code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && message?.includes(`'${TS_MORPH}'`))
      throw new MissingDependencyError('writing an AOT module (strata compile) needs ts-morph, an optional peer dependency of strata that is not installed: run `npm install ts-morph`');
    throw error;
  }
}

/** A value as a JS literal: identifier keys unquoted, strings single-quoted, no line breaks. */
function literal(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (value === null || typeof value !== 'object') return typeof value === 'string' ? `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\n/g, '\\n')}'` : JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(literal).join(', ')}]`;
  const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
  if (!entries.length) return '{}';
  return `{ ${entries.map(([k, v]) => `${/^[A-Za-z_$][\w$]*$/.test(k) ? k : literal(k)}: ${literal(v)}`).join(', ')} }`;
}

/** A template literal holding `text` exactly. */
const templateLiteral = (text: string) => `/* wgsl */ \`\n${text.replace(/\\/g, '\\\\').replace(/`/g, '\\`').replace(/\$\{/g, '\\${')}\``;

/** An identifier from a program key such as `gen:decode:1:greedy`. */
const programIdent = (key: string) => key.replace(/^gen:/, '').replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ''));

/** An object literal of `lines` ("key: value"), one a line. */
const block = (lines: string[], indent = '  ') => `{\n${lines.map((l) => `${indent}${l},`).join('\n')}\n${indent.slice(2)}}`;
const list = (items: string[], indent: string) => `[\n${items.map((i) => `${indent}  ${i},`).join('\n')}\n${indent}]`;

export interface EmitOptions {
  /** Where the model was compiled from, for the header comment. */
  from: string;
  /** Module specifier the types are imported from. Default 'strata'. */
  typesFrom?: string;
  /** 'ts' (default) or 'js'. */
  language?: 'ts' | 'js';
}

export async function emitAotModule(model: AotModel, options: EmitOptions): Promise<string> {
  const { IndentationText, Project, QuoteKind, StructureKind, VariableDeclarationKind, ts } = await loadTsMorph();
  const project = new Project({ useInMemoryFileSystem: true, manipulationSettings: { indentationText: IndentationText.TwoSpaces, quoteKind: QuoteKind.Single } });
  const file = project.createSourceFile('model.strata.ts', '');
  // every program of every variant, with the constant that names it (variant-suffixed when there are several)
  const programs = model.variants.flatMap((variant, v) =>
    Object.entries(variant.programs).map(([key, program]) => ({ key, program, index: v, variant: variant.target, ident: programIdent(key) + (model.variants.length > 1 ? `V${v}` : '') })),
  );
  const kernelCount = (variant: AotVariant) => Object.values(variant.programs).reduce((n, p) => n + p.kernels.length, 0);
  const constant = (name: string, initializer: string, docs: string[], type?: string): VariableStatementStructure => ({
    kind: StructureKind.VariableStatement,
    declarationKind: VariableDeclarationKind.Const,
    docs,
    declarations: [{ name, initializer, ...(type ? { type } : {}) }],
  });

  // one constant per distinct WGSL text
  const wgslNames = new Map<string, string>();
  const kernels: VariableStatementStructure[] = [];
  for (const { key, program, variant } of programs)
    for (const kernel of program.kernels) {
      if (wgslNames.has(kernel.wgsl)) continue;
      const name = `wgsl${wgslNames.size}_${kernel.name.replace(/\W+/g, '_')}`;
      wgslNames.set(kernel.wgsl, name);
      kernels.push(constant(name, templateLiteral(kernel.wgsl), [`${kernel.templates.join(' + ')}: ${kernel.ops || 'copy'} (first used by ${key}, ${variant})`]));
    }

  const kernelLine = (k: KernelSpec) => {
    const { wgsl, ...rest } = k;
    return literal(rest).replace(/^\{ /, `{ wgsl: ${wgslNames.get(wgsl)}, `);
  };
  const programStatements = programs.map(({ key, program, variant, ident }: { key: string; program: Program; variant: string; ident: string }) =>
    constant(
      ident,
      block([
        `bucket: ${literal(program.bucket)}`,
        `inputs: ${literal(program.inputs)}`,
        `outputs: ${literal(program.outputs)}`,
        `weights: ${literal(program.weights)}`,
        `states: ${literal(program.states)}`,
        `buffers: ${list(program.buffers.map((b) => literal(b)), '  ')} satisfies BufferSpec[]`,
        `kernels: ${list(program.kernels.map(kernelLine), '  ')} satisfies KernelSpec[]`,
      ]),
      [`Program ${key} for ${variant}, bucket ${literal(program.bucket)}: ${program.buffers.length} buffers, ${program.kernels.length} dispatches.`],
    ),
  );
  const variantLiteral = (variant: AotVariant, index: number) =>
    block(
      [
        `target: ${literal(variant.target)}`,
        `limits: ${literal(variant.limits)}`,
        `programs: ${block(programs.filter((p) => p.index === index).map((p) => `${literal(p.key)}: ${p.ident}`), '        ')}`,
      ],
      '      ',
    );

  file.addStatements([
    `// Generated by \`strata compile\` from ${options.from} (${model.family}): ${model.variants.length} variant(s), ${wgslNames.size} distinct kernels.`,
    '// Session.load(modelFolderOrUrl, { aot: model }) runs the first variant the device can run, as it is: no tracing, no compiling.',
    `// Compiled for slots=${model.session.slots} capacity=${model.session.capacity} prefill chunks=${model.session.prefillChunks.join(',')}.`,
    ...model.variants.map((v) => `// ${v.target}: ${Object.keys(v.programs).length} programs, ${kernelCount(v)} dispatches, limits ${literal(v.limits)}.`),
    { kind: StructureKind.ImportDeclaration, isTypeOnly: true, moduleSpecifier: options.typesFrom ?? 'strata', namedImports: ['AotModel', 'BufferSpec', 'KernelSpec', 'MemorySpec'] },
    '',
    '// Kernels: each distinct WGSL text once.',
    ...kernels,
    '',
    { ...constant('memory', list(model.memory.map((l) => literal(l)), ''), ['What each layer keeps per slot: KV (a ring when windowed, none when shared), recurrent states.'], 'MemorySpec'), isExported: true },
    '',
    ...programStatements,
    '',
    constant(
      'model',
      block([
        `format: ${literal(model.format)}`,
        `family: ${literal(model.family)}`,
        `modelFingerprint: ${literal(model.modelFingerprint)}`,
        `session: ${literal(model.session)}`,
        'memory',
        `variants: ${list(model.variants.map(variantLiteral), '  ')}`,
      ]),
      [],
      'AotModel',
    ),
    'export default model;',
  ]);
  const text = file.getFullText();
  if (options.language !== 'js') return text;
  // types only leave the module: transpiling alone is enough (no program to type-check)
  return ts.transpileModule(text, { compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext } }).outputText;
}
