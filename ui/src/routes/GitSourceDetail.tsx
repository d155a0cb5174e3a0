import { Link, useParams } from "react-router";
import { useReconcile, useSource } from "../api/queries";
import { Badge } from "../components/Badge";
import { useNow } from "../components/Layout";
import { SourceState, refText } from "../components/SourceState";
import { TabPanel, Tabs, useTab } from "../components/Tabs";
import { ErrorNote, Empty, Loading } from "../components/feedback";
import { ago, dateTime } from "../lib/format";
import { useCanAct } from "../session";

const TABS = [
  { id: "history", label: "History" },
  { id: "inventory", label: "Inventory" },
];

function location(error: { file: string; line?: number | null; field?: string }): string {
  const where = error.line ? `${error.file}:${error.line}` : error.file;
  return error.field ? `${where} ${error.field}:` : `${where}:`;
}

/** The policy editor on the file at that revision, the cursor on the problem's line. */
function editorAt(
  source: { namespace: string; name: string },
  revision: string,
  error: { file: string; line?: number | null },
): string {
  const query = new URLSearchParams({ source: `${source.namespace}/${source.name}`, path: error.file, revision });
  if (error.line) query.set("line", String(error.line));
  return `/editor?${query.toString()}`;
}

export default function GitSourceDetail() {
  const { namespace = "", name = "" } = useParams();
  const source = useSource(namespace, name);
  const reconcile = useReconcile();
  const canAct = useCanAct();
  const tab = useTab(TABS);
  const now = useNow();
  if (source.isPending) return <Loading what={`GitSource ${namespace}/${name}`} />;
  if (!source.data) return <ErrorNote error={source.error} retry={() => void source.refetch()} />;
  const view = source.data;
  return (
    <>
      <p className="crumbs">
        <Link to="/gitsources">GitSources</Link> /
      </p>
      <h1>
        {view.namespace}/{view.name} <SourceState source={view} />
      </h1>
      <p>{view.message}</p>
      <dl className="facts">
        <dt>URL</dt>
        <dd>
          <code>{view.spec?.url}</code>
        </dd>
        <dt>Ref</dt>
        <dd>{refText(view.spec?.ref)}</dd>
        <dt>Path</dt>
        <dd>
          <code>{view.spec?.path}</code>
        </dd>
        <dt>Interval</dt>
        <dd>
          {view.spec?.interval}
          {view.spec?.suspend ? " (suspended)" : ""}
          {view.spec?.prune === false ? ", no pruning" : ""}
        </dd>
        <dt>Fetched</dt>
        <dd>
          <code>{view.lastFetchedRevision || "nothing yet"}</code>
        </dd>
        <dt>Attempted</dt>
        <dd>
          <code>{view.lastAttemptedRevision || "nothing yet"}</code>
        </dd>
        <dt>Applied</dt>
        <dd>
          <code>{view.lastAppliedRevision || "nothing yet"}</code>
          {view.appliedAt && <> ({ago(view.appliedAt, now)})</>}
        </dd>
        <dt>Last pass</dt>
        <dd>{ago(view.reportedAt, now)}</dd>
        <dt>Conditions</dt>
        <dd>
          <ul className="plain">
            {view.conditions.map((condition) => (
              <li key={condition.type}>
                {condition.type}: <Badge state={condition.status} label={`${condition.status}, ${condition.reason}`} />{" "}
                <span className="muted">{condition.message}</span>
              </li>
            ))}
          </ul>
        </dd>
      </dl>
      {canAct && (
        <div className="actions">
          <button type="button" onClick={() => reconcile.mutate({ namespace, name })} disabled={reconcile.isPending}>
            Reconcile now
          </button>
          {view.reconcilePending && (
            <span role="status">
              Requested {ago(view.reconcileRequestedAt, now)}; waiting for the operator's pass…
            </span>
          )}
        </div>
      )}
      {reconcile.error && <ErrorNote error={reconcile.error} />}
      <Tabs tabs={TABS} label="GitSource detail" />
      <TabPanel id={tab}>
        {tab === "history" &&
          (view.history.length ? (
            <table>
              <thead>
                <tr>
                  <th scope="col">Time</th>
                  <th scope="col">Revision</th>
                  <th scope="col">Result</th>
                  <th scope="col">What happened</th>
                </tr>
              </thead>
              <tbody>
                {view.history.map((entry) => (
                  <tr key={`${entry.time}/${entry.revision}/${entry.result}`}>
                    <td>
                      <time dateTime={entry.time}>{dateTime(entry.time)}</time>
                    </td>
                    <td>
                      <code title={entry.revision}>{entry.shortRevision}</code>
                    </td>
                    <td>
                      <Badge state={entry.result} />
                    </td>
                    <td className="message">
                      {entry.message}
                      {entry.errors.length > 0 && (
                        <ul className="problems">
                          {entry.errors.map((error, index) => (
                            <li key={index}>
                              <Link to={editorAt(view, entry.revision, error)}>
                                <code>{location(error)}</code>
                              </Link>{" "}
                              {error.message}
                            </li>
                          ))}
                        </ul>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          ) : (
            <Empty>No pass recorded yet.</Empty>
          ))}
        {tab === "inventory" &&
          (view.inventory.length ? (
            <table>
              <thead>
                <tr>
                  <th scope="col">Kind</th>
                  <th scope="col">Object</th>
                  <th scope="col">Status</th>
                  <th scope="col">Nodes ready</th>
                </tr>
              </thead>
              <tbody>
                {view.inventory.map((item) => {
                  const key = item.namespace ? `${item.namespace}/${item.name}` : item.name;
                  const to = item.kind === "BpfProgram" ? `/programs/${item.name}` : `/policies/${item.namespace}/${item.name}`;
                  return (
                    <tr key={`${item.kind}/${key}`}>
                      <td>{item.kind}</td>
                      <td>
                        <Link to={to}>{key}</Link>
                      </td>
                      <td>
                        <Badge state={item.status} />
                      </td>
                      <td>
                        {item.ready}/{item.desired}
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          ) : (
            <Empty>Nothing applied from this source.</Empty>
          ))}
      </TabPanel>
    </>
  );
}
