/** What the API found in the draft: lints (each with its line, plain words, the
 * simulated flow that proves it and a one-click fix) and the rating per policy. */
import type { Schemas } from "../api/client";

type Lint = Schemas["LintView"];
type Rating = Schemas["RatingView"];
type Fix = Schemas["FixView"];

const SEVERITY: Record<Lint["severity"], string> = { error: "✕ error", warning: "! warning", info: "• info" };

export function Lints({
  lints,
  editable,
  onFix,
  onGo,
}: {
  lints: Lint[];
  editable: boolean;
  onFix(fix: Fix, document: number | null): void;
  onGo(line: number): void;
}) {
  if (!lints.length) return <p className="muted">No lint: none of the known mistakes is in this draft.</p>;
  return (
    <ul className="plain lints">
      {lints.map((lint, index) => {
        const proof = lint.proof;
        return (
          <li key={`${lint.code}/${index}`} className={`lint lint-${lint.severity}`} aria-label={`lint ${lint.code}`}>
            <p>
              <span className="badge badge-warn" data-state={lint.severity}>
                {SEVERITY[lint.severity]}
              </span>{" "}
              <code>{lint.code}</code>{" "}
              {lint.line !== null && (
                <button type="button" className="link" onClick={() => onGo(lint.line ?? 1)}>
                  line {lint.line}
                </button>
              )}{" "}
              <code>{lint.pathText}</code>
            </p>
            <p>{lint.message}</p>
            <p className="proof">
              Proof: <code>
                {proof.client} → {proof.server} {proof.protocol}/{proof.port}
              </code>{" "}
              is <strong>{proof.verdict === "allow" ? "allowed" : "denied"}</strong>
              {proof.verdictOnceFixed && <> ({proof.verdictOnceFixed === "allow" ? "allowed" : "denied"} once fixed)</>}
              {proof.judgedWith === "fleet" ? ", with every policy in force" : ", by this policy alone"}
              {proof.witnesses.length > 0 && (
                <span className="muted"> (made-up endpoints: {proof.witnesses.map((w) => w.name).join(", ")})</span>
              )}
              . <span className="muted">{proof.explanation.egress.reason} {proof.explanation.ingress.reason}</span>
            </p>
            {editable &&
              lint.fixes.map((fix) => (
                <button key={fix.title} type="button" onClick={() => onFix(fix, lint.document)}>
                  Fix: {fix.title}
                </button>
              ))}
          </li>
        );
      })}
    </ul>
  );
}

export function Ratings({ ratings, onGo }: { ratings: Rating[]; onGo(line: number): void }) {
  if (!ratings.length) return <p className="muted">No rating: the draft holds no valid policy yet.</p>;
  return (
    <ul className="plain ratings">
      {ratings.map((rating) => (
        <li key={rating.policy}>
          <p>
            <strong>{rating.policy}</strong>:{" "}
            <span className="grade" data-testid="grade">
              grade {rating.grade ?? "none (restricts nothing)"}
            </span>
          </p>
          <ul>
            {[rating.ingress, rating.egress].map((direction) => (
              <li key={direction.direction}>
                {direction.summary}
                {direction.widest?.line != null && (
                  <>
                    {" "}
                    <button type="button" className="link" onClick={() => onGo(direction.widest?.line ?? 1)}>
                      go to line {direction.widest.line}
                    </button>
                  </>
                )}
              </li>
            ))}
          </ul>
        </li>
      ))}
    </ul>
  );
}
