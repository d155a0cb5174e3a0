/** A state in words with a glyph beside it: colour only repeats what the text says. */

export type Tone = "ok" | "bad" | "warn" | "busy" | "neutral";

const TONES: Record<string, Tone> = {
  Ready: "ok",
  Attached: "ok",
  Enforcing: "ok",
  Succeeded: "ok",
  Applied: "ok",
  Compatible: "ok",
  done: "ok",
  True: "ok",
  NotReady: "warn",
  Incompatible: "warn",
  Paused: "warn",
  Removing: "warn",
  Reconciling: "busy",
  Proposed: "busy",
  Pushed: "busy",
  Merged: "busy",
  Progressing: "busy",
  Baking: "busy",
  Pending: "busy",
  current: "busy",
  Failed: "bad",
  Conflict: "bad",
  LoadFailed: "bad",
  AttachFailed: "bad",
  SignatureRejected: "bad",
  Invalid: "bad",
  Rejected: "bad",
  RolledBack: "bad",
  Stalled: "bad",
  Killed: "bad",
  Missing: "bad",
  False: "bad",
};

const GLYPHS: Record<Tone, string> = {
  ok: "✓",
  bad: "✕",
  warn: "!",
  busy: "…",
  neutral: "•",
};

export function toneOf(state: string): Tone {
  return TONES[state] ?? "neutral";
}

export function Badge({ state, label }: { state: string; label?: string }) {
  const tone = toneOf(state);
  return (
    <span className={`badge badge-${tone}`} data-state={state}>
      <span aria-hidden="true" className="badge-glyph">
        {GLYPHS[tone]}
      </span>
      {label ?? state}
    </span>
  );
}
