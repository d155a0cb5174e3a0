import { Link } from "react-router";
import type { Schemas } from "../api/client";
import { useOverview } from "../api/queries";
import { Badge } from "../components/Badge";
import { useNow } from "../components/Layout";
import { ErrorNote, Loading } from "../components/feedback";
import { ago, number } from "../lib/format";

type Sync = Schemas["SyncView"];

const PROGRAM_STATUSES = ["Ready", "Progressing", "Failed", "Killed"] as const;
const POLICY_STATUSES = ["Enforcing", "Pending", "Failed"] as const;

/** Sync is two stages, never one word: what Git gave the fleet, what the nodes run. */
function SyncCard({ sync, now }: { sync: Sync; now: number }) {
  const title = sync.source ? `GitSource ${sync.source}` : "Everything in the fleet";
  const [namespace, name] = (sync.source ?? "/").split("/");
  return (
    <article className="card sync" aria-label={title}>
      <h3>
        {sync.source ? <Link to={`/gitsources/${namespace}/${name}`}>{title}</Link> : title}{" "}
        {sync.source && <Badge state={sync.ready} label={sync.ready === "True" ? "Ready" : `Not ready${sync.reason ? `: ${sync.reason}` : ""}`} />}
      </h3>
      <p className="stage">
        <span className="stage-name">Git → fleet:</span>{" "}
        {sync.source
          ? sync.appliedRevision
            ? <>applied <code>{sync.shortRevision}</code>{sync.appliedAt ? `, ${ago(sync.appliedAt, now)}` : ""}</>
            : "nothing applied yet"
          : "programs and policies from every source and from the API"}
      </p>
      <p className="stage">
        <span className="stage-name">fleet → nodes:</span>{" "}
        {number(sync.nodesReady)}/{number(sync.nodesDesired)} attached or enforcing
      </p>
    </article>
  );
}

export function Overview() {
  const overview = useOverview();
  const now = useNow();
  if (overview.isPending) return <Loading what="the overview" />;
  if (!overview.data) return <ErrorNote error={overview.error} retry={() => void overview.refetch()} />;
  const { nodes, programs, policies, sources, fleet } = overview.data;
  return (
    <>
      <h1>Fleet overview</h1>
      <section aria-labelledby="sync-heading">
        <h2 id="sync-heading">Sync</h2>
        <div className="cards">
          {sources.map((sync) => (
            <SyncCard key={sync.source} sync={sync} now={now} />
          ))}
          {sources.length === 0 && (
            <article className="card">
              <h3>No GitSource</h3>
              <p>No operator has reported a GitSource to this API: everything was set through the API.</p>
            </article>
          )}
          <SyncCard sync={fleet} now={now} />
        </div>
      </section>
      <div className="cards">
        <section className="card" aria-labelledby="nodes-heading">
          <h2 id="nodes-heading">Nodes</h2>
          <ul className="counts">
            <li>
              <Link to="/nodes?readiness=Ready">
                <Badge state="Ready" /> <strong>{number(nodes.ready)}</strong>
              </Link>
            </li>
            <li>
              <Link to="/nodes?readiness=NotReady">
                <Badge state="NotReady" /> <strong>{number(nodes.notReady)}</strong>
              </Link>
            </li>
            <li>
              <Link to="/nodes?readiness=Unknown">
                <Badge state="Unknown" /> <strong>{number(nodes.unknown)}</strong>
              </Link>
            </li>
          </ul>
        </section>
        <section className="card" aria-labelledby="programs-heading">
          <h2 id="programs-heading">Programs</h2>
          <ul className="counts">
            {PROGRAM_STATUSES.map((status) => (
              <li key={status}>
                <Link to={`/programs?status=${status}`}>
                  <Badge state={status} /> <strong>{number(programs.byStatus[status] ?? 0)}</strong>
                </Link>
              </li>
            ))}
          </ul>
          <p className="muted">
            On nodes: {number(programs.nodes.attached)} attached, {number(programs.nodes.failed)} failed,{" "}
            {number(programs.nodes.incompatible)} incompatible, {number(programs.nodes.pending)} pending
          </p>
        </section>
        <section className="card" aria-labelledby="policies-heading">
          <h2 id="policies-heading">Network policies</h2>
          <ul className="counts">
            {POLICY_STATUSES.map((status) => (
              <li key={status}>
                <Link to={`/policies?status=${status}`}>
                  <Badge state={status} /> <strong>{number(policies.byStatus[status] ?? 0)}</strong>
                </Link>
              </li>
            ))}
          </ul>
        </section>
      </div>
    </>
  );
}
