/** Add a peer: label keys and values, namespaces and named ports suggested from the
 * fleet's real endpoints (the API's vocabulary), written as a rule into the YAML. */
import { useState } from "react";
import { ruleOf, type PeerChoice } from "./peer";
import { useVocabulary } from "./queries";

const EMPTY: PeerChoice = {
  direction: "ingress",
  kind: "pods",
  podKey: "",
  podValue: "",
  namespaceKey: "kubernetes.io/metadata.name",
  namespaceValue: "",
  cidr: "",
  port: "",
  protocol: "TCP",
};

export function PeerPicker({ onAdd }: { onAdd(direction: "ingress" | "egress", rule: Record<string, unknown>): void }) {
  const vocabulary = useVocabulary();
  const [choice, setChoice] = useState<PeerChoice>(EMPTY);
  const words = vocabulary.data;
  const set = (changes: Partial<PeerChoice>) => setChoice({ ...choice, ...changes });
  const podValues = words?.endpointLabels[choice.podKey] ?? [];
  const namespaceValues = words?.namespaceLabels[choice.namespaceKey] ?? [];
  return (
    <form
      className="peer-picker"
      aria-label="Add a peer"
      onSubmit={(event) => {
        event.preventDefault();
        onAdd(choice.direction, ruleOf(choice));
      }}
    >
      <div className="fields">
        <label>
          Direction{" "}
          <select value={choice.direction} onChange={(event) => set({ direction: event.target.value as PeerChoice["direction"] })}>
            <option value="ingress">ingress (from)</option>
            <option value="egress">egress (to)</option>
          </select>
        </label>
        <label>
          Peer{" "}
          <select value={choice.kind} onChange={(event) => set({ kind: event.target.value as PeerChoice["kind"] })}>
            <option value="pods">pods of this namespace</option>
            <option value="namespaces">pods of other namespaces</option>
            <option value="addresses">addresses (CIDR)</option>
          </select>
        </label>
      </div>
      {choice.kind === "namespaces" && (
        <div className="fields">
          <label>
            Namespace label{" "}
            <input list="namespace-keys" value={choice.namespaceKey} onChange={(event) => set({ namespaceKey: event.target.value })} />
          </label>
          <label>
            value <input list="namespace-values" value={choice.namespaceValue} onChange={(event) => set({ namespaceValue: event.target.value })} />
          </label>
        </div>
      )}
      {choice.kind !== "addresses" && (
        <div className="fields">
          <label>
            Pod label <input list="pod-keys" value={choice.podKey} onChange={(event) => set({ podKey: event.target.value })} />
          </label>
          <label>
            value <input list="pod-values" value={choice.podValue} onChange={(event) => set({ podValue: event.target.value })} />
          </label>
        </div>
      )}
      {choice.kind === "addresses" && (
        <div className="fields">
          <label>
            CIDR <input value={choice.cidr} placeholder="192.0.2.0/24" onChange={(event) => set({ cidr: event.target.value })} />
          </label>
        </div>
      )}
      <div className="fields">
        <label>
          Port <input list="named-ports" value={choice.port} placeholder="any" onChange={(event) => set({ port: event.target.value })} />
        </label>
        <label>
          Protocol{" "}
          <select value={choice.protocol} onChange={(event) => set({ protocol: event.target.value as PeerChoice["protocol"] })}>
            <option>TCP</option>
            <option>UDP</option>
            <option>SCTP</option>
          </select>
        </label>
        <button type="submit">Add the rule</button>
      </div>
      <datalist id="pod-keys">
        {Object.keys(words?.endpointLabels ?? {}).map((key) => (
          <option key={key} value={key} />
        ))}
      </datalist>
      <datalist id="pod-values">
        {podValues.map((value) => (
          <option key={value} value={value} />
        ))}
      </datalist>
      <datalist id="namespace-keys">
        {Object.keys(words?.namespaceLabels ?? {}).map((key) => (
          <option key={key} value={key} />
        ))}
      </datalist>
      <datalist id="namespace-values">
        {namespaceValues.map((value) => (
          <option key={value} value={value} />
        ))}
      </datalist>
      <datalist id="named-ports">
        {(words?.namedPorts ?? []).map((port) => (
          <option key={`${port.name}/${port.protocol}`} value={port.name}>
            {port.protocol}/{port.ports.join(",")} on {port.endpoints} endpoint(s)
          </option>
        ))}
      </datalist>
      <p className="muted small" data-testid="suggestions">
        Suggested from the fleet: pod labels {Object.keys(words?.endpointLabels ?? {}).join(", ") || "none"}; named ports{" "}
        {(words?.namedPorts ?? []).map((port) => `${port.name} (${port.protocol}/${port.ports.join(",")})`).join(", ") || "none"}.
      </p>
    </form>
  );
}
