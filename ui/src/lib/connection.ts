/**
 * Whether the API answers, and when it last did: what the "updated N s ago" line and
 * the unreachable banner show. A tiny store React reads with useSyncExternalStore.
 */
export interface ConnectionState {
  reachable: boolean;
  lastAnswer: number | null;
  signedOut: boolean;
}

type Listener = () => void;

let state: ConnectionState = { reachable: true, lastAnswer: null, signedOut: false };
const listeners = new Set<Listener>();

function set(next: Partial<ConnectionState>): void {
  const merged = { ...state, ...next };
  if (
    merged.reachable === state.reachable &&
    merged.lastAnswer === state.lastAnswer &&
    merged.signedOut === state.signedOut
  ) {
    return;
  }
  state = merged;
  for (const listener of listeners) listener();
}

export const connection = {
  get: (): ConnectionState => state,
  subscribe(listener: Listener): () => void {
    listeners.add(listener);
    return () => listeners.delete(listener);
  },
  answered(now: number = Date.now()): void {
    set({ reachable: true, lastAnswer: now, signedOut: false });
  },
  failed(): void {
    set({ reachable: false });
  },
  signedOut(): void {
    set({ signedOut: true });
  },
  reset(): void {
    set({ reachable: true, lastAnswer: null, signedOut: false });
  },
};
