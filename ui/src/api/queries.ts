/** The dashboard's reads and writes, as TanStack Query hooks over the typed client. Every
 * read refreshes every couple of seconds (the API answers 304 when nothing changed). */
import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { api, body, settle, type Schemas } from "./client";

export const LIVE_MS = 2000;

export type Page<T> = { items: T; total: number };

async function page<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<Page<T>> {
  const { data, total } = await settle(call);
  return { items: data, total: total ?? 0 };
}

export function useSession() {
  return useQuery({
    queryKey: ["session"],
    queryFn: () => body(api.GET("/v1/session")),
    retry: false,
    refetchInterval: 60_000,
  });
}

export function useOverview() {
  return useQuery({ queryKey: ["overview"], queryFn: () => body(api.GET("/v1/overview")) });
}

export interface NodeFilter {
  selector?: string;
  readiness?: "Ready" | "NotReady" | "Unknown";
  sort?: string;
  limit: number;
  offset: number;
}

export function useNodes(filter: NodeFilter) {
  return useQuery({
    queryKey: ["nodes", filter],
    queryFn: () =>
      page(
        api.GET("/v1/nodes", {
          params: {
            query: {
              selector: filter.selector || undefined,
              readiness: filter.readiness,
              sort: (filter.sort || "name") as "name",
              limit: filter.limit,
              offset: filter.offset,
            },
          },
        }),
      ),
    placeholderData: keepPreviousData,
  });
}

export function useNode(name: string) {
  return useQuery({
    queryKey: ["node", name],
    queryFn: () => body(api.GET("/v1/nodes/{name}", { params: { path: { name } } })),
  });
}

export function usePreflight(name: string | null) {
  return useQuery({
    queryKey: ["preflight", name],
    queryFn: () => body(api.GET("/v1/nodes/{name}/preflight", { params: { path: { name: name ?? "" } } })),
    enabled: name !== null,
  });
}

export function useKernels(selector: string, limit: number, offset: number) {
  return useQuery({
    queryKey: ["kernels", selector, limit, offset],
    queryFn: () =>
      body(api.GET("/v1/kernels", { params: { query: { selector: selector || undefined, limit, offset } } })),
    placeholderData: keepPreviousData,
  });
}

export function useCompare(a: string | null, b: string | null) {
  return useQuery({
    queryKey: ["compare", a, b],
    queryFn: () => body(api.GET("/v1/kernels/compare", { params: { query: { a: a ?? "", b: b ?? "" } } })),
    enabled: Boolean(a && b),
  });
}

export type ProgramStatus = Schemas["ProgramView"]["status"];

export function usePrograms(status: ProgramStatus | undefined, limit: number, offset: number) {
  return useQuery({
    queryKey: ["programs", status, limit, offset],
    queryFn: () => page(api.GET("/v1/programs", { params: { query: { status, limit, offset } } })),
    placeholderData: keepPreviousData,
  });
}

export function useProgram(name: string) {
  return useQuery({
    queryKey: ["program", name],
    queryFn: () => body(api.GET("/v1/programs/{name}", { params: { path: { name } } })),
  });
}

export function useProgramNodes(name: string) {
  return useQuery({
    queryKey: ["program", name, "nodes"],
    queryFn: () => body(api.GET("/v1/programs/{name}/nodes", { params: { path: { name } } })),
  });
}

export function useProgramEvents(name: string) {
  return useQuery({
    queryKey: ["program", name, "events"],
    queryFn: () => body(api.GET("/v1/programs/{name}/events", { params: { path: { name }, query: { limit: 200 } } })),
  });
}

export function useProgress(name: string, enabled: boolean) {
  return useQuery({
    queryKey: ["program", name, "progress"],
    queryFn: () => body(api.GET("/v1/programs/{name}/progress", { params: { path: { name } } })),
    enabled,
  });
}

export type PolicyStatus = Schemas["PolicyView"]["status"];

export function usePolicies(status: PolicyStatus | undefined, namespace: string | undefined, limit: number, offset: number) {
  return useQuery({
    queryKey: ["policies", status, namespace, limit, offset],
    queryFn: () =>
      page(api.GET("/v1/policies", { params: { query: { status, namespace: namespace || undefined, limit, offset } } })),
    placeholderData: keepPreviousData,
  });
}

export function usePolicy(namespace: string, name: string) {
  return useQuery({
    queryKey: ["policy", namespace, name],
    queryFn: () => body(api.GET("/v1/policies/{namespace}/{name}", { params: { path: { namespace, name } } })),
  });
}

export function usePolicyNodes(namespace: string, name: string) {
  return useQuery({
    queryKey: ["policy", namespace, name, "nodes"],
    queryFn: () => body(api.GET("/v1/policies/{namespace}/{name}/nodes", { params: { path: { namespace, name } } })),
  });
}

export function useSources() {
  return useQuery({ queryKey: ["gitsources"], queryFn: () => body(api.GET("/v1/gitsources")) });
}

export function useSource(namespace: string, name: string) {
  return useQuery({
    queryKey: ["gitsource", namespace, name],
    queryFn: () => body(api.GET("/v1/gitsources/{namespace}/{name}", { params: { path: { namespace, name } } })),
  });
}

/** After a write, read again at once rather than at the next tick. */
function useRefresh() {
  const client = useQueryClient();
  return () => client.invalidateQueries();
}

export function useRolloutAction() {
  const refresh = useRefresh();
  return useMutation({
    mutationFn: ({ id, action }: { id: number; action: "pause" | "resume" | "abort" }) =>
      body(api.POST("/v1/rollouts/{rollout_id}/{action}", { params: { path: { rollout_id: id, action } } })),
    onSuccess: refresh,
  });
}

export function useKill() {
  const refresh = useRefresh();
  return useMutation({
    mutationFn: (name: string) => body(api.POST("/v1/programs/{name}/kill", { params: { path: { name } } })),
    onSuccess: refresh,
  });
}

export function useReconcile() {
  const refresh = useRefresh();
  return useMutation({
    mutationFn: ({ namespace, name }: { namespace: string; name: string }) =>
      body(api.POST("/v1/gitsources/{namespace}/{name}/reconcile", { params: { path: { namespace, name } } })),
    onSuccess: refresh,
  });
}

export function useSignIn() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (token: string) => body(api.POST("/v1/session", { body: { token } })),
    onSuccess: (session) => {
      client.clear();
      client.setQueryData(["session"], session);
    },
  });
}

export function useSignOut() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: () => body(api.DELETE("/v1/session")),
    onSettled: () => client.clear(),
  });
}

/** Proposals declaring one policy ("namespace/name"), newest first. */
export function usePolicyProposals(policy: string) {
  return useQuery({
    queryKey: ["proposals", "policy", policy],
    queryFn: () => body(api.GET("/v1/proposals", { params: { query: { policy, limit: 20, offset: 0 } } })),
    enabled: Boolean(policy),
  });
}

export function useProposal(id: number | null) {
  return useQuery({
    queryKey: ["proposal", id],
    queryFn: () => body(api.GET("/v1/proposals/{proposal_id}", { params: { path: { proposal_id: id ?? 0 } } })),
    enabled: id !== null,
  });
}

/** Dev merge of a pushed proposal (where its GitSource allows it). */
export function useMergeProposal() {
  const refresh = useRefresh();
  return useMutation({
    mutationFn: (id: number) => body(api.POST("/v1/proposals/{proposal_id}/merge", { params: { path: { proposal_id: id } } })),
    onSuccess: refresh,
  });
}
