/** The stacked bar of a program's nodes: each part's share, for widths. The counts
 * come from the API's summary; this only turns them into percentages. */

export interface Part {
  key: "attached" | "failed" | "incompatible" | "pending";
  label: string;
  count: number;
  percent: number;
}

export interface Counts {
  attached: number;
  failed: number;
  incompatible: number;
  pending: number;
}

const LABELS: Record<Part["key"], string> = {
  attached: "attached",
  failed: "failed",
  incompatible: "incompatible",
  pending: "pending",
};

export function parts(counts: Counts): Part[] {
  const keys: Part["key"][] = ["attached", "failed", "incompatible", "pending"];
  const total = keys.reduce((sum, key) => sum + counts[key], 0);
  return keys.map((key) => ({
    key,
    label: LABELS[key],
    count: counts[key],
    percent: total === 0 ? 0 : (100 * counts[key]) / total,
  }));
}
