/** The draft against the text it was opened from, changed lines marked (CodeMirror's
 * merge view, read-only): what a proposal of it would change. */
import { yaml } from "@codemirror/lang-yaml";
import { unifiedMergeView } from "@codemirror/merge";
import { EditorState } from "@codemirror/state";
import { EditorView, lineNumbers } from "@codemirror/view";
import { useEffect, useRef } from "react";
import { shadowParent } from "./shadow";

export function Changes({ original, text }: { original: string; text: string }) {
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
          EditorView.contentAttributes.of({ "aria-label": "Changes from the opened text" }),
          unifiedMergeView({ original, mergeControls: false, highlightChanges: true }),
        ],
      }),
    });
    return () => view.destroy();
  }, [original, text]);
  if (original === text) return <p className="muted">No change yet: the draft is the text it was opened from.</p>;
  return <div ref={host} className="changes" data-testid="changes" />;
}
