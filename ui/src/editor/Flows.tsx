/** Flow tests: the person writes flows (one a line, as in `<policy>.flows.yaml`); the API
 * runs them with the draft in force and each row turns passed or failed as they type. */
import type { Schemas } from "../api/client";

type Flows = Schemas["FlowsView"];

export function FlowTests({
  text,
  onText,
  result,
  readOnly,
}: {
  text: string;
  onText(text: string): void;
  result: Flows | null;
  readOnly: boolean;
}) {
  return (
    <div className="flows">
      <label htmlFor="flows-text">Flow tests (a flows.yaml file: <code>CLIENT -&gt; SERVER PROTOCOL/PORT expect allow|deny</code>)</label>
      <textarea
        id="flows-text"
        className="flows-text"
        rows={6}
        spellCheck={false}
        value={text}
        readOnly={readOnly}
        onChange={(event) => onText(event.target.value)}
      />
      {result && (
        <>
          <p role="status" data-testid="flow-summary">
            {result.passed} passed, {result.failed} failed
          </p>
          {result.problems.length > 0 && (
            <ul className="problems">
              {result.problems.map((problem) => (
                <li key={`${problem.line}/${problem.message}`}>
                  line {problem.line}: {problem.message}
                </li>
              ))}
            </ul>
          )}
          {result.results.length > 0 && (
            <table>
              <thead>
                <tr>
                  <th scope="col">Result</th>
                  <th scope="col">Line</th>
                  <th scope="col">Flow</th>
                  <th scope="col">Verdict</th>
                  <th scope="col">Why</th>
                </tr>
              </thead>
              <tbody>
                {result.results.map((row) => (
                  <tr key={`${row.line}/${row.text}`} className={row.passed ? "flow-passed" : "flow-failed"}>
                    <td>
                      <span className={`badge ${row.passed ? "badge-ok" : "badge-bad"}`} data-state={row.passed ? "Passed" : "Failed"}>
                        <span aria-hidden="true">{row.passed ? "✓" : "✕"}</span> {row.passed ? "Passed" : "Failed"}
                      </span>
                    </td>
                    <td>{row.line}</td>
                    <td>
                      <code>{row.text}</code>
                    </td>
                    <td>{row.verdict ?? "–"}</td>
                    <td className="message">{row.error ?? row.reason?.join(" ") ?? ""}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </div>
  );
}
