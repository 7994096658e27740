// tsc does not copy non-TypeScript files; the Redis store loads its Lua scripts from beside itself.
import { cpSync, existsSync } from 'node:fs';

if (existsSync('src/limiter/lua')) cpSync('src/limiter/lua', 'dist/limiter/lua', { recursive: true });
