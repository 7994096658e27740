import { MemoryStore } from '../../src/limiter/memory.js';
import { storeContract } from './store-contract.js';

storeContract('memory', async (options) => new MemoryStore(options));
