import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { BrowserRouter } from "react-router";
import { ApiError } from "./api/client";
import { LIVE_MS } from "./api/queries";
import { App } from "./App";
import "./styles.css";

const queries = new QueryClient({
  defaultOptions: {
    queries: {
      refetchInterval: LIVE_MS,
      refetchIntervalInBackground: false,
      staleTime: 0,
      // A 4xx will not change by asking again; the next tick retries anything else.
      retry: (failures, error) => !(error instanceof ApiError && error.status < 500) && failures < 1,
      retryDelay: 500,
    },
  },
});

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <QueryClientProvider client={queries}>
        <BrowserRouter basename="/ui">
          <App />
        </BrowserRouter>
      </QueryClientProvider>
    </StrictMode>,
  );
}
