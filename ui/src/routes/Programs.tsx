import { Link, useSearchParams } from "react-router";
import { usePrograms, type ProgramStatus } from "../api/queries";
import { Badge } from "../components/Badge";
import { Bar } from "../components/Bar";
import { Origin } from "../components/Origin";
import { ErrorNote, Empty, Loading } from "../components/feedback";
import { Pager } from "../components/tables";
import { shortDigest } from "../lib/format";
import { PAGE_SIZE, offsetOf, withParams } from "../lib/params";

const STATUSES: ProgramStatus[] = ["Ready", "Progressing", "Failed", "Killed"];

interface Spec {
  artifact?: { name?: string; version?: string; digest?: string };
}

export default function Programs() {
  const [search, setSearch] = useSearchParams();
  const wanted = search.get("status") as ProgramStatus | null;
  const status = wanted && STATUSES.includes(wanted) ? wanted : undefined;
  const programs = usePrograms(status, PAGE_SIZE, offsetOf(search));
  return (
    <>
      <h1>Programs</h1>
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
      </div>
      {programs.error && <ErrorNote error={programs.error} retry={() => void programs.refetch()} />}
      {programs.isPending && <Loading what="programs" />}
      {programs.data && (
        <>
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Artifact</th>
                <th scope="col">Digest</th>
                <th scope="col">Generation</th>
                <th scope="col">Nodes</th>
                <th scope="col">Rollout</th>
                <th scope="col">Status</th>
                <th scope="col">From</th>
              </tr>
            </thead>
            <tbody>
              {programs.data.items.map((program) => {
                const artifact = (program.spec as Spec).artifact ?? {};
                return (
                  <tr key={program.name}>
                    <td>
                      <Link to={`/programs/${program.name}`}>{program.name}</Link>
                    </td>
                    <td>
                      <code>
                        {artifact.name}@{artifact.version}
                      </code>
                    </td>
                    <td>
                      <code>{shortDigest(artifact.digest)}</code>
                    </td>
                    <td>{program.generation}</td>
                    <td>
                      <Bar counts={program.summary} desired={program.summary.desired} />
                    </td>
                    <td>{program.rollout ? <Badge state={program.rollout.phase} /> : <span className="muted">none</span>}</td>
                    <td>
                      <Badge state={program.status} />
                    </td>
                    <td>
                      <Origin origin={program.origin} />
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
          {programs.data.items.length === 0 && <Empty>No program{status ? ` is ${status}` : ""}.</Empty>}
          <Pager total={programs.data.total} shown={programs.data.items.length} label="Programs" />
        </>
      )}
    </>
  );
}
