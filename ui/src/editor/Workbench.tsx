/**
 * The editor at work on one text: the YAML on the left, the diagram on the right, and
 * under them what the API says of the draft at each keystroke (problems on their lines,
 * lints with fixes and proofs, ratings, the matrix and its explanations, flow tests).
 * Everything judged comes from the API; here text is edited and answers are arranged.
 * Nothing here writes to the fleet: reads only (validate, simulate, explain).
 */
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { useSearchParams } from "react-router";
import type { Schemas } from "../api/client";
import { TabPanel, Tabs, useTab } from "../components/Tabs";
import { ErrorNote } from "../components/feedback";
import { withParams } from "../lib/params";
import { Changes } from "./Changes";
import { Diagram, InternetObject } from "./Diagram";
import { appendRule, applyEdits, EditFailed, type Edit } from "./edits";
import { ExplainPanel } from "./Explain";
import { FlowTests } from "./Flows";
import { Lints, Ratings } from "./Findings";
import { cellParam, parseCell, ruleAtLine, ruleKey } from "./layout";
import { Matrix } from "./Matrix";
import { PeerPicker } from "./PeerPicker";
import {
  type Protocol,
  type SimulateOptions,
  type Topology,
  useExplanation,
  useSimulation,
  useValidation,
} from "./queries";
import { YamlEditor, type Problem, type YamlEditorHandle } from "./YamlEditor";

type Fix = Schemas["FixView"];
type Rule = Schemas["DiagramRuleView"];

export interface Start {
  key: string;
  text: string;
  title: string;
  origin: string;
  flows: string;
  topology: Topology | null;
  line: number | null;
  /** Switch to this mode once the API says how (from "Promote to enforce"). */
  mode: "enforce" | "audit" | null;
  /** The rejection's problems in this file, as the GitSource reported them. */
  errors: Schemas["SourceError"][];
  lesson: { title: string; goal: string; solution: string } | null;
  onLessonDone?: () => void;
}

const TABS = [
  { id: "findings", label: "Lints and rating" },
  { id: "matrix", label: "Connectivity" },
  { id: "flows", label: "Flow tests" },
  { id: "peer", label: "Add a peer" },
  { id: "changes", label: "Changes" },
];

/** ``value``, once it has stayed the same for ``ms``. */
function useSettled<T>(value: T, ms: number): T {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const timer = window.setTimeout(() => setSettled(value), ms);
    return () => window.clearTimeout(timer);
  }, [value, ms]);
  return settled;
}

function download(name: string, text: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: "application/yaml" }));
  const anchor = document.createElement("a");
  anchor.href = url;
  anchor.download = name;
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function Workbench({ start, readOnly }: { start: Start; readOnly: boolean }) {
  const editor = useRef<YamlEditorHandle>(null);
  const [search, setSearch] = useSearchParams();
  const tab = useTab(TABS);
  const [text, setText] = useState(start.text);
  const [flows, setFlows] = useState(start.flows);
  const [litRule, setLitRule] = useState<string | null>(null);
  const [litLines, setLitLines] = useState<[number, number] | null>(null);
  const [editError, setEditError] = useState<string | null>(null);
  const [documentIndex, setDocumentIndex] = useState(0);

  const protocol = (["TCP", "UDP", "SCTP"].includes(search.get("protocol") ?? "") ? search.get("protocol") : "TCP") as Protocol;
  const port = Math.min(65535, Math.max(1, Number.parseInt(search.get("port") ?? "", 10) || 80));
  const options: SimulateOptions = {
    protocol,
    port,
    thisPolicyOnly: search.get("only") === "1",
    flows: useSettled(flows, 150),
    everyone: search.get("all") === "1",
    topology: start.topology,
  };
  const cell = parseCell(search.get("cell"));

  const validating = useSettled(text, 90);
  const simulating = useSettled(text, 200);
  const validation = useValidation(validating);
  const simulation = useSimulation(simulating, options);
  const explanation = useExplanation(simulating, cell, options);
  const simulated = simulation.data?.text === text ? simulation.data.answer : null;
  const answer = simulation.data?.answer ?? null;

  /** Write the API's edits into the text; what went wrong, if anything. */
  const writeEdits = useCallback((edits: Edit[], document: number | null): string | null => {
    const current = editor.current;
    if (!current) return null;
    try {
      current.replace(applyEdits(current.text(), edits, document ?? 0));
      return null;
    } catch (error) {
      return error instanceof EditFailed ? error.message : String(error);
    }
  }, []);
  const applyFix = useCallback(
    (edits: Edit[], document: number | null) => setEditError(writeEdits(edits, document)),
    [writeEdits],
  );

  // The API's problems and lints for the text on screen, on their lines.
  useEffect(() => {
    const checked = validation.data;
    if (!checked || checked.text !== text) return;
    const problems: Problem[] = checked.answer.problems.map((problem) => ({
      severity: problem.severity,
      message: problem.text,
      line: problem.line,
      column: problem.column,
      endLine: problem.endLine,
      endColumn: problem.endColumn,
    }));
    if (simulated) {
      for (const lint of simulated.lints) {
        if (lint.line === null) continue;
        problems.push({
          severity: lint.severity,
          message: `${lint.code}: ${lint.message}`,
          line: lint.line,
          column: lint.column ?? 1,
          endLine: lint.endLine ?? lint.line,
          endColumn: lint.endColumn ?? 1,
          fixes: readOnly ? [] : lint.fixes.map((fix) => ({ title: fix.title, apply: () => applyFix(fix.edits, lint.document) })),
        });
      }
    }
    editor.current?.problems(problems, text);
  }, [validation.data, simulated, text, readOnly, applyFix]);

  // Opened at a line (a rejected revision's problem, a stored rule): the cursor there.
  useEffect(() => {
    if (start.line !== null) editor.current?.select(start.line);
  }, [start.key, start.line]);

  // "Promote to enforce": switch the mode the way the API says, once.
  const promoted = useRef(false);
  useEffect(() => {
    if (promoted.current || !start.mode || !answer) return;
    const change = answer.diagrams[0]?.modeChanges.find((item) => item.mode === start.mode);
    promoted.current = true;
    if (change) writeEdits(change.fix.edits, answer.diagrams[0]?.document ?? 0);
  }, [answer, start.mode, writeEdits]);

  const doneReported = useRef(false);
  const flowResult = answer?.flows ?? null;
  const lessonDone = Boolean(start.lesson && flowResult && flowResult.results.length > 0 && flowResult.failed === 0 && flowResult.problems.length === 0 && simulated);
  useEffect(() => {
    if (lessonDone && !doneReported.current) {
      doneReported.current = true;
      start.onLessonDone?.();
    }
  }, [lessonDone, start]);

  const diagrams = answer?.diagrams ?? [];
  const diagram = diagrams[Math.min(documentIndex, Math.max(0, diagrams.length - 1))] ?? null;
  const selection = diagram ? (answer?.selected.find((item) => item.policy === diagram.policy) ?? null) : null;
  const rules = useMemo(() => diagram?.rules ?? [], [diagram]);

  const onLine = useCallback(
    (line: number | null) => {
      const rule = line === null ? null : ruleAtLine(rules, line);
      setLitRule(rule ? ruleKey(rule) : null);
    },
    [rules],
  );
  const light = (rule: Rule | null) => {
    setLitRule(rule ? ruleKey(rule) : null);
    setLitLines(rule && rule.line !== null ? [rule.line, rule.endLine ?? rule.line] : null);
  };
  const selectRule = (rule: Rule) => {
    if (rule.line !== null) editor.current?.select(rule.line, rule.endLine ?? rule.line);
  };
  const go = (line: number) => editor.current?.select(line);
  const set = (changes: Record<string, string | number | null>) => setSearch(withParams(search, changes), { replace: true });
  const choosePort = (value: string) => {
    if (Number(value) !== port) set({ port: value, cell: null });
  };
  const problems = validation.data?.text === text ? validation.data.answer.problems : null;
  const errors = problems?.filter((problem) => problem.severity === "error") ?? [];
  const name = (start.title.split("/").pop() || "policy").replace(/\.ya?ml$/, "");

  return (
    <>
      {start.lesson && (
        <section className="lesson" aria-label="Lesson">
          <h2>Lesson: {start.lesson.title}</h2>
          <p>{start.lesson.goal}</p>
          <p role="status" data-testid="lesson-state">
            {lessonDone ? (
              <span className="badge badge-ok" data-state="done">
                <span aria-hidden="true">✓</span> Lesson done: every flow test passes
              </span>
            ) : (
              <span className="badge badge-busy" data-state="open">
                <span aria-hidden="true">…</span> Not done yet: {flowResult ? `${flowResult.failed} flow test(s) fail` : "judging"}
              </span>
            )}
          </p>
          <details>
            <summary>Show a solution</summary>
            <pre className="log" tabIndex={0}>
              {start.lesson.solution}
            </pre>
          </details>
        </section>
      )}
      <div className="toolbar editor-toolbar">
        {diagram && !readOnly && (
          <fieldset className="mode-toggle">
            <legend>Mode</legend>
            {(["enforce", "audit"] as const).map((mode) => {
              const change = diagram.modeChanges.find((item) => item.mode === mode);
              return (
                <button
                  key={mode}
                  type="button"
                  aria-pressed={diagram.mode === mode}
                  disabled={diagram.mode === mode || !change}
                  onClick={() => change && applyFix(change.fix.edits, diagram.document)}
                >
                  {mode}
                </button>
              );
            })}
          </fieldset>
        )}
        {diagram && readOnly && <span>Mode: {diagram.mode}</span>}
        <label>
          <input type="checkbox" checked={options.thisPolicyOnly} onChange={(event) => set({ only: event.target.checked ? "1" : null })} /> This policy only
        </label>
        {!readOnly && (
          <>
            <button type="button" onClick={() => editor.current?.undo()}>
              Undo
            </button>
            <button type="button" onClick={() => editor.current?.redo()}>
              Redo
            </button>
          </>
        )}
        <button type="button" onClick={() => download(`${name}.yaml`, editor.current?.text() ?? text)}>
          Download YAML
        </button>
        {readOnly && <span className="muted">Read-only: your role may look, not change.</span>}
      </div>
      {editError && <ErrorNote error={new Error(`That edit does not fit the text: ${editError}`)} />}
      <div className="editor-grid">
        <section aria-label="YAML" className="editor-text">
          <YamlEditor
            ref={editor}
            key={start.key}
            initial={start.text}
            label="Policy YAML"
            readOnly={readOnly}
            onChange={setText}
            onLine={onLine}
            lit={litLines}
          />
          <div className="problems-list" aria-live="polite">
            {problems === null ? (
              <p className="muted small">Checking…</p>
            ) : problems.length ? (
              <ul className="problems" aria-label="Problems">
                {problems.map((problem, index) => (
                  <li key={index} data-severity={problem.severity}>
                    <button type="button" className="link" onClick={() => go(problem.line)}>
                      line {problem.line}
                    </button>{" "}
                    {problem.severity === "error" ? "✕" : "!"} {problem.text}
                  </li>
                ))}
              </ul>
            ) : (
              <p className="small" data-testid="valid">
                ✓ Valid{errors.length === 0 && simulated ? `; ${simulated.diff?.summary ?? ""}` : ""}
              </p>
            )}
            {start.errors.length > 0 && (
              <div className="rejection">
                <p className="small">The rejected revision's problems in this file, as the GitSource reported them:</p>
                <ul className="problems">
                  {start.errors.map((error, index) => (
                    <li key={index}>
                      <code>
                        {error.file}:{error.line ?? ""} {error.field}
                      </code>{" "}
                      {error.message}
                    </li>
                  ))}
                </ul>
              </div>
            )}
          </div>
        </section>
        <section aria-label="Diagram" className="editor-diagram">
          {diagrams.length > 1 && (
            <label>
              Policy{" "}
              <select value={documentIndex} onChange={(event) => setDocumentIndex(Number(event.target.value))}>
                {diagrams.map((item, index) => (
                  <option key={item.policy} value={index}>
                    {item.policy}
                  </option>
                ))}
              </select>
            </label>
          )}
          {simulation.error && <ErrorNote error={simulation.error} retry={() => void simulation.refetch()} />}
          {diagram ? (
            <Diagram
              diagram={diagram}
              world={start.topology ? "the demo topology" : "the fleet"}
              selected={selection}
              litRule={litRule}
              editable={!readOnly}
              onLight={light}
              onSelectRule={selectRule}
              onFix={(fix: Fix) => applyFix(fix.edits, diagram.document)}
            />
          ) : (
            <p className="muted">{answer ? "No valid policy to draw yet." : "Drawing…"}</p>
          )}
          {!readOnly && diagram && <InternetObject />}
        </section>
      </div>
      <Tabs tabs={TABS} label="What the API says of the draft" />
      <TabPanel id={tab}>
        {tab === "findings" && answer && (
          <>
            <h2>Lints</h2>
            <Lints lints={answer.lints} editable={!readOnly} onFix={(fix, document) => applyFix(fix.edits, document)} onGo={go} />
            <h2>Rating</h2>
            <Ratings ratings={answer.ratings} onGo={go} />
          </>
        )}
        {tab === "matrix" && answer && (
          <>
            <div className="toolbar">
              <label>
                Protocol{" "}
                <select value={protocol} onChange={(event) => set({ protocol: event.target.value, cell: null })}>
                  <option>TCP</option>
                  <option>UDP</option>
                  <option>SCTP</option>
                </select>
              </label>
              <label>
                Port{" "}
                <input
                  type="number"
                  min={1}
                  max={65535}
                  defaultValue={port}
                  key={port}
                  onBlur={(event) => choosePort(event.target.value)}
                  onKeyDown={(event) => {
                    if (event.key === "Enter") choosePort(event.currentTarget.value);
                  }}
                />
              </label>
              <label>
                <input type="checkbox" checked={options.everyone} onChange={(event) => set({ all: event.target.checked ? "1" : null })} /> Every
                endpoint
              </label>
            </div>
            {answer.diff && (
              <p data-testid="diff-summary">
                Before → after on {answer.diff.protocol}/{answer.diff.port}: <strong>{answer.diff.summary}</strong>
                {answer.replaces.length > 0 && <span className="muted"> (the draft replaces {answer.replaces.join(", ")})</span>}
              </p>
            )}
            {answer.ports.length > 0 && (
              <p className="small">
                Other ports:{" "}
                {answer.ports.map((item) => (
                  <button key={`${item.protocol}/${item.port}`} type="button" className="link port-link" onClick={() => set({ protocol: item.protocol, port: item.port, cell: null })}>
                    {item.protocol}/{item.port}: {item.summary}
                  </button>
                ))}
              </p>
            )}
            {answer.matrix && <Matrix matrix={answer.matrix} chosen={cell} onChoose={(chosen) => set({ cell: cellParam(chosen) })} />}
            {explanation.error && <ErrorNote error={explanation.error} />}
            {cell && explanation.data && <ExplainPanel explanation={explanation.data} onSelect={(line, end) => editor.current?.select(line, end)} />}
          </>
        )}
        {tab === "flows" && <FlowTests text={flows} onText={setFlows} result={flowResult} readOnly={false} />}
        {tab === "peer" &&
          (readOnly ? (
            <p className="muted">Your role may not change the draft.</p>
          ) : (
            <PeerPicker
              onAdd={(direction, rule) => {
                const current = editor.current;
                if (!current) return;
                try {
                  current.replace(appendRule(current.text(), direction, rule, diagram?.document ?? 0));
                  setEditError(null);
                } catch (error) {
                  setEditError(error instanceof EditFailed ? error.message : String(error));
                }
              }}
            />
          ))}
        {tab === "changes" && <Changes original={start.text} text={text} />}
      </TabPanel>
    </>
  );
}
