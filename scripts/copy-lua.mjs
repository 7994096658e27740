// tsc does not copy non-TypeScript files: the Redis store loads its Lua scripts from beside itself, and the
// admin port serves the inspector's page from beside src/routes/inspector.js's sibling folder.
import { cpSync, existsSync, mkdirSync } from 'node:fs';

if (existsSync('src/limiter/lua')) cpSync('src/limiter/lua', 'dist/limiter/lua', { recursive: true });
if (existsSync('src/inspect/page.html')) {
  mkdirSync('dist/inspect', { recursive: true });
  cpSync('src/inspect/page.html', 'dist/inspect/page.html');
}
