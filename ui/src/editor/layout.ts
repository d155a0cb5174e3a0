/** Pure helpers that arrange what the API said for the editor's views: which rule a line
 * of the text belongs to, the matrix's cells, the URL's cell. No policy semantics here:
 * the API judged every verdict, line and rule. */

export interface RuleSpan {
  direction: "ingress" | "egress";
  index: number;
  line: number | null;
  endLine: number | null;
}

export function ruleKey(rule: { direction: string; index: number }): string {
  return `${rule.direction}/${rule.index}`;
}

/** The innermost rule whose lines hold ``line``. */
export function ruleAtLine<T extends RuleSpan>(rules: T[], line: number): T | null {
  let found: T | null = null;
  for (const rule of rules) {
    if (rule.line === null || rule.endLine === null) continue;
    if (rule.line <= line && line <= rule.endLine) {
      if (!found || (found.line ?? 0) < rule.line) found = rule;
    }
  }
  return found;
}

export type Mark = "allowed" | "denied" | "self";
export type Change = "newly allowed" | "newly denied" | null;

export interface MatrixCell {
  client: string;
  server: string;
  now: Mark;
  change: Change;
}

function mark(symbol: string | undefined): Mark {
  if (symbol === ".") return "allowed";
  if (symbol === "X") return "denied";
  return "self";
}

/** The API's matrix rows ('.' allowed, 'X' denied, '-' itself; before and after) as
 * cells, row by row. */
export function matrixCells(endpoints: string[], before: string[], after: string[]): MatrixCell[][] {
  return endpoints.map((client, row) =>
    endpoints.map((server, column) => {
      const was = mark(before[row]?.[column]);
      const now = mark(after[row]?.[column]);
      let change: Change = null;
      if (was !== now && now === "allowed") change = "newly allowed";
      if (was !== now && now === "denied") change = "newly denied";
      return { client, server, now, change };
    }),
  );
}

/** ``client|server`` in the URL, and back. */
export function cellParam(cell: { client: string; server: string }): string {
  return `${cell.client}|${cell.server}`;
}

export function parseCell(value: string | null): { client: string; server: string } | null {
  if (!value) return null;
  const [client, server, ...rest] = value.split("|");
  if (!client || !server || rest.length) return null;
  return { client, server };
}

/** Where a grid cell's focus goes on an arrow key. */
export function moveFocus(
  at: [number, number],
  key: string,
  size: number,
): [number, number] {
  const [row, column] = at;
  const clamp = (value: number) => Math.max(0, Math.min(size - 1, value));
  switch (key) {
    case "ArrowUp":
      return [clamp(row - 1), column];
    case "ArrowDown":
      return [clamp(row + 1), column];
    case "ArrowLeft":
      return [row, clamp(column - 1)];
    case "ArrowRight":
      return [row, clamp(column + 1)];
    case "Home":
      return [row, 0];
    case "End":
      return [row, size - 1];
    default:
      return at;
  }
}
