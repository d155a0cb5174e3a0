import { useEffect, useState, useSyncExternalStore } from "react";
import { NavLink, useNavigate } from "react-router";
import { useSignOut } from "../api/queries";
import { connection } from "../lib/connection";
import { clock, duration } from "../lib/format";
import { SessionContext, type Session } from "../session";

const VIEWS = [
  { to: "/", label: "Overview", end: true },
  { to: "/nodes", label: "Nodes" },
  { to: "/kernels", label: "Kernels" },
  { to: "/programs", label: "Programs" },
  { to: "/policies", label: "Policies" },
  { to: "/gitsources", label: "GitSources" },
  { to: "/editor", label: "Policy editor" },
];

export function useNow(everyMs = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = window.setInterval(() => setNow(Date.now()), everyMs);
    return () => window.clearInterval(timer);
  }, [everyMs]);
  return now;
}

function Freshness() {
  const state = useSyncExternalStore(connection.subscribe, connection.get);
  const now = useNow();
  if (state.lastAnswer === null) return null;
  return (
    <span className="freshness" data-testid="freshness">
      Updated {duration(Math.max(0, (now - state.lastAnswer) / 1000))} ago
    </span>
  );
}

function Unreachable() {
  const state = useSyncExternalStore(connection.subscribe, connection.get);
  if (state.reachable) return null;
  return (
    <div className="banner banner-bad" role="alert">
      <strong>The API is unreachable.</strong> What you see is stale: the last data arrived at{" "}
      {state.lastAnswer === null ? "no time yet" : clock(state.lastAnswer)}. Retrying every few seconds.
    </div>
  );
}

export function Layout({ session, children }: { session: Session; children: React.ReactNode }) {
  const signOut = useSignOut();
  const navigate = useNavigate();
  const state = useSyncExternalStore(connection.subscribe, connection.get);
  return (
    <SessionContext value={session}>
      <a className="skip" href="#content">
        Skip to content
      </a>
      <header className="top">
        <span className="brand">bpfleet</span>
        <nav aria-label="Views">
          <ul>
            {VIEWS.map((view) => (
              <li key={view.to}>
                <NavLink to={view.to} end={view.end}>
                  {view.label}
                </NavLink>
              </li>
            ))}
          </ul>
        </nav>
        <div className="who">
          <Freshness />
          <span>
            {session.name} <span className="role">({session.role})</span>
          </span>
          <button
            type="button"
            onClick={() =>
              signOut.mutate(undefined, { onSettled: () => navigate("/sign-in", { replace: true }) })
            }
          >
            Sign out
          </button>
        </div>
      </header>
      <Unreachable />
      <main id="content" className={state.reachable ? undefined : "stale"} tabIndex={-1}>
        {children}
      </main>
    </SessionContext>
  );
}
