import { Link, useSearchParams } from "react-router";
import { usePolicies, type PolicyStatus } from "../api/queries";
import { Badge } from "../components/Badge";
import { Origin } from "../components/Origin";
import { ErrorNote, Empty, Loading } from "../components/feedback";
import { Pager } from "../components/tables";
import { number } from "../lib/format";
import { PAGE_SIZE, offsetOf, withParams } from "../lib/params";

const STATUSES: PolicyStatus[] = ["Enforcing", "Pending", "Failed"];

export default function Policies() {
  const [search, setSearch] = useSearchParams();
  const wanted = search.get("status") as PolicyStatus | null;
  const status = wanted && STATUSES.includes(wanted) ? wanted : undefined;
  const namespace = search.get("namespace") ?? undefined;
  const policies = usePolicies(status, namespace, PAGE_SIZE, offsetOf(search));
  return (
    <>
      <h1>Network policies</h1>
      <div className="toolbar">
        <label>
          Status{" "}
          <select value={status ?? ""} onChange={(event) => setSearch(withParams(search, { status: event.target.value }))}>
            <option value="">any</option>
            {STATUSES.map((value) => (
              <option key={value} value={value}>
                {value}
              </option>
            ))}
          </select>
        </label>
        {namespace && (
          <button type="button" onClick={() => setSearch(withParams(search, { namespace: null }))}>
            Namespace {namespace} ✕
          </button>
        )}
      </div>
      {policies.error && <ErrorNote error={policies.error} retry={() => void policies.refetch()} />}
      {policies.isPending && <Loading what="policies" />}
      {policies.data && (
        <>
          <table>
            <thead>
              <tr>
                <th scope="col">Policy</th>
                <th scope="col">Mode</th>
                <th scope="col">Generation</th>
                <th scope="col">Enforcing</th>
                <th scope="col">Failed</th>
                <th scope="col">Audit-denied packets</th>
                <th scope="col">Status</th>
                <th scope="col">From</th>
              </tr>
            </thead>
            <tbody>
              {policies.data.items.map((policy) => (
                <tr key={`${policy.namespace}/${policy.name}`}>
                  <td>
                    <Link to={`/policies/${policy.namespace}/${policy.name}`}>
                      {policy.namespace}/{policy.name}
                    </Link>
                  </td>
                  <td>{policy.mode}</td>
                  <td>{policy.generation}</td>
                  <td>
                    {policy.summary.enforcing}/{policy.summary.desired} nodes
                  </td>
                  <td>{policy.summary.failed}</td>
                  <td>{number(policy.counters?.auditDenied ?? 0)}</td>
                  <td>
                    <Badge state={policy.status} />
                  </td>
                  <td>
                    <Origin origin={policy.origin} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {policies.data.items.length === 0 && <Empty>No policy{status ? ` is ${status}` : ""}.</Empty>}
          <Pager total={policies.data.total} shown={policies.data.items.length} label="Policies" />
          <p className="muted">
            Packet counters are kept per node, not per policy: a policy's are the sums over the nodes enforcing it.
          </p>
        </>
      )}
    </>
  );
}
