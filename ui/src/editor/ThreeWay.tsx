/** A conflicting file in three columns: as the draft was opened (base), at the branch tip
 * now (theirs, changes against the base marked), and as proposed (ours, likewise). The
 * texts are the operator's; nothing was pushed. */
import type { Schemas } from "../api/client";
import { useReadOnlyYaml } from "./Changes";

function Pane({ label, text, original }: { label: string; text: string; original: string | null }) {
  // Three columns are narrow: long lines wrap, so no pane scrolls sideways.
  const host = useReadOnlyYaml(text, original, label, true);
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
