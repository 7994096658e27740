/** Plain-text tables for the terminal, and number formatting shared by the table and the JSON. */

export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

/** Fixed decimals, or "n/a" for a missing value. */
export function fix(value: number | undefined, decimals = 1): string {
  return value === undefined || !Number.isFinite(value) ? 'n/a' : value.toFixed(decimals);
}

export function int(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? 'n/a' : Math.round(value).toLocaleString('en-US');
}

export function ratio(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? 'n/a' : `${value.toFixed(2)}×`;
}

export function mb(bytes: number | undefined): string {
  return bytes === undefined || !Number.isFinite(bytes) ? 'n/a' : `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** Rounds every number in a JSON-bound value so the results file stays small and diffs stay readable. */
export function rounded<T>(value: T): T {
  return JSON.parse(
    JSON.stringify(value, (_key, v: unknown) => {
      if (typeof v !== 'number' || Number.isInteger(v)) return v;
      if (!Number.isFinite(v)) return null;
      const abs = Math.abs(v);
      return Number(v.toFixed(abs >= 100 ? 0 : abs >= 1 ? 2 : 4));
    }),
  ) as T;
}
