/**
 * The policy editor's route. Where the text comes from is in the URL, so a link opens
 * the same thing again:
 *   ?policy=ns/name[&line=N][&mode=enforce]  a policy in force (its Git file when it came
 *                                             from a GitSource, else the API's YAML)
 *   ?source=ns/name&path=P[&revision=R][&line=N]  a GitSource's file at a revision
 *   ?template=ID&namespace=NS[&peer=NS]       a template
 *   ?lesson=ID                                a lesson of the tutorial
 * Without any, the start page: policies, templates, lessons.
 */
import { useQuery } from "@tanstack/react-query";
import { useContext, useState } from "react";
import { Link, useSearchParams } from "react-router";
import { ErrorNote, Loading } from "../components/feedback";
import { useTemplates, useTutorial, usePolicyList, openFile, openStored, type Opened } from "../editor/queries";
import { Workbench, type Start } from "../editor/Workbench";
import { SessionContext } from "../session";
import "../editor/editor.css";

const DONE_KEY = "bpfleet-lessons-done";

function lessonsDone(): string[] {
  try {
    const stored: unknown = JSON.parse(window.sessionStorage.getItem(DONE_KEY) ?? "[]");
    return Array.isArray(stored) ? stored.map(String) : [];
  } catch {
    return [];
  }
}

function markDone(id: string): void {
  window.sessionStorage.setItem(DONE_KEY, JSON.stringify([...new Set([...lessonsDone(), id])]));
}

function lineOf(search: URLSearchParams): number | null {
  const line = Number.parseInt(search.get("line") ?? "", 10);
  return Number.isFinite(line) && line > 0 ? line : null;
}

function StartPage() {
  const policies = usePolicyList();
  const tutorial = useTutorial();
  const [namespace, setNamespace] = useState("default");
  const [peer, setPeer] = useState("monitoring");
  const templates = useTemplates(namespace, peer);
  const done = lessonsDone();
  return (
    <>
      <h1>Policy editor</h1>
      <p>
        Open a policy in force, start from a template, or learn with the tutorial. The API judges every keystroke: problems,
        lints, ratings, who may connect, flow tests. Nothing is written to the fleet from here.
      </p>
      <div className="start-columns">
        <section aria-labelledby="open-policy">
          <h2 id="open-policy">Open a policy</h2>
          {policies.error && <ErrorNote error={policies.error} retry={() => void policies.refetch()} />}
          {policies.data && (
            <ul className="plain">
              {policies.data.map((policy) => (
                <li key={`${policy.namespace}/${policy.name}`}>
                  <Link to={`/editor?policy=${encodeURIComponent(`${policy.namespace}/${policy.name}`)}`}>
                    {policy.namespace}/{policy.name}
                  </Link>{" "}
                  <span className="muted">
                    {policy.mode}, {policy.origin ? `from GitSource ${policy.origin.namespace}/${policy.origin.name}` : "set through the API"}
                  </span>
                </li>
              ))}
              {policies.data.length === 0 && <li className="muted">No policy in the fleet yet.</li>}
            </ul>
          )}
        </section>
        <section aria-labelledby="templates">
          <h2 id="templates">Start from a template</h2>
          <div className="toolbar">
            <label>
              Namespace <input value={namespace} onChange={(event) => setNamespace(event.target.value)} />
            </label>
            <label>
              Other namespace <input value={peer} onChange={(event) => setPeer(event.target.value)} />
            </label>
          </div>
          {templates.error && <ErrorNote error={templates.error} />}
          <ul className="plain">
            {(templates.data ?? []).map((template) => (
              <li key={template.id}>
                <Link
                  to={`/editor?template=${template.id}&namespace=${encodeURIComponent(namespace)}&peer=${encodeURIComponent(peer)}`}
                >
                  {template.title}
                </Link>{" "}
                <span className="muted">{template.description}</span>
              </li>
            ))}
          </ul>
        </section>
        <section aria-labelledby="tutorial">
          <h2 id="tutorial">Tutorial</h2>
          <p className="small">
            Each lesson opens a policy that misses its goal; it is done when its flow tests pass, on a demo topology.
          </p>
          <ol>
            {(tutorial.data?.lessons ?? []).map((lesson) => (
              <li key={lesson.id}>
                <Link to={`/editor?lesson=${lesson.id}`}>{lesson.title}</Link>{" "}
                {done.includes(lesson.id) && (
                  <span className="badge badge-ok" data-state="done">
                    <span aria-hidden="true">✓</span> done
                  </span>
                )}
              </li>
            ))}
          </ol>
        </section>
      </div>
    </>
  );
}

function useStart(search: URLSearchParams): { start: Start | null; error: unknown; loading: string | null } {
  const policy = search.get("policy");
  const source = search.get("source");
  const path = search.get("path");
  const revision = search.get("revision");
  const template = search.get("template");
  const lesson = search.get("lesson");
  const namespace = search.get("namespace") ?? "default";
  const peer = search.get("peer") ?? "monitoring";
  const line = lineOf(search);
  const mode = search.get("mode");
  const tutorial = useTutorial();
  const templates = useTemplates(template ? namespace : "", peer);
  const opened = useQuery({
    queryKey: ["editor", "open", policy, source, path, revision],
    queryFn: (): Promise<Opened> => {
      if (policy) {
        const [ns = "", name = ""] = policy.split("/");
        return openStored(ns, name);
      }
      return openFile(source ?? "", path ?? "", revision);
    },
    enabled: Boolean(policy || (source && path)),
    staleTime: Infinity,
    refetchInterval: false,
  });
  const base: Pick<Start, "flows" | "topology" | "line" | "mode" | "errors" | "lesson"> = {
    flows: "",
    topology: null,
    line,
    mode: mode === "enforce" || mode === "audit" ? mode : null,
    errors: [],
    lesson: null,
  };
  if (lesson) {
    if (!tutorial.data) return { start: null, error: tutorial.error, loading: "the tutorial" };
    const found = tutorial.data.lessons.find((item) => item.id === lesson);
    if (!found) return { start: null, error: new Error(`There is no lesson "${lesson}".`), loading: null };
    return {
      start: {
        ...base,
        key: `lesson/${found.id}`,
        text: found.start,
        title: `Lesson ${tutorial.data.lessons.indexOf(found) + 1}: ${found.title}`,
        origin: "a lesson of the tutorial, on its demo topology",
        flows: found.flows,
        topology: tutorial.data.topology,
        lesson: { title: found.title, goal: found.goal, solution: found.solution },
        onLessonDone: () => markDone(found.id),
      },
      error: null,
      loading: null,
    };
  }
  if (template) {
    if (!templates.data) return { start: null, error: templates.error, loading: "the templates" };
    const found = templates.data.find((item) => item.id === template);
    if (!found) return { start: null, error: new Error(`There is no template "${template}".`), loading: null };
    return {
      start: { ...base, key: `template/${template}/${namespace}/${peer}`, text: found.text, title: found.id, origin: `the template "${found.title}"` },
      error: null,
      loading: null,
    };
  }
  if (policy || (source && path)) {
    if (!opened.data) return { start: null, error: opened.error, loading: policy ?? path };
    return {
      start: {
        ...base,
        key: `open/${policy}/${source}/${path}/${revision}`,
        text: opened.data.text,
        title: opened.data.title,
        origin: opened.data.origin,
        errors: opened.data.errors ?? [],
      },
      error: null,
      loading: null,
    };
  }
  return { start: null, error: null, loading: null };
}

export default function Editor() {
  const [search] = useSearchParams();
  const session = useContext(SessionContext);
  const { start, error, loading } = useStart(search);
  if (error) return <ErrorNote error={error} />;
  if (loading) return <Loading what={loading} />;
  if (!start) return <StartPage />;
  return (
    <>
      <p className="crumbs">
        <Link to="/editor">Policy editor</Link> /
      </p>
      <h1>{start.title}</h1>
      <p className="muted" data-testid="opened-from">
        Opened from {start.origin}.
      </p>
      <Workbench key={start.key} start={start} readOnly={session?.role === "viewer"} />
    </>
  );
}
