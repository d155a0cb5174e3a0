/** The editor's way to Git: what proposing a draft would send (the API's preview), the
 * proposal itself, and drafts shared by link. Nothing here writes a policy or a program:
 * a proposal is a commit the operator makes. */
import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { api, body, type Schemas } from "../api/client";
import type { Protocol } from "./queries";

export type Preview = Schemas["ProposalPreview"];
export type SourceRef = Schemas["SourceRefView"];

/** Where a draft goes in Git, when it came from there. */
export interface GitPlace {
  source: SourceRef;
  path: string;
  baseRevision: string | null;
}

export interface PreviewAsk {
  text: string;
  flows: string;
  place: GitPlace | null;
  /** Chosen in the dialog, over ``place``. */
  source: SourceRef | null;
  path: string | null;
  protocol: Protocol;
  port: number;
}

export function usePreview(ask: PreviewAsk, enabled: boolean) {
  const source = ask.source ?? ask.place?.source ?? null;
  const samePlace = ask.place && source && ask.place.source.namespace === source.namespace && ask.place.source.name === source.name;
  return useQuery({
    queryKey: ["editor", "preview", ask],
    queryFn: () =>
      body(
        api.POST("/v1/proposals/preview", {
          body: {
            text: ask.text,
            flows: ask.flows.trim() ? ask.flows : null,
            source,
            path: ask.path ?? (samePlace ? ask.place?.path : null) ?? null,
            baseRevision: samePlace ? (ask.place?.baseRevision ?? null) : null,
            protocol: ask.protocol,
            port: ask.port,
          },
        }),
      ),
    enabled,
    staleTime: Infinity,
    refetchInterval: false,
    placeholderData: keepPreviousData,
  });
}

export function usePropose() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (request: Schemas["ProposalRequest"]) => body(api.POST("/v1/proposals", { body: request })),
    onSuccess: () => client.invalidateQueries({ queryKey: ["proposals"] }),
  });
}

export function useShareDraft() {
  return useMutation({
    mutationFn: (draft: Schemas["SharedDraft"]) => body(api.POST("/v1/drafts", { body: draft })),
  });
}

export async function openDraft(id: string): Promise<Schemas["SharedDraftView"]> {
  return body(api.GET("/v1/drafts/{draft_id}", { params: { path: { draft_id: id } } }));
}
