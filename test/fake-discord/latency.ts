export type LatencyOption =
  | { kind: 'none' }
  | { kind: 'fixed'; ms: number }
  | {
      kind: 'lognormal';
      medianGetMs: number;
      medianWriteMs: number;
      sigma: number;
      /** Longest sample in ms; default 20 × the median. Gives "median 40 ms, tail to 400 ms". */
      capMs?: number;
    };

/**
 * Milliseconds to hold a request on its way or an answer; reads and writes differ because Discord's
 * writes are slower (docs/discord-ratelimits.md §7.3).
 */
export type LatencySampler = (method: string) => number;

export function latencySampler(option: LatencyOption): LatencySampler {
  switch (option.kind) {
    case 'none':
      return () => 0;
    case 'fixed':
      return () => option.ms;
    case 'lognormal': {
      const { medianGetMs, medianWriteMs, sigma, capMs } = option;
      return (method) => {
        const median = method === 'GET' || method === 'HEAD' ? medianGetMs : medianWriteMs;
        // Capped so one freak sample cannot stall a benchmark's tail for minutes.
        return Math.min(median * Math.exp(sigma * gaussian()), capMs ?? median * 20);
      };
    }
  }
}

let spare: number | null = null;

function gaussian(): number {
  if (spare !== null) {
    const s = spare;
    spare = null;
    return s;
  }
  // Box–Muller; 1 - random() keeps the logarithm finite.
  const r = Math.sqrt(-2 * Math.log(1 - Math.random()));
  const theta = 2 * Math.PI * Math.random();
  spare = r * Math.sin(theta);
  return r * Math.cos(theta);
}
