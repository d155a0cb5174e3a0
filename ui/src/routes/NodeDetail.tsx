import { Link, useParams } from "react-router";
import type { Schemas } from "../api/client";
import { useNode, usePreflight } from "../api/queries";
import { Badge } from "../components/Badge";
import { FitTable } from "../components/FitTable";
import { useNow } from "../components/Layout";
import { ProgramRows } from "../components/ProgramRows";
import { TabPanel, Tabs, useTab } from "../components/Tabs";
import { ErrorNote, Empty, Loading } from "../components/feedback";
import { Labels } from "../components/tables";
import { ago, dateTime, number } from "../lib/format";

const TABS = [
  { id: "programs", label: "Programs" },
  { id: "features", label: "Kernel features" },
  { id: "fit", label: "Could not run here" },
  { id: "endpoints", label: "Endpoints" },
  { id: "policy", label: "Policy report" },
];

type Features = NonNullable<Schemas["NodeDetail"]["features"]>;

function Availability({ title, entries }: { title: string; entries: Record<string, boolean> }) {
  const names = Object.keys(entries).sort();
  const present = names.filter((name) => entries[name]);
  const absent = names.filter((name) => !entries[name]);
  return (
    <section className="card" aria-label={title}>
      <h3>
        {title}: {present.length} of {names.length}
      </h3>
      <p>
        <strong>Available:</strong> {present.length ? present.join(", ") : "none"}
      </p>
      <p>
        <strong>Missing:</strong> {absent.length ? absent.join(", ") : "none"}
      </p>
    </section>
  );
}

function FeatureReport({ features }: { features: Features }) {
  const flags: [string, boolean][] = [
    ["BTF (CO-RE)", features.kernel_btf],
    ["JIT", features.jit_enabled],
    ["bpffs", features.bpffs],
    ["run-time statistics", features.bpf_stats],
    ["global data", features.global_data],
  ];
  const helperTypes = Object.keys(features.helpers).sort();
  return (
    <>
      <p>
        Kernel <code>{features.kernel_release}</code> ({features.arch}), libbpf {features.libbpf_version}, probed{" "}
        {dateTime(features.probed_at)}.
      </p>
      <section className="card" aria-label="Kernel">
        <h3>Kernel</h3>
        <ul className="plain flags">
          {flags.map(([name, ok]) => (
            <li key={name}>
              <Badge state={ok ? "Ready" : "Missing"} label={`${name}: ${ok ? "yes" : "no"}`} />
            </li>
          ))}
        </ul>
      </section>
      <div className="cards">
        <Availability title="Program types" entries={features.program_types} />
        <Availability title="Map types" entries={features.map_types} />
        <Availability title="Attach kinds" entries={features.attach_kinds} />
      </div>
      <section className="card" aria-label="Helpers per program type">
        <h3>Helpers per program type</h3>
        <ul className="plain columns">
          {helperTypes.map((type) => (
            <li key={type}>
              <details>
                <summary>
                  {type}: {features.helpers[type]?.length ?? 0} helpers
                </summary>
                <p className="wrap">{(features.helpers[type] ?? []).join(", ")}</p>
              </details>
            </li>
          ))}
        </ul>
      </section>
      <section className="card" aria-label="kfuncs">
        <details>
          <summary>
            <h3 className="inline">kfuncs: {(features.kfuncs ?? []).length}</h3>
          </summary>
          <p className="wrap">{(features.kfuncs ?? []).join(", ") || "none"}</p>
        </details>
      </section>
    </>
  );
}

function PolicyReport({ report }: { report: NonNullable<Schemas["NodeDetail"]["policy"]> }) {
  return (
    <>
      <p>
        <Badge state={report.state} /> {report.message}
      </p>
      <dl className="facts">
        <dt>Policies in force</dt>
        <dd>
          {(report.policies ?? []).length === 0 ? (
            "none"
          ) : (
            <ul className="plain">
              {(report.policies ?? []).map((ref) => {
                const [key] = ref.split("@");
                return (
                  <li key={ref}>
                    <Link to={`/policies/${key}`}>
                      <code>{ref}</code>
                    </Link>
                  </li>
                );
              })}
            </ul>
          )}
        </dd>
        <dt>Endpoints</dt>
        <dd>{number(report.endpoints)}</dd>
        <dt>Rules</dt>
        <dd>{number(report.rules)}</dd>
        <dt>Entries</dt>
        <dd>{number(report.entries)}</dd>
        <dt>Packets allowed</dt>
        <dd>{number(report.allowed)}</dd>
        <dt>Packets denied</dt>
        <dd>{number(report.denied)}</dd>
        <dt>Packets audit mode would deny</dt>
        <dd>{number(report.auditDenied)}</dd>
        <dt>Reported</dt>
        <dd>{dateTime(report.updatedAt)}</dd>
      </dl>
    </>
  );
}

export default function NodeDetail() {
  const { name = "" } = useParams();
  const node = useNode(name);
  const tab = useTab(TABS);
  const fits = usePreflight(tab === "fit" ? name : null);
  const now = useNow();
  if (node.isPending) return <Loading what={`node ${name}`} />;
  if (!node.data) return <ErrorNote error={node.error} retry={() => void node.refetch()} />;
  const detail = node.data;
  return (
    <>
      <p className="crumbs">
        <Link to="/nodes">Nodes</Link> /
      </p>
      <h1>
        {detail.name} <Badge state={detail.readiness} />
      </h1>
      <dl className="facts">
        <dt>Kernel</dt>
        <dd>
          <code>{detail.kernelRelease}</code>
        </dd>
        <dt>Heartbeat</dt>
        <dd>{ago(detail.lastHeartbeat, now)}</dd>
        <dt>Revision applied / desired</dt>
        <dd>
          {detail.appliedRevision} / {detail.desiredRevision}
        </dd>
        <dt>Labels</dt>
        <dd>
          <Labels labels={detail.labels} />
        </dd>
      </dl>
      <Tabs tabs={TABS} label="Node detail" />
      <TabPanel id={tab}>
        {tab === "programs" &&
          (detail.programs.length ? (
            <ProgramRows rows={detail.programs} by="program" />
          ) : (
            <Empty>This node runs no program.</Empty>
          ))}
        {tab === "features" &&
          (detail.features ? <FeatureReport features={detail.features} /> : <Empty>No feature report yet.</Empty>)}
        {tab === "fit" &&
          (fits.data ? (
            <FitTable fits={fits.data} />
          ) : fits.error ? (
            <ErrorNote error={fits.error} />
          ) : (
            <Loading what="the preflight" />
          ))}
        {tab === "endpoints" &&
          ((detail.endpoints ?? []).length ? (
            <table>
              <thead>
                <tr>
                  <th scope="col">Endpoint</th>
                  <th scope="col">IP</th>
                  <th scope="col">Interface</th>
                  <th scope="col">Labels</th>
                  <th scope="col">Ports</th>
                </tr>
              </thead>
              <tbody>
                {(detail.endpoints ?? []).map((endpoint) => (
                  <tr key={`${endpoint.namespace}/${endpoint.name}`}>
                    <td>
                      {endpoint.namespace}/{endpoint.name}
                    </td>
                    <td>
                      <code>{endpoint.ip}</code>
                    </td>
                    <td>
                      <code>{endpoint.interface}</code>
                    </td>
                    <td>
                      <Labels labels={endpoint.labels ?? {}} />
                    </td>
                    <td>
                      {(endpoint.ports ?? [])
                        .map((port) => `${port.name ? `${port.name} ` : ""}${port.port}/${port.protocol ?? "TCP"}`)
                        .join(", ") || "none"}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          ) : (
            <Empty>This node declares no endpoint.</Empty>
          ))}
        {tab === "policy" &&
          (detail.policy ? <PolicyReport report={detail.policy} /> : <Empty>No policy datapath runs here.</Empty>)}
      </TabPanel>
    </>
  );
}
