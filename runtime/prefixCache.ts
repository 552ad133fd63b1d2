// A prefix cache for any memory (attention, recurrent, hybrid): prompts' prefixes kept on the GPU, in spare
// memory slots, so that a later prompt sharing one forks from it and prefills only the rest. A recurrent state
// cannot be cut back to a shorter prefix, so entries are taken exactly where a prefix may be reused: at prefill
// chunk boundaries (every `every` tokens) and where a sequence ended (its prompt and output: the next chat turn).
import type { HybridMemory } from '../caches/hybridMemory.ts';
import { isRing, ownKv } from '../caches/spec.ts';

export interface PrefixCacheOptions {
  /** Memory slots the cache owns (its fixed GPU budget: one slot per entry); no sequence may run in them. */
  slots: readonly number[];
  /** Insert the prompt's prefix at prefill chunk boundaries that are multiples of this many tokens (0: never). */
  every: number;
}

export interface PrefixCacheStats {
  /** Entries held now, and at most. */
  entries: number;
  maxEntries: number;
  lookups: number;
  hits: number;
  /** Prompt tokens taken from the cache instead of prefilled, and prompt tokens looked up in all. */
  hitTokens: number;
  lookupTokens: number;
  insertions: number;
  evictions: number;
  /** Device bytes the entries' slots hold (KV, states, snapshot planes), used now and in all (the budget). */
  bytes: number;
  budgetBytes: number;
}

interface Entry {
  slot: number;
  node: TrieNode;
  lastUsed: number;
}

/** A node of the prefix tree: the prefix is the ids on the path from the root. */
interface TrieNode {
  depth: number;
  parent: TrieNode | undefined;
  id: number;
  children: Map<number, TrieNode>;
  entry: Entry | undefined;
}

export interface PrefixHit {
  /** Prompt tokens the restored slot holds. */
  length: number;
}

export class PrefixCache {
  private readonly root: TrieNode = { depth: 0, parent: undefined, id: -1, children: new Map(), entry: undefined };
  private readonly free: number[];
  private readonly entries = new Set<Entry>();
  private clock = 0;
  /** A full-attention memory can cut an entry back to any shorter prefix; recurrent states and rings cannot. */
  readonly truncatable: boolean;
  readonly slotBytes: number;
  readonly every: number;
  private readonly counts = { lookups: 0, hits: 0, hitTokens: 0, lookupTokens: 0, insertions: 0, evictions: 0 };

  constructor(
    readonly memory: HybridMemory,
    options: PrefixCacheOptions,
  ) {
    this.free = [...options.slots];
    this.every = options.every;
    this.truncatable = memory.spec.every((l) => l.states.length === 0 && !(ownKv(l) && isRing(ownKv(l)!, memory.options)));
    const report = memory.report();
    this.slotBytes = (report.kvBytes + report.stateBytes + report.snapshotBytes) / memory.options.slots;
  }

  get maxEntries(): number {
    return this.free.length + this.entries.size;
  }

  stats(): PrefixCacheStats {
    return {
      entries: this.entries.size,
      maxEntries: this.maxEntries,
      ...this.counts,
      bytes: this.entries.size * this.slotBytes,
      budgetBytes: this.maxEntries * this.slotBytes,
    };
  }

  /**
   * Fills `slot` with the longest cached prefix of `ids` that leaves at least one token to prefill (the step
   * that samples the first token needs one); returns its length, 0 when nothing fits (the slot is untouched).
   */
  restore(slot: number, ids: readonly number[]): number {
    this.counts.lookups++;
    this.counts.lookupTokens += ids.length;
    const limit = ids.length - 1;
    let node = this.root;
    let best: TrieNode | undefined;
    while (node.depth < limit) {
      const next = node.children.get(ids[node.depth]!);
      if (!next) break;
      node = next;
      if (node.entry) best = node;
    }
    let source = best?.entry;
    let length = best?.depth ?? 0;
    if (this.truncatable && node.depth > length) {
      // any entry below the deepest matching node holds this prefix in its first node.depth positions
      const below = firstEntryUnder(node);
      if (below) {
        source = below;
        length = node.depth;
      }
    }
    if (!source || length === 0) return 0;
    source.lastUsed = ++this.clock;
    this.memory.fork(source.slot, slot);
    if (this.memory.lengths[slot]! > length) this.memory.rollback(slot, length);
    this.counts.hits++;
    this.counts.hitTokens += length;
    return length;
  }

  /**
   * Keeps what `slot` holds now, which must be exactly `ids` (checked by length), as an entry; the least
   * recently used entry makes room when the cache is full. A prefix already held is only marked used.
   */
  insert(slot: number, ids: readonly number[]): void {
    if (ids.length === 0 || this.maxEntries === 0) return;
    if (this.memory.lengths[slot] !== ids.length)
      throw new Error(`prefix cache: slot ${slot} holds ${this.memory.lengths[slot]} positions, not the ${ids.length} ids given`);
    let node = this.root;
    for (const id of ids) {
      let next = node.children.get(id);
      if (!next) {
        next = { depth: node.depth + 1, parent: node, id, children: new Map(), entry: undefined };
        node.children.set(id, next);
      }
      node = next;
    }
    if (node.entry) {
      node.entry.lastUsed = ++this.clock;
      return;
    }
    const cacheSlot = this.free.pop() ?? this.evictOldest();
    this.memory.fork(slot, cacheSlot);
    const entry: Entry = { slot: cacheSlot, node, lastUsed: ++this.clock };
    node.entry = entry;
    this.entries.add(entry);
    this.counts.insertions++;
  }

  /** Whether a prompt's prefill should insert its prefix after the chunk that ends at `length`. */
  wantsBoundary(length: number): boolean {
    return this.every > 0 && length % this.every === 0;
  }

  /** Forgets every entry (their slots stay allocated and become free). */
  clear(): void {
    for (const entry of [...this.entries]) this.drop(entry);
  }

  private evictOldest(): number {
    let oldest: Entry | undefined;
    for (const entry of this.entries) if (!oldest || entry.lastUsed < oldest.lastUsed) oldest = entry;
    this.drop(oldest!);
    this.counts.evictions++;
    return this.free.pop()!;
  }

  private drop(entry: Entry): void {
    this.entries.delete(entry);
    this.free.push(entry.slot);
    entry.node.entry = undefined;
    // prune the branch that now leads to no entry
    let node: TrieNode | undefined = entry.node;
    while (node?.parent && !node.entry && node.children.size === 0) {
      node.parent.children.delete(node.id);
      node = node.parent;
    }
  }
}

function firstEntryUnder(node: TrieNode): Entry | undefined {
  if (node.entry) return node.entry;
  for (const child of node.children.values()) {
    const found = firstEntryUnder(child);
    if (found) return found;
  }
  return undefined;
}
