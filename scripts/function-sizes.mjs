#!/usr/bin/env node
// Lists the longest functions (methods, arrows, class bodies excluded) and the longest modules in
// src/, for keeping the code in pieces that fit on a screen. Usage: node scripts/function-sizes.mjs [N]
// Needs typescript (a dev dependency).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const ts = createRequire(import.meta.url)('typescript');
const top = Number(process.argv[2] ?? 10);

function* files(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* files(path);
    else if (name.endsWith('.ts')) yield path;
  }
}

const functions = [];
const modules = [];
for (const path of files(join(root, 'src'))) {
  const text = readFileSync(path, 'utf8');
  const file = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true);
  modules.push({ where: relative(root, path), lines: text.split('\n').length - 1 });
  const visit = (node) => {
    if (ts.isFunctionLike(node) && node.body) {
      const start = file.getLineAndCharacterOfPosition(node.getStart()).line;
      const end = file.getLineAndCharacterOfPosition(node.end).line;
      const name = node.name?.getText() ?? (ts.isVariableDeclaration(node.parent) || ts.isPropertyAssignment(node.parent) || ts.isPropertyDeclaration(node.parent) ? node.parent.name.getText() : '(anonymous)');
      functions.push({ where: `${relative(root, path)}:${start + 1}`, name, lines: end - start + 1 });
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
}
functions.sort((a, b) => b.lines - a.lines);
modules.sort((a, b) => b.lines - a.lines);
console.log('longest functions:');
for (const f of functions.slice(0, top)) console.log(`  ${String(f.lines).padStart(4)}  ${f.name}  ${f.where}`);
console.log('longest modules:');
for (const m of modules.slice(0, top)) console.log(`  ${String(m.lines).padStart(4)}  ${m.where}`);
