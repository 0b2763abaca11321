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
}

export type OnProgress = (event: ProgressEvent) => void;
