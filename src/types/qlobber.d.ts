/** The part of qlobber (no published types) the router uses. */
declare module 'qlobber' {
  /** Options of a Qlobber trie. */
  export interface QlobberOptions {
    separator?: string;
    wildcard_one?: string;
    wildcard_some?: string;
    match_empty_levels?: boolean;
  }
  /** A topic trie mapping filters to values. */
  export class Qlobber {
    constructor(options?: QlobberOptions);
    add(topic: string, value: unknown): this;
    remove(topic: string, value?: unknown): this;
    match(topic: string): unknown[];
  }
}
