/** A conflicting file in three columns: as the draft was opened (base), at the branch tip
 * now (theirs, changes against the base marked), and as proposed (ours, likewise). The
 * texts are the operator's; nothing was pushed. */
import { yaml } from "@codemirror/lang-yaml";
import { unifiedMergeView } from "@codemirror/merge";
import { EditorState } from "@codemirror/state";
import { EditorView, lineNumbers } from "@codemirror/view";
import { useEffect, useRef } from "react";
import type { Schemas } from "../api/client";
import { shadowParent } from "./shadow";

function Pane({ label, text, original }: { label: string; text: string; original: string | null }) {
  const host = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!host.current) return;
    const { root, parent } = shadowParent(host.current);
    const view = new EditorView({
      parent,
      root,
      state: EditorState.create({
        doc: text,
        extensions: [
          lineNumbers(),
          yaml(),
          EditorState.readOnly.of(true),
          EditorView.editable.of(false),
          // Three columns are narrow: long lines wrap, so no pane scrolls sideways.
          EditorView.lineWrapping,
          EditorView.contentAttributes.of({ "aria-label": label }),
          ...(original === null ? [] : [unifiedMergeView({ original, mergeControls: false, highlightChanges: true })]),
        ],
      }),
    });
    return () => view.destroy();
  }, [label, text, original]);
  return (
    <section aria-label={label} className="three-way-pane">
      <h4>{label}</h4>
      <div ref={host} className="changes" tabIndex={0} />
    </section>
  );
}

export function ThreeWay({ conflict }: { conflict: Schemas["Conflict"] }) {
  if (conflict.omitted) {
    return <p>{conflict.path}: too large to show here; open the file at the branch tip.</p>;
  }
  const base = conflict.base ?? "";
  return (
    <div className="three-way" data-testid="three-way">
      <h3>
        <code>{conflict.path}</code>
      </h3>
      <div className="three-way-columns">
        <Pane label="Base: as the draft was opened" text={conflict.base ?? "(absent)"} original={null} />
        <Pane label="Theirs: at the branch tip now" text={conflict.theirs ?? "(absent)"} original={base} />
        <Pane label="Ours: as proposed" text={conflict.ours} original={base} />
      </div>
    </div>
  );
}
