import { parts, type Counts } from "../lib/bar";

/** Nodes of a program by outcome: a bar for the eye, the same counts in words. */
export function Bar({ counts, desired }: { counts: Counts; desired: number }) {
  const shares = parts(counts);
  const words = shares
    .filter((part) => part.count > 0)
    .map((part) => `${part.count} ${part.label}`)
    .join(", ");
  return (
    <div className="bar-cell">
      <div className="bar" aria-hidden="true">
        {shares
          .filter((part) => part.percent > 0)
          .map((part) => (
            <span key={part.key} className={`bar-${part.key}`} style={{ width: `${part.percent}%` }} />
          ))}
      </div>
      <span className="bar-words">
        {desired === 0 ? "no node selected" : `${words} of ${desired}`}
      </span>
    </div>
  );
}
