/** "Propose…": the draft as one commit on a new branch of the GitSource's repository,
 * written by the operator. The API previews what would be sent (source, file, its flow
 * tests beside it, the base revision, the default branch, a message the simulator wrote);
 * a person may change the branch, the path and the message. Once proposed, the card
 * follows it; on a conflict nothing was pushed and the three texts are shown. */
import { useRef, useState } from "react";
import { useProposal } from "../api/queries";
import { ErrorNote, Loading } from "../components/feedback";
import { ProposalCard } from "../components/ProposalCard";
import { usePreview, usePropose, type GitPlace, type SourceRef } from "./proposing";
import type { Protocol } from "./queries";
import { ThreeWay } from "./ThreeWay";

interface Props {
  text: string;
  flows: string;
  place: GitPlace | null;
  protocol: Protocol;
  port: number;
  /** Why not now (problems in the draft), or null. */
  blocked: string | null;
}

function key(source: SourceRef): string {
  return `${source.namespace}/${source.name}`;
}

function short(revision: string | null | undefined): string {
  return revision ? revision.replace(/^.*@sha1:/, "").slice(0, 7) : "none (a new file)";
}

export function ProposeDialog({ text, flows, place, protocol, port, blocked }: Props) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [open, setOpen] = useState(false);
  const [source, setSource] = useState<SourceRef | null>(null);
  const [path, setPath] = useState<string | null>(null);
  const [branch, setBranch] = useState("");
  const [message, setMessage] = useState<string | null>(null);
  const [proposed, setProposed] = useState<number | null>(null);
  const preview = usePreview({ text, flows, place, source, path, protocol, port }, open && proposed === null);
  const propose = usePropose();
  const card = useProposal(proposed);
  const found = preview.data;
  const shownMessage = message ?? found?.message ?? "";
  const ready = found && !preview.isPlaceholderData && !preview.isFetching;

  const close = () => dialog.current?.close();
  return (
    <>
      <button
        type="button"
        className="primary"
        disabled={blocked !== null}
        title={blocked ?? undefined}
        onClick={() => {
          setOpen(true);
          dialog.current?.showModal();
        }}
      >
        Propose…
      </button>
      {blocked && <span className="muted small">{blocked}</span>}
      <dialog
        ref={dialog}
        aria-labelledby="propose-title"
        className="propose-dialog"
        onClose={() => {
          setOpen(false);
          setProposed(null);
          setMessage(null);
          propose.reset();
        }}
      >
        <form
          method="dialog"
          onSubmit={(event) => {
            event.preventDefault();
            if (!found || !ready) return;
            propose.mutate(
              { source: found.source, files: found.files, message: shownMessage, branch: branch.trim() || null },
              { onSuccess: (created) => setProposed(created.id) },
            );
          }}
        >
          <h2 id="propose-title">Propose as a Git commit</h2>
          {proposed === null ? (
            <>
              <p className="small">
                The operator writes this draft as one commit on a new branch of the GitSource's repository (and opens a pull request
                where the source names a forge). Nothing changes in the fleet until that branch is merged and applied.
              </p>
              {preview.error && <ErrorNote error={preview.error} retry={() => void preview.refetch()} />}
              {open && !found && !preview.error && <Loading what="what would be proposed" />}
              {found && (
                <>
                  <div className="propose-fields">
                    <label>
                      GitSource{" "}
                      <select
                        value={key(found.source)}
                        onChange={(event) => {
                          const [namespace = "", name = ""] = event.target.value.split("/");
                          setSource({ namespace, name });
                          setPath(null);
                        }}
                      >
                        {found.sources.map((item) => (
                          <option key={key(item)} value={key(item)}>
                            {key(item)}
                          </option>
                        ))}
                      </select>
                    </label>
                    <label>
                      File <input value={path ?? found.path} onChange={(event) => setPath(event.target.value)} />
                    </label>
                    <label>
                      Branch{" "}
                      <input
                        value={branch}
                        placeholder={found.branch}
                        aria-describedby="branch-help"
                        onChange={(event) => setBranch(event.target.value)}
                      />
                    </label>
                    <p id="branch-help" className="small muted">
                      Empty: <code>{found.branch}</code>, where &lt;id&gt; is the proposal's number.
                    </p>
                  </div>
                  <p className="small">Files, based on revision {short(found.files[0]?.baseRevision)}:</p>
                  <ul className="small" aria-label="Files proposed">
                    {found.files.map((file) => (
                      <li key={file.path}>
                        <code>{file.path}</code>
                      </li>
                    ))}
                  </ul>
                  <label className="stacked">
                    Message (its first line titles the pull request)
                    <textarea rows={12} value={shownMessage} onChange={(event) => setMessage(event.target.value)} />
                  </label>
                </>
              )}
              {Boolean(propose.error) && <ErrorNote error={propose.error} />}
              <div className="actions">
                <button type="submit" className="primary" disabled={!ready || propose.isPending || !shownMessage.trim()}>
                  Propose
                </button>
                <button type="button" onClick={close}>
                  Cancel
                </button>
              </div>
            </>
          ) : (
            <>
              {card.data ? <ProposalCard proposal={card.data} /> : <p className="small">Proposal {proposed} sent…</p>}
              {card.data?.state === "Conflict" && (
                <>
                  <p role="alert">
                    Nothing was pushed: the file changed on the branch since the draft was opened. Reopen it at the tip, carry your
                    change over, and propose again.
                  </p>
                  {card.data.conflicts.map((conflict) => (
                    <ThreeWay key={conflict.path} conflict={conflict} />
                  ))}
                </>
              )}
              <div className="actions">
                <button type="button" onClick={close}>
                  Close
                </button>
              </div>
            </>
          )}
        </form>
      </dialog>
    </>
  );
}
