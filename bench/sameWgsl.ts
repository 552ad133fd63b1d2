// Compares two schedule dumps (bench/scheduleDump.ts) as WGSL expression trees: every expression is parsed with
// WGSL's precedence and printed fully parenthesised, so a change that only adds or drops redundant parentheses
// (a template's text rebuilt as kernel expressions) or writes an abstract integer as an i32 literal compares equal;
// any other difference is listed.
// npx tsx bench/sameWgsl.ts <beforeDir> <afterDir>
import { existsSync, readFileSync, readdirSync } from 'node:fs';

const KEYWORDS = new Set(['let', 'var', 'const', 'for', 'if', 'else', 'while', 'loop', 'return', 'break', 'continue', 'fn', 'struct', 'override', 'switch', 'case', 'default', 'enable', 'requires', 'diagnostic', 'continuing']);
const GENERIC = /^(bitcast|vec[234]|array|ptr|atomic|mat[234]x[234])$/;
const BINARY: Record<string, number> = {
  '||': 1, '&&': 2, '|': 3, '^': 4, '&': 5, '==': 6, '!=': 6, '<': 7, '>': 7, '<=': 7, '>=': 7, '<<': 8, '>>': 8,
  '+': 9, '-': 9, '*': 10, '/': 10, '%': 10,
};

function tokens(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < line.length) {
    const rest = line.slice(i);
    const space = /^\s+/.exec(rest);
    if (space) { i += space[0].length; continue; }
    const word = /^(@B\d+@|[A-Za-z_]\w*)/.exec(rest);
    if (word) {
      let t = word[0];
      i += t.length;
      // a generic type's arguments belong to its name: `bitcast<f32>`, `array<vec4<u32>, 8>`
      if (GENERIC.test(t) && line[i] === '<') {
        let depth = 0;
        const start = i;
        do { depth += line[i] === '<' ? 1 : line[i] === '>' ? -1 : 0; i++; } while (depth > 0 && i < line.length);
        t += line.slice(start, i).replace(/\s+/g, '');
      }
      out.push(t);
      continue;
    }
    const num = /^(0x[0-9a-fA-F]+[iu]?|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[iufh]?)/.exec(rest);
    // an i32 literal is the abstract integer it replaces where it meets an i32 (`max(pos, 0i)`)
    if (num) { out.push(num[0].replace(/^(\d+)i$/, '$1')); i += num[0].length; continue; }
    const op = /^(<<=|>>=|<<|>>|<=|>=|==|!=|&&|\|\||\+=|-=|\*=|\/=|\+\+|--|->|.)/.exec(rest)!;
    out.push(op[0]);
    i += op[0].length;
  }
  return out;
}

class Fail extends Error {}

/** A line's text with every expression in it fully parenthesised (statement tokens as they are). */
export function canonical(line: string): string {
  const ts = tokens(line);
  let p = 0;
  const peek = () => ts[p];
  const startsExpr = (t: string | undefined) => t !== undefined && !KEYWORDS.has(t) && (/^[\w@.]/.test(t) || t === '(' || t === '-' || t === '!' || t === '~');
  function primary(): string {
    const t = ts[p++];
    if (t === undefined) throw new Fail();
    let x: string;
    if (t === '(') {
      x = expr(0);
      if (ts[p++] !== ')') throw new Fail();
    } else if (t === '-' || t === '!' || t === '~') x = `(${t}${primary()})`;
    else if (KEYWORDS.has(t) || !/^[\w@.]/.test(t)) throw new Fail();
    else x = t;
    for (;;) {
      if (peek() === '(') {
        p++;
        const args: string[] = [];
        while (peek() !== ')') {
          args.push(expr(0));
          if (peek() === ',') p++;
          else if (peek() !== ')') throw new Fail();
        }
        p++;
        x = `${x}(${args.join(', ')})`;
      } else if (peek() === '[') {
        p++;
        const i = expr(0);
        if (ts[p++] !== ']') throw new Fail();
        x = `${x}[${i}]`;
      } else if (peek() === '.') {
        p++;
        x = `${x}.${ts[p++]}`;
      } else return x;
    }
  }
  function expr(min: number): string {
    let a = primary();
    for (;;) {
      const op = peek();
      const prec = op === undefined ? undefined : BINARY[op];
      if (prec === undefined || prec <= min) return a;
      p++;
      a = `(${a} ${op} ${expr(prec)})`;
    }
  }
  const out: string[] = [];
  while (p < ts.length) {
    const at = p;
    if (startsExpr(peek())) {
      try {
        out.push(expr(0));
        continue;
      } catch (e) {
        if (!(e instanceof Fail)) throw e;
        p = at;
      }
    }
    out.push(ts[p++]!);
  }
  return out.join(' ');
}

function compare(before: string, after: string): string[] {
  const [a, b] = [before.split('\n'), after.split('\n')];
  const diffs: string[] = [];
  if (a.length !== b.length) diffs.push(`line counts ${a.length} vs ${b.length}`);
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] === b[i] || canonical(a[i]!) === canonical(b[i]!)) continue;
    diffs.push(`${i + 1}:\n- ${a[i]}\n+ ${b[i]}`);
  }
  return diffs;
}

if (process.argv[1]?.endsWith('sameWgsl.ts')) {
  const [before, after] = process.argv.slice(2) as [string, string];
  let bad = 0;
  let paren = 0;
  const files = readdirSync(before).filter((f) => existsSync(`${after}/${f}`));
  for (const file of files.sort()) {
    const [x, y] = [readFileSync(`${before}/${file}`, 'utf8'), readFileSync(`${after}/${file}`, 'utf8')];
    if (x === y) continue;
    const diffs = compare(x, y);
    if (diffs.length === 0) { paren++; continue; }
    bad++;
    console.log(`== ${file}: ${diffs.length} lines differ\n${diffs.slice(0, 5).join('\n')}`);
  }
  console.log(`${files.length} files in both: ${paren} differ only in parentheses, ${bad} otherwise`);
  process.exitCode = bad ? 1 : 0;
}
