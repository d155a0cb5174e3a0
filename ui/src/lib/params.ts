/** URL search parameters as the single source of view state (filters, tabs, pages,
 * selected rows): a reload or the Back button restores exactly what was shown. */

export const PAGE_SIZE = 50;

/** ``search`` with ``changes`` applied; empty or null values remove the key. Changing
 * anything but the page itself goes back to the first page. */
export function withParams(
  search: URLSearchParams,
  changes: Record<string, string | number | null | undefined>,
): URLSearchParams {
  const next = new URLSearchParams(search);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === undefined || value === "") next.delete(key);
    else next.set(key, String(value));
  }
  if (!("page" in changes)) next.delete("page");
  return next;
}

/** The 1-based page number in ``search`` (1 when absent or nonsense). */
export function pageOf(search: URLSearchParams): number {
  const page = Number.parseInt(search.get("page") ?? "1", 10);
  return Number.isFinite(page) && page >= 1 ? page : 1;
}

export function offsetOf(search: URLSearchParams, size: number = PAGE_SIZE): number {
  return (pageOf(search) - 1) * size;
}

export function pageCount(total: number, size: number = PAGE_SIZE): number {
  return Math.max(1, Math.ceil(total / size));
}

/** "51–100 of 10,000" for page 2 of 50. */
export function rangeText(page: number, shown: number, total: number, size: number = PAGE_SIZE): string {
  if (total === 0 || shown === 0) return `0 of ${total.toLocaleString("en-US")}`;
  const first = (page - 1) * size + 1;
  return `${first.toLocaleString("en-US")}–${(first + shown - 1).toLocaleString("en-US")} of ${total.toLocaleString("en-US")}`;
}

/** Next sort for a column header: ascending first, then descending. */
export function nextSort(current: string, column: string): string {
  return current === column ? `-${column}` : column;
}

export function sortState(current: string, column: string): "ascending" | "descending" | "none" {
  if (current === column) return "ascending";
  if (current === `-${column}`) return "descending";
  return "none";
}
