import { Link, useParams } from "react-router";
import { usePolicy, usePolicyNodes } from "../api/queries";
import { Badge } from "../components/Badge";
import { Origin } from "../components/Origin";
import { ErrorNote, Empty, Loading } from "../components/feedback";
import { number } from "../lib/format";

export default function PolicyDetail() {
  const { namespace = "", name = "" } = useParams();
  const policy = usePolicy(namespace, name);
  const nodes = usePolicyNodes(namespace, name);
  if (policy.isPending) return <Loading what={`policy ${namespace}/${name}`} />;
  if (!policy.data) return <ErrorNote error={policy.error} retry={() => void policy.refetch()} />;
  const view = policy.data;
  return (
    <>
      <p className="crumbs">
        <Link to="/policies">Network policies</Link> /
      </p>
      <h1>
        {view.namespace}/{view.name} <Badge state={view.status} />
      </h1>
      <dl className="facts">
        <dt>Mode</dt>
        <dd>{view.mode}</dd>
        <dt>Generation</dt>
        <dd>{view.generation}</dd>
        <dt>Enforcing</dt>
        <dd>
          {view.summary.enforcing}/{view.summary.desired} nodes, {view.summary.pending} pending, {view.summary.failed} failed
        </dd>
        <dt>From</dt>
        <dd>
          <Origin origin={view.origin} />
        </dd>
      </dl>
      <div className="actions">
        <Link to={`/editor?policy=${encodeURIComponent(`${view.namespace}/${view.name}`)}`}>Open in the editor</Link>
        {view.mode === "audit" && (
          <Link to={`/editor?policy=${encodeURIComponent(`${view.namespace}/${view.name}`)}&mode=enforce`}>
            Promote to enforce…
          </Link>
        )}
      </div>
      <h2>Nodes</h2>
      {nodes.error && <ErrorNote error={nodes.error} />}
      {nodes.data &&
        (nodes.data.length ? (
          <table>
            <thead>
              <tr>
                <th scope="col">Node</th>
                <th scope="col">Generation enforced</th>
                <th scope="col">State</th>
                <th scope="col">Message</th>
                <th scope="col">Allowed</th>
                <th scope="col">Denied</th>
                <th scope="col">Audit-denied</th>
              </tr>
            </thead>
            <tbody>
              {nodes.data.map((row) => (
                <tr key={row.node}>
                  <td>
                    <Link to={`/nodes/${encodeURIComponent(row.node)}?tab=policy`}>{row.node}</Link>
                  </td>
                  <td>{row.generation ?? "none"}</td>
                  <td>
                    <Badge state={row.state} />
                  </td>
                  <td className="message">{row.message}</td>
                  <td>{row.counters ? number(row.counters.allowed) : "–"}</td>
                  <td>{row.counters ? number(row.counters.denied) : "–"}</td>
                  <td>{row.counters ? number(row.counters.auditDenied) : "–"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : (
          <Empty>No node has an endpoint this policy selects.</Empty>
        ))}
      <p className="muted">Counters are the node's datapath's, over all the policies it enforces.</p>
      <details>
        <summary>The policy as stored</summary>
        <pre className="log" tabIndex={0}>{JSON.stringify(view.document, null, 2)}</pre>
      </details>
    </>
  );
}
