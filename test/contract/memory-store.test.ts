import { MemoryStore } from '../../src/limiter/memory.js';
import { storeContract } from './store-contract.js';

// The memory store decides with the clock it is given: the suite's sleeps move that clock instead of waiting.
let now = 0;
storeContract(
  'memory',
  async (options) => new MemoryStore(options, () => now),
  async (ms) => {
    now += ms;
  },
);
