/**
 * The YAML text, in CodeMirror 6: syntax, undo history, the API's diagnostics on their
 * lines (underlined, in the gutter, and their words at the line's end), and the lines of
 * a rule lit while its box or chip in the diagram is hovered. The parent holds the
 * text; edits made for the person (a fix, an "Allow") arrive through `replace`, as one
 * change, so one undo takes them back.
 */
import { defaultKeymap, history, historyKeymap, redo, undo } from "@codemirror/commands";
import { yaml } from "@codemirror/lang-yaml";
import { defaultHighlightStyle, syntaxHighlighting } from "@codemirror/language";
import { lintGutter, setDiagnostics, type Diagnostic } from "@codemirror/lint";
import { Compartment, EditorState, StateEffect, StateField, type Extension, type Range } from "@codemirror/state";
import {
  Decoration,
  type DecorationSet,
  EditorView,
  WidgetType,
  highlightActiveLine,
  keymap,
  lineNumbers,
} from "@codemirror/view";
import { forwardRef, useEffect, useImperativeHandle, useRef } from "react";
import { smallestChange } from "./edits";
import { shadowParent } from "./shadow";

export interface Problem {
  severity: "error" | "warning" | "info";
  message: string;
  line: number;
  column: number;
  endLine: number;
  endColumn: number;
  fixes?: { title: string; apply: () => void }[];
}

export interface YamlEditorHandle {
  replace(text: string): void;
  select(line: number, endLine?: number): void;
  undo(): void;
  redo(): void;
  text(): string;
  /** Show ``problems`` if they were found in ``text``, the text the editor holds now. */
  problems(problems: Problem[], text: string): void;
}

interface Props {
  initial: string;
  label: string;
  readOnly: boolean;
  onChange(text: string): void;
  onLine(line: number | null): void;
  lit: [number, number] | null;
}

// --- lit lines: a rule hovered in the diagram -----------------------------------

const setLit = StateEffect.define<[number, number] | null>();
const litLine = Decoration.line({ class: "cm-rule-lit" });

const litField = StateField.define<DecorationSet>({
  create: () => Decoration.none,
  update(value, transaction) {
    let next = value.map(transaction.changes);
    for (const effect of transaction.effects) {
      if (!effect.is(setLit)) continue;
      if (effect.value === null) {
        next = Decoration.none;
        continue;
      }
      const [first, last] = effect.value;
      const doc = transaction.state.doc;
      const ranges: Range<Decoration>[] = [];
      for (let line = Math.max(1, first); line <= Math.min(doc.lines, last); line += 1) {
        ranges.push(litLine.range(doc.line(line).from));
      }
      next = Decoration.set(ranges);
    }
    return next;
  },
  provide: (field) => EditorView.decorations.from(field),
});

// --- the diagnostics' words at the end of their line ----------------------------------

class Words extends WidgetType {
  constructor(
    readonly text: string,
    readonly severity: string,
  ) {
    super();
  }
  eq(other: Words) {
    return other.text === this.text && other.severity === this.severity;
  }
  toDOM() {
    const span = document.createElement("span");
    span.className = `cm-inline-problem cm-inline-${this.severity}`;
    span.textContent = `${this.severity === "error" ? "✕" : "!"} ${this.text}`;
    return span;
  }
}

const setWords = StateEffect.define<DecorationSet>();
const wordsField = StateField.define<DecorationSet>({
  create: () => Decoration.none,
  update(value, transaction) {
    let next = value.map(transaction.changes);
    for (const effect of transaction.effects) if (effect.is(setWords)) next = effect.value;
    return next;
  },
  provide: (field) => EditorView.decorations.from(field),
});

function offset(state: EditorState, line: number, column: number): number {
  const doc = state.doc;
  const at = doc.line(Math.max(1, Math.min(doc.lines, line)));
  return Math.min(at.to, at.from + Math.max(0, column - 1));
}

function toDiagnostics(state: EditorState, problems: Problem[]): Diagnostic[] {
  return problems.map((problem) => {
    const from = offset(state, problem.line, problem.column);
    let to = offset(state, problem.endLine, problem.endColumn);
    if (to <= from) to = state.doc.lineAt(from).to;
    return {
      from,
      to: Math.max(from, to),
      severity: problem.severity,
      message: problem.message,
      actions: (problem.fixes ?? []).map((fix) => ({ name: fix.title, apply: () => fix.apply() })),
    };
  });
}

function wordsOf(state: EditorState, problems: Problem[]): DecorationSet {
  const byLine = new Map<number, Problem>();
  for (const problem of problems) {
    const line = Math.max(1, Math.min(state.doc.lines, problem.line));
    const kept = byLine.get(line);
    if (!kept || (kept.severity !== "error" && problem.severity === "error")) byLine.set(line, problem);
  }
  const ranges = [...byLine.entries()]
    .sort(([a], [b]) => a - b)
    .map(([line, problem]) =>
      Decoration.widget({ widget: new Words(problem.message, problem.severity), side: 1 }).range(
        state.doc.line(line).to,
      ),
    );
  return Decoration.set(ranges);
}

/** Put the API's problems (for the text as it is now) on their lines. */
function showProblems(view: EditorView, problems: Problem[]): void {
  const spec = setDiagnostics(view.state, toDiagnostics(view.state, problems));
  const effects = [...(Array.isArray(spec.effects) ? spec.effects : spec.effects ? [spec.effects] : [])];
  view.dispatch({ effects: [...effects, setWords.of(wordsOf(view.state, problems))] });
}

const theme = EditorView.theme({
  "&": { border: "1px solid var(--line)", borderRadius: "6px", background: "var(--panel)", fontSize: "14px" },
  ".cm-content": { fontFamily: "var(--mono)", caretColor: "var(--text)" },
  ".cm-gutters": { background: "var(--bg)", color: "var(--muted)", borderRight: "1px solid var(--line)" },
  "&.cm-focused": { outline: "2px solid var(--focus)" },
  ".cm-activeLine": { background: "var(--selected)" },
  ".cm-rule-lit": { background: "var(--warn-bg)", boxShadow: "inset 3px 0 0 var(--warn-fg)" },
  ".cm-inline-problem": { marginLeft: "1.5em", fontFamily: "var(--font)", fontSize: "12.5px", whiteSpace: "normal" },
  ".cm-inline-error": { color: "var(--bad-fg)" },
  ".cm-inline-warning, .cm-inline-info": { color: "var(--warn-fg)" },
  // The lint package draws squiggles and gutter markers with data: SVG images, which the
  // page's policy refuses (images from 'self' only): text decorations and glyphs instead.
  ".cm-lintRange-error, .cm-lintRange-warning, .cm-lintRange-info, .cm-lintRange-hint": {
    backgroundImage: "none",
    textDecoration: "underline wavy",
    textDecorationSkipInk: "none",
  },
  ".cm-lintRange-error": { textDecorationColor: "var(--bad-fg)" },
  ".cm-lintRange-warning, .cm-lintRange-info, .cm-lintRange-hint": { textDecorationColor: "var(--warn-fg)" },
  ".cm-lint-marker-error, .cm-lint-marker-warning, .cm-lint-marker-info": { content: "none" },
  ".cm-lint-marker-error::before": { content: '"✕"', color: "var(--bad-fg)" },
  ".cm-lint-marker-warning::before, .cm-lint-marker-info::before": { content: '"!"', color: "var(--warn-fg)" },
  ".cm-lintPoint:after": { display: "none" },
});

export const YamlEditor = forwardRef<YamlEditorHandle, Props>(function YamlEditor(
  { initial, label, readOnly, onChange, onLine, lit },
  handle,
) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const editable = useRef(new Compartment());
  const callbacks = useRef({ onChange, onLine });
  useEffect(() => {
    callbacks.current = { onChange, onLine };
  });

  useEffect(() => {
    if (!host.current) return;
    const extensions: Extension[] = [
      lineNumbers(),
      history(),
      highlightActiveLine(),
      syntaxHighlighting(defaultHighlightStyle),
      yaml(),
      // Long lines wrap and the editor grows with its text: nothing scrolls inside it
      // that a keyboard could not reach.
      EditorView.lineWrapping,
      lintGutter(),
      litField,
      wordsField,
      keymap.of([...defaultKeymap, ...historyKeymap]),
      theme,
      editable.current.of([EditorState.readOnly.of(readOnly), EditorView.editable.of(!readOnly)]),
      EditorView.contentAttributes.of({ "aria-label": label }),
      EditorView.updateListener.of((update) => {
        if (update.docChanged) callbacks.current.onChange(update.state.doc.toString());
      }),
      EditorView.domEventHandlers({
        mousemove(event, current) {
          const at = current.posAtCoords({ x: event.clientX, y: event.clientY });
          callbacks.current.onLine(at === null ? null : current.state.doc.lineAt(at).number);
        },
        mouseleave() {
          callbacks.current.onLine(null);
        },
      }),
    ];
    const { root, parent } = shadowParent(host.current);
    const created = new EditorView({ state: EditorState.create({ doc: initial, extensions }), parent, root });
    view.current = created;
    return () => {
      created.destroy();
      view.current = null;
    };
    // The editor is made once per opened text; later text arrives through `replace`.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [initial]);

  useEffect(() => {
    view.current?.dispatch({
      effects: editable.current.reconfigure([EditorState.readOnly.of(readOnly), EditorView.editable.of(!readOnly)]),
    });
  }, [readOnly]);

  useEffect(() => {
    view.current?.dispatch({ effects: setLit.of(lit) });
  }, [lit]);

  useImperativeHandle(handle, () => ({
    replace(text: string) {
      const current = view.current;
      if (!current) return;
      const change = smallestChange(current.state.doc.toString(), text);
      current.dispatch({ changes: change, userEvent: "input.edit" });
    },
    select(line: number, endLine?: number) {
      const current = view.current;
      if (!current) return;
      const doc = current.state.doc;
      const first = doc.line(Math.max(1, Math.min(doc.lines, line)));
      const last = doc.line(Math.max(1, Math.min(doc.lines, endLine ?? line)));
      current.dispatch({
        selection: endLine === undefined ? { anchor: first.from } : { anchor: first.from, head: last.to },
        effects: EditorView.scrollIntoView(first.from, { y: "center" }),
      });
      current.focus();
    },
    undo() {
      if (view.current) undo(view.current);
    },
    redo() {
      if (view.current) redo(view.current);
    },
    text() {
      return view.current?.state.doc.toString() ?? "";
    },
    problems(problems: Problem[], text: string) {
      const current = view.current;
      if (current && current.state.doc.toString() === text) showProblems(current, problems);
    },
  }));

  return <div ref={host} className="yaml-editor" data-testid="yaml-editor" />;
});
