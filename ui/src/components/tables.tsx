import { useSearchParams } from "react-router";
import { PAGE_SIZE, nextSort, pageCount, pageOf, rangeText, sortState, withParams } from "../lib/params";

/** A column header that sorts on the server; the order lives in the URL. */
export function SortHeader({ column, label, fallback = "name" }: { column: string; label: string; fallback?: string }) {
  const [search, setSearch] = useSearchParams();
  const current = search.get("sort") ?? fallback;
  const state = sortState(current, column);
  const arrow = state === "ascending" ? "▲" : state === "descending" ? "▼" : "";
  return (
    <th scope="col" aria-sort={state}>
      <button
        type="button"
        className="sort"
        onClick={() => setSearch(withParams(search, { sort: nextSort(current, column) }))}
      >
        {label}
        <span aria-hidden="true"> {arrow}</span>
        <span className="visually-hidden">
          {state === "none" ? ", not sorted" : `, sorted ${state}`}
        </span>
      </button>
    </th>
  );
}

/** Previous/next pages; the page number lives in the URL. */
export function Pager({ total, shown, size = PAGE_SIZE, label }: { total: number; shown: number; size?: number; label: string }) {
  const [search, setSearch] = useSearchParams();
  const page = pageOf(search);
  const pages = pageCount(total, size);
  return (
    <nav className="pager" aria-label={`${label} pages`}>
      <button
        type="button"
        disabled={page <= 1}
        onClick={() => setSearch(withParams(search, { page: page - 1 > 1 ? page - 1 : null }))}
      >
        ← Previous
      </button>
      <span>
        {rangeText(page, shown, total, size)} · page {page} of {pages}
      </span>
      <button
        type="button"
        disabled={page >= pages}
        onClick={() => setSearch(withParams(search, { page: page + 1 }))}
      >
        Next →
      </button>
    </nav>
  );
}

export function Labels({ labels }: { labels: Record<string, string> }) {
  const entries = Object.entries(labels);
  if (entries.length === 0) return <span className="muted">none</span>;
  return (
    <ul className="labels">
      {entries.map(([key, value]) => (
        <li key={key}>
          <code>
            {key}={value}
          </code>
        </li>
      ))}
    </ul>
  );
}
