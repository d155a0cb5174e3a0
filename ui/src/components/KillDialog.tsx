import { useRef, useState } from "react";
import { ErrorNote } from "./feedback";

/** The kill switch: detaches the program from every node at once, so the name must be
 * typed to confirm (a native modal dialog: focus stays inside, Escape cancels). */
export function KillDialog({ name, onKill, error, busy }: { name: string; onKill: () => void; error: unknown; busy: boolean }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [typed, setTyped] = useState("");
  return (
    <>
      <button type="button" className="danger" onClick={() => dialog.current?.showModal()}>
        Kill switch…
      </button>
      <dialog ref={dialog} aria-labelledby="kill-title" onClose={() => setTyped("")}>
        <form
          method="dialog"
          onSubmit={(event) => {
            if (typed !== name) {
              event.preventDefault();
              return;
            }
            onKill();
          }}
        >
          <h2 id="kill-title">Kill {name} everywhere?</h2>
          <p>
            Every node detaches it at once, with no rollout. Putting its spec again (from Git or the API) brings it back.
          </p>
          <label htmlFor="kill-confirm">
            Type <code>{name}</code> to confirm
          </label>
          <input id="kill-confirm" autoComplete="off" value={typed} onChange={(event) => setTyped(event.target.value)} />
          <div className="actions">
            <button type="submit" className="danger" disabled={typed !== name || busy}>
              Kill {name}
            </button>
            <button type="button" onClick={() => dialog.current?.close()}>
              Cancel
            </button>
          </div>
        </form>
      </dialog>
      {Boolean(error) && <ErrorNote error={error} />}
    </>
  );
}
