/** Read-only YAML, changed lines against an original marked (CodeMirror's merge view):
 * the draft against the text it was opened from, and the panes of a three-way view. */
import { yaml } from "@codemirror/lang-yaml";
import { unifiedMergeView } from "@codemirror/merge";
import { EditorState } from "@codemirror/state";
import { EditorView, lineNumbers } from "@codemirror/view";
import { type RefObject, useEffect, useRef } from "react";
import { shadowParent } from "./shadow";

/** A read-only view of ``text`` in the returned element, with the changes against
 * ``original`` marked (none when it is null); ``wrap`` wraps long lines. */
export function useReadOnlyYaml(
  text: string,
  original: string | null,
  label: string,
  wrap = false,
): RefObject<HTMLDivElement | null> {
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
          EditorView.contentAttributes.of({ "aria-label": label }),
          ...(wrap ? [EditorView.lineWrapping] : []),
          ...(original === null ? [] : [unifiedMergeView({ original, mergeControls: false, highlightChanges: true })]),
        ],
      }),
    });
    return () => view.destroy();
  }, [text, original, label, wrap]);
  return host;
}

export function Changes({ original, text }: { original: string; text: string }) {
  const host = useReadOnlyYaml(text, original, "Changes from the opened text");
  if (original === text) return <p className="muted">No change yet: the draft is the text it was opened from.</p>;
  return <div ref={host} className="changes" data-testid="changes" />;
}
