/** A proposal's card: its stages as the API reports them (Proposed -> Pushed -> Merged ->
 * Applied or Rejected -> Enforcing n/N), each with its time, the pull request where a
 * forge took it, and a dev merge button where the GitSource allows one. The API says
 * which stage it is in and whether a merge is offered; the card only arranges that. */
import { Link } from "react-router";
import type { Schemas } from "../api/client";
import { useMergeProposal } from "../api/queries";
import { dateTime } from "../lib/format";
import { stagePath, type StageName } from "../lib/stages";
import { useMay } from "../session";
import { Badge } from "./Badge";
import { ErrorNote } from "./feedback";

type Proposal = Schemas["ProposalView"];

function short(commit: string | null | undefined): string {
  return commit ? commit.replace(/^.*@sha1:/, "").slice(0, 7) : "";
}

/** What each stage says besides its time. */
function detail(name: StageName, proposal: Proposal): React.ReactNode {
  switch (name) {
    case "Proposed":
      return `by ${proposal.author}`;
    case "Conflict":
    case "Failed":
      return proposal.stateMessage || "nothing was pushed";
    case "Pushed":
      return proposal.branch ? (
        <>
          <code>{proposal.branch}</code> at <code>{short(proposal.commit)}</code>
        </>
      ) : (
        "waiting for the operator"
      );
    case "Merged":
      if (proposal.mergedCommit) return <code>{short(proposal.mergedCommit)}</code>;
      return proposal.mergeRequested ? "merge asked for; waiting for the operator" : null;
    case "Applied":
      return proposal.revision && proposal.appliedAt ? <code>{short(proposal.revision)}</code> : null;
    case "Rejected":
      return (
        <ul className="problems">
          {proposal.errors.map((error, index) => (
            <li key={index}>
              <Link
                to={`/editor?source=${encodeURIComponent(`${proposal.source.namespace}/${proposal.source.name}`)}&path=${encodeURIComponent(error.file)}&revision=${encodeURIComponent(proposal.revision ?? "")}${error.line ? `&line=${error.line}` : ""}`}
              >
                {error.file}:{error.line ?? ""}
              </Link>{" "}
              {error.field} {error.message}
            </li>
          ))}
        </ul>
      );
    case "Enforcing":
      // Counted once applied: before, the nodes hold what was there.
      return proposal.appliedAt ? `${proposal.ready}/${proposal.desired} nodes` : null;
  }
}

export function ProposalCard({ proposal }: { proposal: Proposal }) {
  const mayPropose = useMay("propose");
  const merge = useMergeProposal();
  const title = proposal.message.split("\n", 1)[0];
  const offerMerge = mayPropose && proposal.canMerge && proposal.stage === "Pushed" && !proposal.mergeRequested;
  return (
    <article className="proposal-card" aria-label={`Proposal ${proposal.id}`}>
      <h3>
        Proposal {proposal.id} <Badge state={proposal.stage} />
      </h3>
      <p className="small">
        {title} <span className="muted">(to GitSource {proposal.source.namespace}/{proposal.source.name})</span>
      </p>
      <ol className="stages">
        {stagePath(proposal).map((step) => (
          <li key={step.name} data-reached={step.at ? "yes" : "no"}>
            <strong>{step.name}</strong>
            {step.at ? <span className="muted"> {dateTime(step.at)}</span> : <span className="muted"> (not yet)</span>}
            {detail(step.name, proposal) !== null && <div>{detail(step.name, proposal)}</div>}
          </li>
        ))}
      </ol>
      {proposal.pullRequest && (
        <p data-testid="pull-request">
          Pull request #{proposal.pullRequest.number} on {proposal.pullRequest.forge}:{" "}
          <a href={proposal.pullRequest.url}>{proposal.pullRequest.url}</a> ({proposal.mergedAt ? "merged" : "open"})
        </p>
      )}
      {offerMerge && (
        <button type="button" onClick={() => merge.mutate(proposal.id)} disabled={merge.isPending}>
          Merge (dev)
        </button>
      )}
      {Boolean(merge.error) && <ErrorNote error={merge.error} />}
    </article>
  );
}

/** The cards of the proposals declaring one policy. */
export function ProposalList({ proposals }: { proposals: Proposal[] }) {
  if (!proposals.length) return <p className="muted">No proposal of this policy yet.</p>;
  return (
    <div className="proposal-cards">
      {proposals.map((proposal) => (
        <ProposalCard key={proposal.id} proposal={proposal} />
      ))}
    </div>
  );
}
