/**
 * One policy drawn as the API drew it: ingress sources | the endpoints it selects now |
 * egress destinations. Each box says in words (and a glyph; colour only repeats them)
 * whether its kind of peer gets through, names the rules that let it, and offers the
 * API's edit that would allow it. Hovering or focusing a rule lights its lines in the
 * YAML; a rule whose lines hold the cursor (or the pointer) is lit here. "The Internet"
 * can be dropped on either side.
 */
import { useState } from "react";
import type { Schemas } from "../api/client";
import { ruleKey } from "./layout";
import type { Diagram as DiagramData } from "./queries";

type Box = Schemas["DiagramBoxView"];
type Rule = Schemas["DiagramRuleView"];
type Fix = Schemas["FixView"];
type Endpoint = Schemas["EndpointView"];

const STATE_WORDS: Record<Box["state"], [string, string]> = {
  allowed: ["✓", "allowed"],
  denied: ["✕", "denied"],
  unrestricted: ["•", "not restricted"],
};

interface Props {
  diagram: DiagramData;
  /** Where the endpoints are: "the fleet", or a lesson's demo topology. */
  world: string;
  selected: { count: number; endpoints: Endpoint[] } | null;
  litRule: string | null;
  editable: boolean;
  onLight(rule: Rule | null): void;
  onSelectRule(rule: Rule): void;
  onFix(fix: Fix): void;
}

function RuleChip({ rule, lit, onLight, onSelect }: { rule: Rule; lit: boolean; onLight: Props["onLight"]; onSelect(): void }) {
  const peers = rule.peers.length ? rule.peers.map((peer) => peer.description).join("; ") : "every peer";
  return (
    <li>
      <button
        type="button"
        className={`rule-chip${lit ? " lit" : ""}`}
        data-rule={ruleKey(rule)}
        aria-current={lit ? "true" : undefined}
        onMouseEnter={() => onLight(rule)}
        onMouseLeave={() => onLight(null)}
        onFocus={() => onLight(rule)}
        onBlur={() => onLight(null)}
        onClick={onSelect}
      >
        <strong>
          {rule.direction} rule {rule.index}
        </strong>
        {rule.line !== null && (
          <span className="muted">
            {" "}
            (lines {rule.line}–{rule.endLine})
          </span>
        )}
        : {peers} on {rule.ports}
      </button>
    </li>
  );
}

function BoxView({ box, rules, props }: { box: Box; rules: Rule[]; props: Props }) {
  const [glyph, words] = STATE_WORDS[box.state];
  const admitting = rules.filter((rule) => rule.direction === box.direction && box.rules.includes(rule.index));
  const lit = admitting.some((rule) => ruleKey(rule) === props.litRule);
  return (
    <article
      className={`diagram-box state-${box.state}${lit ? " lit" : ""}`}
      aria-label={`${box.direction}: ${box.title}`}
      data-kind={box.kind}
    >
      <h4>{box.title}</h4>
      <p className="box-state" data-state={box.state}>
        <span aria-hidden="true">{glyph}</span> {words}
      </p>
      <p className="muted small">{box.summary}</p>
      {admitting.length > 0 && (
        <ul className="plain rule-refs">
          {admitting.map((rule) => (
            <li key={ruleKey(rule)}>
              <button
                type="button"
                className="link"
                onMouseEnter={() => props.onLight(rule)}
                onMouseLeave={() => props.onLight(null)}
                onFocus={() => props.onLight(rule)}
                onBlur={() => props.onLight(null)}
                onClick={() => props.onSelectRule(rule)}
              >
                rule {rule.index}
              </button>
            </li>
          ))}
        </ul>
      )}
      {props.editable &&
        box.actions.map((action) => (
          <button key={action.title} type="button" onClick={() => props.onFix(action)}>
            {action.title}
          </button>
        ))}
    </article>
  );
}

function Side({ direction, props }: { direction: "ingress" | "egress"; props: Props }) {
  const [over, setOver] = useState(false);
  const { diagram } = props;
  const boxes = diagram.boxes.filter((box) => box.direction === direction);
  const isolated = direction === "ingress" ? diagram.ingressIsolated : diagram.egressIsolated;
  const internet = boxes.find((box) => box.kind === "outside")?.actions[0];
  return (
    <section
      className={`diagram-side${over ? " drop-over" : ""}`}
      aria-label={direction === "ingress" ? "Ingress sources" : "Egress destinations"}
      data-direction={direction}
      onDragOver={(event) => {
        if (props.editable && event.dataTransfer.types.includes("application/x-bpfleet-peer")) {
          event.preventDefault();
          setOver(true);
        }
      }}
      onDragLeave={() => setOver(false)}
      onDrop={(event) => {
        event.preventDefault();
        setOver(false);
        if (internet && event.dataTransfer.getData("application/x-bpfleet-peer") === "internet") props.onFix(internet);
      }}
    >
      <h3>{direction === "ingress" ? "Ingress sources" : "Egress destinations"}</h3>
      <p className="muted small">
        {isolated ? `Isolated: only what a rule allows gets ${direction === "ingress" ? "in" : "out"}.` : `Not isolated for ${direction} by this policy.`}
      </p>
      {boxes.map((box) => (
        <BoxView key={box.kind} box={box} rules={diagram.rules} props={props} />
      ))}
    </section>
  );
}

export function Diagram(props: Props) {
  const { diagram, selected } = props;
  return (
    <div className="diagram-wrap">
      <div className="diagram" aria-label={`Diagram of ${diagram.policy}`} role="group">
        <Side direction="ingress" props={props} />
        <section className="diagram-centre" aria-label="Selected endpoints">
          <h3>{diagram.policy}</h3>
          <p className="small">
            Mode: <strong>{diagram.mode}</strong>
          </p>
          <p className="small" data-testid="selected-count">
            Selects {selected ? selected.count : 0} endpoint{selected?.count === 1 ? "" : "s"} of {props.world} now
          </p>
          {selected && selected.endpoints.length > 0 && (
            <ul className="plain endpoints" aria-label="Endpoints selected now">
              {selected.endpoints.map((endpoint) => (
                <li key={`${endpoint.namespace}/${endpoint.name}`}>
                  <code>
                    {endpoint.namespace}/{endpoint.name}
                  </code>{" "}
                  <span className="muted">{endpoint.node ? `on ${endpoint.node}` : endpoint.ip}</span>
                </li>
              ))}
              {selected.count > selected.endpoints.length && (
                <li className="muted">and {selected.count - selected.endpoints.length} more</li>
              )}
            </ul>
          )}
        </section>
        <Side direction="egress" props={props} />
      </div>
      <h3 className="small">Rules</h3>
      {diagram.rules.length ? (
        <ul className="plain rules">
          {diagram.rules.map((rule) => (
            <RuleChip
              key={ruleKey(rule)}
              rule={rule}
              lit={ruleKey(rule) === props.litRule}
              onLight={props.onLight}
              onSelect={() => props.onSelectRule(rule)}
            />
          ))}
        </ul>
      ) : (
        <p className="muted small">No rule: every direction it isolates is denied.</p>
      )}
    </div>
  );
}

/** "The Internet", to drop on a side of the diagram (a box's button does the same). */
export function InternetObject() {
  return (
    <span
      className="internet-object"
      draggable
      onDragStart={(event) => {
        event.dataTransfer.setData("application/x-bpfleet-peer", "internet");
        event.dataTransfer.effectAllowed = "copy";
      }}
    >
      The Internet (0.0.0.0/0 but private ranges): drag onto a side
    </span>
  );
}
