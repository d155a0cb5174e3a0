import type { Schemas } from "../api/client";
import { Badge } from "./Badge";

export function SourceState({ source }: { source: Schemas["GitSourceView"] }) {
  return <Badge state={source.state} label={source.reason ? `${source.state}: ${source.reason}` : source.state} />;
}

export function refText(ref: { branch?: string | null; tag?: string | null; commit?: string | null } | undefined): string {
  if (!ref) return "";
  if (ref.commit) return `commit ${ref.commit.slice(0, 12)}`;
  if (ref.tag) return `tag ${ref.tag}`;
  return `branch ${ref.branch ?? "main"}`;
}
