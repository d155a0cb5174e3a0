import { Fragment } from "react";
import { Link, useSearchParams } from "react-router";
import type { Schemas } from "../api/client";
import { withParams } from "../lib/params";
import { Badge } from "./Badge";

type Row = Schemas["NodeProgramView"];

/** Per node x program state rows; a row with a verifier excerpt opens to show it (which
 * row is open is the URL's ``open``). ``by`` says which column names the row. */
export function ProgramRows({ rows, by }: { rows: Row[]; by: "node" | "program" }) {
  const [search, setSearch] = useSearchParams();
  const open = search.get("open");
  return (
    <table>
      <thead>
        <tr>
          <th scope="col">{by === "node" ? "Node" : "Program"}</th>
          <th scope="col">Generation</th>
          <th scope="col">State</th>
          <th scope="col">Reason</th>
          <th scope="col">Message</th>
        </tr>
      </thead>
      <tbody>
        {rows.map((row) => {
          const key = by === "node" ? row.node : row.program;
          const expanded = open === key;
          return (
            <Fragment key={key}>
              <tr aria-selected={expanded || undefined} className={expanded ? "selected" : undefined}>
                <td>
                  <Link to={by === "node" ? `/nodes/${encodeURIComponent(key)}` : `/programs/${key}`}>{key}</Link>
                </td>
                <td>{row.generation ?? "–"}</td>
                <td>
                  <Badge state={row.state} />
                </td>
                <td>{row.reason}</td>
                <td className="message">
                  {row.message}
                  {row.verifierLog && (
                    <div>
                      <button
                        type="button"
                        className="link"
                        aria-expanded={expanded}
                        aria-controls={`log-${key}`}
                        onClick={() => setSearch(withParams(search, { open: expanded ? null : key }))}
                      >
                        {expanded ? "Hide the verifier log" : "Show the verifier log"}
                      </button>
                    </div>
                  )}
                </td>
              </tr>
              {row.verifierLog && expanded && (
                <tr className="expanded">
                  <td colSpan={5} id={`log-${key}`}>
                    <h3 className="small">Verifier log (excerpt)</h3>
                    <pre className="log" tabIndex={0}>{row.verifierLog}</pre>
                  </td>
                </tr>
              )}
            </Fragment>
          );
        })}
      </tbody>
    </table>
  );
}
