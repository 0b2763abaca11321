/**
 * The one progress event every library entry point reports through its `onProgress` option, so a
 * caller draws one kind of bar for any command.
 */
export interface ProgressEvent {
  /** which pass of a command with several (absent for commands with one) */
  phase?: string;
  /** 0-based index of the item just finished; `index + 1` items are done */
  index: number;
  /** items in this phase */
  total: number;
  /** the tensor or module just finished */
  name: string;
  /** phases that move bytes (Hub downloads): the current item's bytes so far and size, and the whole phase's */
  bytes?: { item: number; itemTotal: number; done: number; total: number };
  /** an update inside an item not finished yet (only `bytes` moved): item counters skip it */
  partial?: boolean;
}

export type OnProgress = (event: ProgressEvent) => void;
