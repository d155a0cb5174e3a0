import { useState } from "react";
import { Link, useSearchParams } from "react-router";
import { useCompare, useKernels, usePreflight } from "../api/queries";
import { Badge } from "../components/Badge";
import { FitTable } from "../components/FitTable";
import { ErrorNote, Empty, Loading } from "../components/feedback";
import { Pager } from "../components/tables";
import { offsetOf, withParams } from "../lib/params";

const MATRIX_PAGE = 25;

function Compare({ nodes }: { nodes: string[] }) {
  const [search, setSearch] = useSearchParams();
  const a = search.get("a");
  const b = search.get("b");
  const [left, setLeft] = useState(a ?? "");
  const [right, setRight] = useState(b ?? "");
  const compared = useCompare(a, b);
  return (
    <section aria-labelledby="compare-heading">
      <h2 id="compare-heading">Compare two nodes</h2>
      <form
        className="filter"
        onSubmit={(event) => {
          event.preventDefault();
          setSearch(withParams(search, { a: left.trim(), b: right.trim(), page: search.get("page") }));
        }}
      >
        <label htmlFor="node-a">Node A</label>
        <input id="node-a" list="kernel-nodes" value={left} onChange={(event) => setLeft(event.target.value)} />
        <label htmlFor="node-b">Node B</label>
        <input id="node-b" list="kernel-nodes" value={right} onChange={(event) => setRight(event.target.value)} />
        <datalist id="kernel-nodes">
          {nodes.map((node) => (
            <option key={node} value={node} />
          ))}
        </datalist>
        <button type="submit">Compare</button>
      </form>
      {compared.error && <ErrorNote error={compared.error} />}
      {compared.data && (
        <table>
          <caption>
            <code>{compared.data.a}</code> ({compared.data.kernelReleaseA}) against <code>{compared.data.b}</code> (
            {compared.data.kernelReleaseB})
          </caption>
          <thead>
            <tr>
              <th scope="col">Group</th>
              <th scope="col">Only on {compared.data.a}</th>
              <th scope="col">Only on {compared.data.b}</th>
              <th scope="col">The same on both</th>
            </tr>
          </thead>
          <tbody>
            {compared.data.groups.map((group) => (
              <tr key={group.group}>
                <th scope="row">{group.group}</th>
                <td className="wrap">{group.onlyA.join(", ") || <span className="muted">nothing</span>}</td>
                <td className="wrap">{group.onlyB.join(", ") || <span className="muted">nothing</span>}</td>
                <td>{group.same}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function CouldNotRun({ node }: { node: string }) {
  const fits = usePreflight(node);
  return (
    <section aria-labelledby="fit-heading">
      <h2 id="fit-heading">
        Programs <code>{node}</code> could not run
      </h2>
      {fits.error && <ErrorNote error={fits.error} />}
      {fits.data ? <FitTable fits={fits.data} /> : !fits.error && <Loading what="the preflight" />}
    </section>
  );
}

export default function Kernels() {
  const [search, setSearch] = useSearchParams();
  const selector = search.get("selector") ?? "";
  const node = search.get("node");
  const [text, setText] = useState(selector);
  const matrix = useKernels(selector, MATRIX_PAGE, offsetOf(search, MATRIX_PAGE));
  return (
    <>
      <h1>Kernels</h1>
      <p>
        Nodes against the kernel features on which they differ (features every node shown agrees on are
        counted, not listed).
      </p>
      <form
        className="filter"
        role="search"
        onSubmit={(event) => {
          event.preventDefault();
          setSearch(withParams(search, { selector: text.trim() }));
        }}
      >
        <label htmlFor="kernel-selector">Label selector</label>
        <input id="kernel-selector" value={text} placeholder="tier=edge" onChange={(event) => setText(event.target.value)} />
        <button type="submit">Apply</button>
      </form>
      {matrix.error && <ErrorNote error={matrix.error} retry={() => void matrix.refetch()} />}
      {matrix.isPending && <Loading what="the kernel matrix" />}
      {matrix.data && (
        <section aria-labelledby="matrix-heading">
          <h2 id="matrix-heading">Nodes × features</h2>
          <p>
            {matrix.data.features.length === 0
              ? `These nodes' kernels agree on all ${matrix.data.same} features they report.`
              : `${matrix.data.features.length} features differ; ${matrix.data.same} are the same on every node shown.`}
          </p>
          <div className="scroll">
            <table className="matrix">
              <thead>
                <tr>
                  <th scope="col">Node</th>
                  <th scope="col">Kernel</th>
                  {matrix.data.features.map((feature) => (
                    <th scope="col" key={`${feature.group}:${feature.name}`}>
                      <span className="muted">{feature.group}</span> {feature.name}
                    </th>
                  ))}
                  <th scope="col">Programs</th>
                </tr>
              </thead>
              <tbody>
                {matrix.data.nodes.map((row) => (
                  <tr key={row.node} className={row.node === node ? "selected" : undefined} aria-selected={row.node === node || undefined}>
                    <th scope="row">
                      <Link to={`/nodes/${encodeURIComponent(row.node)}?tab=features`}>{row.node}</Link>
                    </th>
                    <td>
                      <code>{row.kernelRelease}</code>
                    </td>
                    {row.reported
                      ? row.values.map((value, index) => (
                          <td key={index}>
                            <Badge state={value ? "Ready" : "Missing"} label={value ? "yes" : "no"} />
                          </td>
                        ))
                      : matrix.data.features.map((feature) => (
                          <td key={`${feature.group}:${feature.name}`} className="muted">
                            not reported
                          </td>
                        ))}
                    <td>
                      <button
                        type="button"
                        className="link"
                        aria-pressed={row.node === node}
                        onClick={() => setSearch(withParams(search, { node: row.node, page: search.get("page") }))}
                      >
                        What could not run here
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          {matrix.data.nodes.length === 0 && <Empty>No node matches.</Empty>}
          <Pager total={matrix.data.total} shown={matrix.data.nodes.length} size={MATRIX_PAGE} label="Kernel matrix" />
        </section>
      )}
      {node && <CouldNotRun node={node} />}
      <Compare nodes={matrix.data?.nodes.map((row) => row.node) ?? []} />
    </>
  );
}
