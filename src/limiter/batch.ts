/**
 * Gathers the calls made within one turn of the event loop, per group (an identity: its keys share one Redis
 * Cluster slot), and runs each group as one call. Under load the answers of many requests arrive in the same
 * turn, so a hot token costs one script run per batch instead of one per request: fewer commands for Redis to
 * parse and run, fewer replies and promises for Node. At low load a batch is one call, sent after the current
 * I/O callbacks (setImmediate): well under a millisecond later.
 */
export class Batcher<T, R> {
  private readonly groups = new Map<string, { items: T[]; settle: Settle<R>[] }>();
  private scheduled = false;

  constructor(
    /**
     * Runs one group's batch; resolves with one result per item, in order. `alone`: it is sent by itself (the turn's
     * only group, or a batch sent early because it is full), not together with other groups' batches.
     */
    private readonly run: (group: string, items: readonly T[], alone: boolean) => Promise<readonly R[]>,
    /** Bounds one script run, so a huge batch does not keep Redis from everyone else. */
    private readonly maxBatch = 64,
  ) {}

  add(group: string, item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      let pending = this.groups.get(group);
      if (!pending) {
        pending = { items: [], settle: [] };
        this.groups.set(group, pending);
      }
      pending.items.push(item);
      pending.settle.push({ resolve, reject });
      if (pending.items.length >= this.maxBatch) {
        this.groups.delete(group);
        this.send(group, pending.items, pending.settle, true);
      } else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => void this.flush());
      }
    });
  }

  /** Sends what is gathered now; resolves when those calls have settled, whichever way. */
  flush(): Promise<void> {
    this.scheduled = false;
    const sent: Promise<void>[] = [];
    const alone = this.groups.size === 1;
    for (const [group, pending] of this.groups)
      sent.push(this.send(group, pending.items, pending.settle, alone));
    this.groups.clear();
    return Promise.all(sent).then(() => undefined);
  }

  private send(group: string, items: T[], settle: Settle<R>[], alone: boolean): Promise<void> {
    return this.run(group, items, alone).then(
      (results) => {
        for (let i = 0; i < settle.length; i++) {
          const result = results[i];
          if (result === undefined) settle[i]!.reject(new Error('a batched call got no result'));
          else settle[i]!.resolve(result);
        }
      },
      (error: unknown) => {
        for (const s of settle) s.reject(error);
      },
    );
  }
}

interface Settle<R> {
  resolve(value: R): void;
  reject(error: unknown): void;
}
