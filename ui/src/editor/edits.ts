/**
 * The API's structured edits (a lint's fix, a diagram box's "Allow", the mode switch)
 * applied to the text the person is editing, with the `yaml` package's document model:
 * comments, key order and the flow or block style of what is untouched are kept.
 *
 * An edit is JSON-Patch-like, on one document of the text (multi-document files are
 * common in Git): `add` a mapping key or a list item (an index equal to the list's
 * length appends), `replace`, `remove`. Deciding which edits to make is the API's; this
 * only writes them.
 */
import {
  Document,
  isCollection,
  isMap,
  isScalar,
  isSeq,
  parseAllDocuments,
  type ToStringOptions,
} from "yaml";

export type PathPart = string | number;

export interface Edit {
  op: "add" | "replace" | "remove";
  path: PathPart[];
  value?: unknown;
}

export class EditFailed extends Error {}

const KEY_ALONE = /^((?: *- )* *)[^\s#-][^:\n]*:[ \t]*(?:#.*)?$/;
const ITEM = /^( *)- /;

/** How the text writes block lists under a key (`key:` then `- item` in the key's column,
 * or indented further) and whether flow collections are padded (`{ a: b }`), so what an
 * edit writes looks like what is there. */
export function styleOf(text: string): ToStringOptions {
  const lines = text.split("\n");
  let indentless = 0;
  let indented = 0;
  lines.forEach((line, at) => {
    const key = KEY_ALONE.exec(line);
    const next = lines.slice(at + 1).find((candidate) => candidate.trim() && !candidate.trim().startsWith("#"));
    const item = next === undefined ? null : ITEM.exec(next);
    if (!key || !item) return;
    const column = (key[1] ?? "").length;
    const itemColumn = (item[1] ?? "").length;
    if (itemColumn === column) indentless += 1;
    else if (itemColumn > column) indented += 1;
  });
  return {
    indentSeq: indentless <= indented,
    flowCollectionPadding: /[{[] \S/.test(text),
    lineWidth: 0,
  };
}

function apply(document: Document, edit: Edit): void {
  const { op, path } = edit;
  if (path.length === 0) throw new EditFailed("an edit needs a path");
  const parentPath = path.slice(0, -1);
  const last = path[path.length - 1] as PathPart;
  const parent = parentPath.length ? document.getIn(parentPath, true) : document.contents;
  if (op === "remove") {
    if (!document.hasIn(path)) throw new EditFailed(`no field ${path.join(".")} to remove`);
    document.deleteIn(path);
    return;
  }
  if (typeof last === "number") {
    if (!isSeq(parent)) throw new EditFailed(`${parentPath.join(".")} is not a list`);
    if (op === "add") {
      if (last > parent.items.length) throw new EditFailed(`no item ${path.join(".")}`);
      parent.items.splice(last, 0, document.createNode(edit.value));
      return;
    }
  } else if (parent !== undefined && parent !== null && !isMap(parent)) {
    throw new EditFailed(`${parentPath.join(".")} is not a mapping`);
  }
  const current = document.getIn(path, true);
  if (op === "replace" && current === undefined) throw new EditFailed(`no field ${path.join(".")} to replace`);
  if (isScalar(current) && !isCollection(document.createNode(edit.value))) {
    // Keep the node, and with it any comment written beside the value.
    current.value = edit.value;
    return;
  }
  document.setIn(path, document.createNode(edit.value));
}

function spacingless(line: string): string {
  return line.replace(/[ \t]+#/, " #").trimEnd();
}

/** ``written`` with each line that differs from one of ``original`` only in the spaces
 * before a comment (or at its end) put back as it was written. */
function keepSpacing(original: string, written: string): string {
  const byForm = new Map<string, string[]>();
  for (const line of original.split("\n")) {
    const form = spacingless(line);
    byForm.set(form, [...(byForm.get(form) ?? []), line]);
  }
  return written
    .split("\n")
    .map((line) => byForm.get(spacingless(line))?.shift() ?? line)
    .join("\n");
}

/** ``text`` with ``edits`` applied to its document number ``index`` (0-based, empty
 * documents counted). Throws EditFailed when an edit does not fit the document. */
export function applyEdits(text: string, edits: Edit[], index = 0): string {
  const documents = parseAllDocuments(text);
  if (!Array.isArray(documents)) throw new EditFailed("the text holds no document");
  const document = documents[index];
  if (!document) throw new EditFailed(`the text has no document ${index + 1}`);
  if (document.errors.length) throw new EditFailed(`document ${index + 1} is not valid YAML yet`);
  for (const edit of edits) apply(document, edit);
  // A document's text runs from the end of the one before (its comments and `---`
  // belong to it) to the end of its own last node.
  const start = index > 0 ? (documents[index - 1]?.range[2] ?? 0) : 0;
  const end = document.range[2];
  const original = text.slice(start, end);
  let written = keepSpacing(original, document.toString(styleOf(original)));
  if (!original.endsWith("\n") && written.endsWith("\n")) written = written.slice(0, -1);
  return text.slice(0, start) + written + text.slice(end);
}

/** The smallest single replacement turning ``before`` into ``after``: one change, so
 * the editor's history holds it as one step and the cursor elsewhere stays put. */
export function smallestChange(before: string, after: string): { from: number; to: number; insert: string } {
  let start = 0;
  const shortest = Math.min(before.length, after.length);
  while (start < shortest && before[start] === after[start]) start += 1;
  let tail = 0;
  while (
    tail < shortest - start &&
    before[before.length - 1 - tail] === after[after.length - 1 - tail]
  ) {
    tail += 1;
  }
  return { from: start, to: before.length - tail, insert: after.slice(start, after.length - tail) };
}

/** A rule appended to a direction's rules of document ``index`` (the list is made if
 * there is none yet): what the peer picker writes. */
export function appendRule(
  text: string,
  direction: "ingress" | "egress",
  rule: Record<string, unknown>,
  index = 0,
): string {
  const documents = parseAllDocuments(text);
  const document = Array.isArray(documents) ? documents[index] : undefined;
  const rules = document?.getIn(["spec", direction], true);
  const edit: Edit = isSeq(rules)
    ? { op: "add", path: ["spec", direction, rules.items.length], value: rule }
    : { op: "add", path: ["spec", direction], value: [rule] };
  return applyEdits(text, [edit], index);
}
