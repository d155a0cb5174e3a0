import { useState } from "react";
import { Link, useSearchParams } from "react-router";
import { useNodes } from "../api/queries";
import { Badge } from "../components/Badge";
import { useNow } from "../components/Layout";
import { ErrorNote, Empty, Loading } from "../components/feedback";
import { Labels, Pager, SortHeader } from "../components/tables";
import { ago } from "../lib/format";
import { PAGE_SIZE, offsetOf, withParams } from "../lib/params";

const READINESS = ["Ready", "NotReady", "Unknown"] as const;
type Readiness = (typeof READINESS)[number];

/** The selector box: typed freely, applied on Enter or with the button (then in the URL). */
function SelectorForm({ applied, onApply }: { applied: string; onApply: (value: string) => void }) {
  const [text, setText] = useState(applied);
  const [seen, setSeen] = useState(applied);
  if (applied !== seen) {
    // Back/Forward changed the URL: show what it says now.
    setSeen(applied);
    setText(applied);
  }
  return (
    <form
      className="filter"
      role="search"
      onSubmit={(event) => {
        event.preventDefault();
        onApply(text.trim());
      }}
    >
      <label htmlFor="selector">Label selector</label>
      <input
        id="selector"
        name="selector"
        placeholder="tier=edge,zone in (a,b),!canary"
        value={text}
        onChange={(event) => setText(event.target.value)}
        aria-describedby="selector-help"
      />
      <button type="submit">Apply</button>
      <span id="selector-help" className="muted">
        The syntax of a <code>nodeSelector</code>, as <code>kubectl -l</code> takes it.
      </span>
    </form>
  );
}

export default function Nodes() {
  const [search, setSearch] = useSearchParams();
  const now = useNow();
  const selector = search.get("selector") ?? "";
  const readinessParam = search.get("readiness");
  const readiness = READINESS.includes(readinessParam as Readiness) ? (readinessParam as Readiness) : undefined;
  const sort = search.get("sort") ?? "name";
  const nodes = useNodes({ selector, readiness, sort, limit: PAGE_SIZE, offset: offsetOf(search) });
  return (
    <>
      <h1>Nodes</h1>
      <div className="toolbar">
        <SelectorForm applied={selector} onApply={(value) => setSearch(withParams(search, { selector: value }))} />
        <label>
          Readiness{" "}
          <select
            value={readiness ?? ""}
            onChange={(event) => setSearch(withParams(search, { readiness: event.target.value }))}
          >
            <option value="">any</option>
            {READINESS.map((value) => (
              <option key={value} value={value}>
                {value}
              </option>
            ))}
          </select>
        </label>
      </div>
      {nodes.error && <ErrorNote error={nodes.error} retry={() => void nodes.refetch()} />}
      {nodes.isPending && <Loading what="nodes" />}
      {nodes.data && (
        <>
          <table>
            <caption className="visually-hidden">Nodes, one page</caption>
            <thead>
              <tr>
                <SortHeader column="name" label="Name" />
                <th scope="col">Labels</th>
                <SortHeader column="kernelRelease" label="Kernel" />
                <SortHeader column="readiness" label="Readiness" />
                <SortHeader column="lastHeartbeat" label="Heartbeat" />
                <SortHeader column="appliedRevision" label="Revision applied / desired" />
              </tr>
            </thead>
            <tbody>
              {nodes.data.items.map((node) => (
                <tr key={node.name}>
                  <td>
                    <Link to={`/nodes/${encodeURIComponent(node.name)}`}>{node.name}</Link>
                  </td>
                  <td>
                    <Labels labels={node.labels} />
                  </td>
                  <td>
                    <code>{node.kernelRelease}</code>
                  </td>
                  <td>
                    <Badge state={node.readiness} />
                  </td>
                  <td>{ago(node.lastHeartbeat, now)}</td>
                  <td>
                    {node.appliedRevision} / {node.desiredRevision}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {nodes.data.items.length === 0 && <Empty>No node matches.</Empty>}
          <Pager total={nodes.data.total} shown={nodes.data.items.length} label="Nodes" />
        </>
      )}
    </>
  );
}
