import { lazy, Suspense, useSyncExternalStore } from "react";
import { Navigate, Route, Routes, useLocation } from "react-router";
import { ApiError } from "./api/client";
import { useSession } from "./api/queries";
import { Layout } from "./components/Layout";
import { ErrorNote, Loading } from "./components/feedback";
import { connection } from "./lib/connection";
import { Overview } from "./routes/Overview";
import { SignIn } from "./routes/SignIn";

// Every view but the first one people see loads when first visited.
const Nodes = lazy(() => import("./routes/Nodes"));
const NodeDetail = lazy(() => import("./routes/NodeDetail"));
const Kernels = lazy(() => import("./routes/Kernels"));
const Programs = lazy(() => import("./routes/Programs"));
const ProgramDetail = lazy(() => import("./routes/ProgramDetail"));
const Policies = lazy(() => import("./routes/Policies"));
const PolicyDetail = lazy(() => import("./routes/PolicyDetail"));
const GitSources = lazy(() => import("./routes/GitSources"));
const GitSourceDetail = lazy(() => import("./routes/GitSourceDetail"));
// The policy editor brings CodeMirror: only this route loads it.
const Editor = lazy(() => import("./routes/Editor"));

function NotFound() {
  return (
    <>
      <h1>Not found</h1>
      <p>No view lives at this address.</p>
    </>
  );
}

/** Signed in: the views. Not (or no longer): the sign-in page, coming back here after. */
function Gate() {
  const session = useSession();
  const location = useLocation();
  const state = useSyncExternalStore(connection.subscribe, connection.get);
  const unauthorized =
    state.signedOut || (session.error instanceof ApiError && session.error.status === 401);
  if (unauthorized) {
    const next = location.pathname + location.search;
    return <Navigate to={`/sign-in?next=${encodeURIComponent(next)}`} replace />;
  }
  if (session.isPending) return <Loading what="your session" />;
  if (!session.data) return <ErrorNote error={session.error} retry={() => void session.refetch()} />;
  return (
    <Layout session={session.data}>
      <Suspense fallback={<Loading what="the view" />}>
        <Routes>
          <Route index element={<Overview />} />
          <Route path="nodes" element={<Nodes />} />
          <Route path="nodes/:name" element={<NodeDetail />} />
          <Route path="kernels" element={<Kernels />} />
          <Route path="programs" element={<Programs />} />
          <Route path="programs/:name" element={<ProgramDetail />} />
          <Route path="policies" element={<Policies />} />
          <Route path="policies/:namespace/:name" element={<PolicyDetail />} />
          <Route path="gitsources" element={<GitSources />} />
          <Route path="gitsources/:namespace/:name" element={<GitSourceDetail />} />
          <Route path="editor" element={<Editor />} />
          <Route path="*" element={<NotFound />} />
        </Routes>
      </Suspense>
    </Layout>
  );
}

export function App() {
  return (
    <Routes>
      <Route path="sign-in" element={<SignIn />} />
      <Route path="*" element={<Gate />} />
    </Routes>
  );
}
