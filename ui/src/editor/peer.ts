/** The peer picker's form as a rule to append: the person chose the labels, namespaces,
 * addresses and port; this only writes them as YAML would. Whether the rule means what
 * they want is the API's to say once it is in the text. */

export interface PeerChoice {
  direction: "ingress" | "egress";
  kind: "pods" | "namespaces" | "addresses";
  podKey: string;
  podValue: string;
  namespaceKey: string;
  namespaceValue: string;
  cidr: string;
  port: string;
  protocol: "TCP" | "UDP" | "SCTP";
}

function labels(key: string, value: string): Record<string, unknown> {
  return key.trim() ? { matchLabels: { [key.trim()]: value.trim() } } : {};
}

export function ruleOf(choice: PeerChoice): Record<string, unknown> {
  let peer: Record<string, unknown>;
  if (choice.kind === "addresses") {
    peer = { ipBlock: { cidr: choice.cidr.trim() } };
  } else if (choice.kind === "namespaces") {
    peer = { namespaceSelector: labels(choice.namespaceKey, choice.namespaceValue) };
    if (choice.podKey.trim()) peer.podSelector = labels(choice.podKey, choice.podValue);
  } else {
    peer = { podSelector: labels(choice.podKey, choice.podValue) };
  }
  const rule: Record<string, unknown> = { [choice.direction === "ingress" ? "from" : "to"]: [peer] };
  const port = choice.port.trim();
  if (port) {
    const number = Number(port);
    rule.ports = [{ protocol: choice.protocol, port: Number.isInteger(number) && /^\d+$/.test(port) ? number : port }];
  }
  return rule;
}
