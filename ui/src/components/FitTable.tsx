import { Link } from "react-router";
import type { Schemas } from "../api/client";
import { Badge } from "./Badge";
import { Empty } from "./feedback";

/** For one node: every program of the fleet, and what its kernel lacks for each. */
export function FitTable({ fits }: { fits: Schemas["ProgramFit"][] }) {
  if (fits.length === 0) return <Empty>The fleet has no program.</Empty>;
  return (
    <table>
      <thead>
        <tr>
          <th scope="col">Program</th>
          <th scope="col">Artifact</th>
          <th scope="col">Selects this node</th>
          <th scope="col">Verdict</th>
          <th scope="col">Missing on this kernel</th>
        </tr>
      </thead>
      <tbody>
        {fits.map((fit) => (
          <tr key={fit.program}>
            <td>
              <Link to={`/programs/${fit.program}`}>{fit.program}</Link>
            </td>
            <td>
              <code>{fit.artifact}</code>
            </td>
            <td>{fit.selected ? "yes" : "no"}</td>
            <td>
              <Badge state={fit.compatible ? "Compatible" : "Incompatible"} />
            </td>
            <td>
              {fit.missing.length === 0 ? (
                <span className="muted">nothing</span>
              ) : (
                <ul className="plain">
                  {fit.missing.map((item) => (
                    <li key={item}>{item}</li>
                  ))}
                </ul>
              )}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
