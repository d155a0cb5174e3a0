import { useSearchParams } from "react-router";
import { withParams } from "../lib/params";

export interface Tab {
  id: string;
  label: string;
}

/** Tabs whose choice is the URL's ``tab`` parameter (reload and Back keep it). */
export function useTab(tabs: Tab[]): string {
  const [search] = useSearchParams();
  const wanted = search.get("tab");
  return tabs.some((tab) => tab.id === wanted) ? (wanted as string) : (tabs[0]?.id ?? "");
}

export function Tabs({ tabs, label }: { tabs: Tab[]; label: string }) {
  const [search, setSearch] = useSearchParams();
  const current = useTab(tabs);
  return (
    <div className="tabs" role="tablist" aria-label={label}>
      {tabs.map((tab) => (
        <button
          key={tab.id}
          type="button"
          role="tab"
          id={`tab-${tab.id}`}
          aria-selected={tab.id === current}
          aria-controls={`panel-${tab.id}`}
          onClick={() => setSearch(withParams(search, { tab: tab.id, open: null }))}
        >
          {tab.label}
        </button>
      ))}
    </div>
  );
}

export function TabPanel({ id, children }: { id: string; children: React.ReactNode }) {
  return (
    <div role="tabpanel" id={`panel-${id}`} aria-labelledby={`tab-${id}`}>
      {children}
    </div>
  );
}
