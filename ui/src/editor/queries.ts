/** The policy editor's reads: the API judges every keystroke's text (validate, simulate,
 * explain) and serves where a policy starts (stored, in Git, a template, a lesson). Kept
 * apart from the dashboard's queries so they load with the editor only. */
import { keepPreviousData, useQuery } from "@tanstack/react-query";
import { api, body, type Schemas } from "../api/client";

export type Simulation = Schemas["SimulationView"];
export type Diagram = Schemas["DiagramView"];
export type Topology = Schemas["TutorialView"]["topology"];
export type Protocol = "TCP" | "UDP" | "SCTP";

/** Answers to a text stay right for that text: never refetched on a timer. */
const ONCE = { staleTime: Infinity, refetchInterval: false as const, placeholderData: keepPreviousData };

/** An answer with the text it is about: the text may have moved on since. */
export interface About<T> {
  text: string;
  answer: T;
}

export function useValidation(text: string) {
  return useQuery({
    queryKey: ["editor", "validate", text],
    queryFn: async (): Promise<About<Schemas["ValidationView"]>> => ({
      text,
      answer: await body(api.POST("/v1/policies/validate", { body: { text } })),
    }),
    ...ONCE,
  });
}

export interface SimulateOptions {
  protocol: Protocol;
  port: number;
  thisPolicyOnly: boolean;
  flows: string;
  everyone: boolean;
  topology: Topology | null;
}

export const MATRIX_LIMIT = 16;

export function useSimulation(text: string, options: SimulateOptions) {
  return useQuery({
    queryKey: ["editor", "simulate", text, options],
    queryFn: async (): Promise<About<Simulation>> => ({
      text,
      answer: await body(
        api.POST("/v1/policies/simulate", {
          body: {
            text,
            protocol: options.protocol,
            port: options.port,
            thisPolicyOnly: options.thisPolicyOnly,
            flows: options.flows.trim() ? options.flows : null,
            endpoints: options.everyone ? "all" : "relevant",
            limit: options.everyone ? 60 : MATRIX_LIMIT,
            topology: options.topology,
          },
        }),
      ),
    }),
    ...ONCE,
    // The fleet changes under a draft too: judge it again now and then.
    refetchInterval: options.topology ? false : 15_000,
  });
}

export interface Cell {
  client: string;
  server: string;
}

export function useExplanation(text: string, cell: Cell | null, options: SimulateOptions) {
  return useQuery({
    queryKey: ["editor", "explain", text, cell, options.protocol, options.port, options.thisPolicyOnly, options.topology],
    queryFn: () =>
      body(
        api.POST("/v1/policies/explain", {
          body: {
            text,
            client: cell?.client ?? "",
            server: cell?.server ?? "",
            protocol: options.protocol,
            port: options.port,
            thisPolicyOnly: options.thisPolicyOnly,
            topology: options.topology,
          },
        }),
      ),
    enabled: cell !== null,
    ...ONCE,
  });
}

export function useVocabulary() {
  return useQuery({
    queryKey: ["editor", "labels"],
    queryFn: () => body(api.GET("/v1/topology/labels")),
    refetchInterval: 30_000,
  });
}

export function useTemplates(namespace: string, peerNamespace: string) {
  return useQuery({
    queryKey: ["editor", "templates", namespace, peerNamespace],
    queryFn: () =>
      body(api.GET("/v1/policies/templates", { params: { query: { namespace, peerNamespace } } })),
    enabled: Boolean(namespace && peerNamespace),
    ...ONCE,
  });
}

export function useTutorial() {
  return useQuery({
    queryKey: ["editor", "lessons"],
    queryFn: () => body(api.GET("/v1/policies/lessons")),
    ...ONCE,
  });
}

/** Where an opened policy's text comes from, and the text. */
export interface Opened {
  text: string;
  title: string;
  origin: string;
  policy?: { namespace: string; name: string };
  /** The file's text at a rejected revision, with its problems. */
  errors?: Schemas["SourceError"][];
}

export async function openStored(namespace: string, name: string): Promise<Opened> {
  const path = { namespace, name };
  const view = await body(api.GET("/v1/policies/{namespace}/{name}", { params: { path } }));
  if (view.origin) {
    const found = await body(api.GET("/v1/policies/{namespace}/{name}/source", { params: { path } }));
    return {
      text: found.text,
      title: `${namespace}/${name}`,
      origin: `${found.path} in GitSource ${found.namespace}/${found.name} @ ${found.shortRevision} (applied)`,
      policy: path,
    };
  }
  const text = await body(
    api.GET("/v1/policies/{namespace}/{name}/yaml", { params: { path }, parseAs: "text" }),
  );
  return { text: String(text), title: `${namespace}/${name}`, origin: "the API: set through the API, not from Git", policy: path };
}

export async function openFile(source: string, path: string, revision: string | null): Promise<Opened> {
  const [namespace = "", name = ""] = source.split("/");
  const found = await body(
    api.GET("/v1/gitsources/{namespace}/{name}/file", {
      params: { path: { namespace, name }, query: { path, revision: revision ?? undefined } },
    }),
  );
  const state = found.applied ? "applied" : "not applied";
  return {
    text: found.text,
    title: path,
    origin: `${found.path} in GitSource ${found.namespace}/${found.name} @ ${found.shortRevision} (${state})`,
    errors: found.errors,
  };
}

export function usePolicyList() {
  return useQuery({
    queryKey: ["editor", "policies"],
    queryFn: () => body(api.GET("/v1/policies", { params: { query: { limit: 200, offset: 0 } } })),
  });
}
