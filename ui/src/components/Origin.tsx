import { Link } from "react-router";
import type { Schemas } from "../api/client";

/** Where an object came from: a GitSource at a revision, or the API directly. */
export function Origin({ origin }: { origin: Schemas["OriginView"] | null | undefined }) {
  if (!origin) return <span className="muted">set through the API</span>;
  return (
    <span>
      GitSource{" "}
      <Link to={`/gitsources/${origin.namespace}/${origin.name}`}>
        {origin.namespace}/{origin.name}
      </Link>{" "}
      @ <code>{origin.shortRevision}</code>
    </span>
  );
}
