/** Why one cell of the matrix is what it is, in the API's words: both sides' verdicts,
 * the policies that isolate, the rules that allow, each a link to its lines. */
import { Link } from "react-router";
import type { Schemas } from "../api/client";

type Explanation = Schemas["CellExplanationView"];
type Located = Schemas["LocatedView"];

function Where({ item, onSelect }: { item: Located; onSelect(line: number, endLine: number): void }) {
  const name = item.ref ?? item.policy;
  if (item.origin === "draft" && item.line !== null) {
    return (
      <button type="button" className="link" onClick={() => onSelect(item.line ?? 1, item.endLine ?? item.line ?? 1)}>
        {name} (lines {item.line}–{item.endLine} of this draft)
      </button>
    );
  }
  const [namespace, policy] = item.policy.split("/");
  const line = item.line ? `&line=${item.line}` : "";
  return (
    <Link to={`/editor?policy=${encodeURIComponent(`${namespace}/${policy}`)}${line}`}>
      {name} (stored{item.line ? `, line ${item.line}` : ""})
    </Link>
  );
}

export function ExplainPanel({
  explanation,
  onSelect,
}: {
  explanation: Explanation;
  onSelect(line: number, endLine: number): void;
}) {
  return (
    <section className="explain" aria-label="Why this cell">
      <h3>
        {explanation.client} → {explanation.server} {explanation.protocol}/{explanation.port}:{" "}
        <span className="badge" data-state={explanation.allowed ? "allowed" : "denied"}>
          {explanation.allowed ? "✓ allowed" : "✕ denied"}
        </span>
      </h3>
      <p>{explanation.summary}</p>
      <ul>
        {explanation.reasons.map((reason) => (
          <li key={reason}>{reason}</li>
        ))}
      </ul>
      <dl className="facts">
        <dt>Isolating policies</dt>
        <dd>
          {explanation.isolatingPolicies.length ? (
            <ul className="plain">
              {explanation.isolatingPolicies.map((item) => (
                <li key={item.policy}>
                  <Where item={item} onSelect={onSelect} />
                </li>
              ))}
            </ul>
          ) : (
            "none: neither side is isolated"
          )}
        </dd>
        <dt>Allowing rules</dt>
        <dd>
          {explanation.allowingRules.length ? (
            <ul className="plain">
              {explanation.allowingRules.map((item) => (
                <li key={`${item.policy}/${item.ref}`}>
                  <Where item={item} onSelect={onSelect} />
                </li>
              ))}
            </ul>
          ) : (
            "none"
          )}
        </dd>
      </dl>
    </section>
  );
}
