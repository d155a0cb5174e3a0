/**
 * The one way the dashboard reaches the API: a client typed from its OpenAPI document
 * (schema.d.ts, generated), on the same origin, signed in by the session cookie. Writes
 * carry the header the API requires of cookie sessions; a 401 sends the person to the
 * sign-in page; a failed connection is told apart from an API error.
 */
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";
import { connection } from "../lib/connection";

export type Schemas = components["schemas"];

export class ApiError extends Error {
  readonly status: number;
  readonly problems: string[];

  constructor(status: number, message: string, problems: string[] = []) {
    super(message);
    this.status = status;
    this.problems = problems;
  }
}

/** The API did not answer at all (down, or the network between). */
export class Unreachable extends Error {}

const UI_HEADER = "X-Requested-By";

const middleware: Middleware = {
  onRequest({ request }) {
    if (request.method !== "GET" && request.method !== "HEAD") {
      request.headers.set(UI_HEADER, "bpfleet-ui");
    }
    return request;
  },
  onResponse({ response, request }) {
    if (response.status === 401 && !new URL(request.url).pathname.endsWith("/v1/session")) {
      connection.signedOut();
    }
    return response;
  },
};

export const api = createClient<paths>({ baseUrl: window.location.origin, credentials: "same-origin" });
api.use(middleware);

function describe(error: unknown): { message: string; problems: string[] } {
  if (error && typeof error === "object" && "detail" in error) {
    const detail = (error as { detail: unknown }).detail;
    const problems = (error as { problems?: unknown }).problems;
    if (typeof detail === "string") {
      return { message: detail, problems: Array.isArray(problems) ? problems.map(String) : [] };
    }
    if (Array.isArray(detail)) {
      const lines = detail.map((item: { loc?: unknown[]; msg?: string }) =>
        `${(item.loc ?? []).slice(1).join(".")}: ${item.msg ?? ""}`,
      );
      return { message: lines.join("; "), problems: lines };
    }
  }
  return { message: "the API refused the request", problems: [] };
}

interface Answer<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** The body of a successful answer; an ApiError or Unreachable otherwise. */
export async function settle<T>(call: Promise<Answer<T>>): Promise<{ data: T; total: number | null }> {
  let answer: Answer<T>;
  try {
    answer = await call;
  } catch (error) {
    connection.failed();
    throw new Unreachable(error instanceof Error ? error.message : "the API is unreachable");
  }
  const { data, error, response } = answer;
  if (response.status >= 500) connection.failed();
  else connection.answered();
  if (!response.ok) {
    const { message, problems } = describe(error);
    throw new ApiError(response.status, message, problems);
  }
  const total = response.headers.get("X-Total-Count");
  return { data: data as T, total: total === null ? null : Number(total) };
}

/** Just the body. */
export async function body<T>(call: Promise<Answer<T>>): Promise<T> {
  return (await settle(call)).data;
}
