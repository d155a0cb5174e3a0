import { Link, useParams } from "react-router";
import type { Schemas } from "../api/client";
import { useKill, useProgram, useProgramEvents, useProgramNodes, useProgress, useRolloutAction } from "../api/queries";
import { Badge } from "../components/Badge";
import { Bar } from "../components/Bar";
import { KillDialog } from "../components/KillDialog";
import { useNow } from "../components/Layout";
import { Origin } from "../components/Origin";
import { ProgramRows } from "../components/ProgramRows";
import { TabPanel, Tabs, useTab } from "../components/Tabs";
import { ErrorNote, Empty, Loading } from "../components/feedback";
import { dateTime, duration, nanoseconds, number, shortDigest } from "../lib/format";
import { useCanAct } from "../session";

const TABS = [
  { id: "nodes", label: "Nodes" },
  { id: "events", label: "Events" },
  { id: "stats", label: "Run statistics" },
];
const ACTIVE = ["Progressing", "Baking", "Paused"];

interface Spec {
  artifact?: { name?: string; version?: string; digest?: string };
}

function Rollout({ progress, fetchedAt, now }: { progress: Schemas["RolloutProgressView"]; fetchedAt: number; now: number }) {
  const action = useRolloutAction();
  const canAct = useCanAct();
  const { rollout } = progress;
  const active = ACTIVE.includes(rollout.phase);
  const bakeLeft =
    progress.bakeRemainingSeconds === null || progress.bakeRemainingSeconds === undefined
      ? null
      : Math.max(0, progress.bakeRemainingSeconds - (now - fetchedAt) / 1000);
  return (
    <section aria-labelledby="rollout-heading">
      <h2 id="rollout-heading">
        Rollout to generation {rollout.toGeneration} <Badge state={rollout.phase} />
      </h2>
      <ol className="steps">
        {progress.steps.map((step, index) => (
          <li key={index} className={`step step-${step.state}`} aria-current={step.state === "current" ? "step" : undefined}>
            <Badge state={step.state} label={step.state === "done" ? "done" : step.state === "current" ? "current" : "waiting"} />{" "}
            <strong>
              Step {index + 1} of {progress.steps.length}:
            </strong>{" "}
            {step.label}, {step.target} of {progress.selected} node{progress.selected === 1 ? "" : "s"}
          </li>
        ))}
      </ol>
      <p>{rollout.message}</p>
      {bakeLeft !== null && (
        <p data-testid="bake">
          Baking: the next step starts in {duration(bakeLeft)} (bake time {progress.bakeSeconds} s).
        </p>
      )}
      <p>
        Failure budget: {progress.failures} failed of {progress.failureBudget} allowed; Incompatible nodes do not
        count.{" "}
        {progress.autoRollback ? "Over budget, updated nodes roll back." : "Over budget, the rollout stops."}
      </p>
      {canAct && active && (
        <div className="actions">
          {rollout.phase === "Paused" ? (
            <button type="button" onClick={() => action.mutate({ id: rollout.id, action: "resume" })} disabled={action.isPending}>
              Resume
            </button>
          ) : (
            <button type="button" onClick={() => action.mutate({ id: rollout.id, action: "pause" })} disabled={action.isPending}>
              Pause
            </button>
          )}
          <button type="button" className="danger" onClick={() => action.mutate({ id: rollout.id, action: "abort" })} disabled={action.isPending}>
            Abort
          </button>
        </div>
      )}
      {action.error && <ErrorNote error={action.error} />}
    </section>
  );
}

function Stats({ rows }: { rows: Schemas["NodeProgramView"][] }) {
  const lines = rows.flatMap((row) =>
    Object.entries(row.stats ?? {}).map(([entry, stats]) => ({ node: row.node, entry, ...stats })),
  );
  if (lines.length === 0) return <Empty>No node reports run statistics for this program.</Empty>;
  return (
    <table>
      <thead>
        <tr>
          <th scope="col">Node</th>
          <th scope="col">Entry point</th>
          <th scope="col">Runs</th>
          <th scope="col">Run time</th>
          <th scope="col">Per run</th>
        </tr>
      </thead>
      <tbody>
        {lines.map((line) => (
          <tr key={`${line.node}/${line.entry}`}>
            <td>{line.node}</td>
            <td>
              <code>{line.entry}</code>
            </td>
            <td>{number(line.runCount)}</td>
            <td>{nanoseconds(line.runTimeNs)}</td>
            <td>{line.runCount ? nanoseconds(Math.round(line.runTimeNs / line.runCount)) : "–"}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export default function ProgramDetail() {
  const { name = "" } = useParams();
  const program = useProgram(name);
  const nodes = useProgramNodes(name);
  const events = useProgramEvents(name);
  const progress = useProgress(name, Boolean(program.data?.rollout));
  const kill = useKill();
  const canAct = useCanAct();
  const tab = useTab(TABS);
  const now = useNow();
  if (program.isPending) return <Loading what={`program ${name}`} />;
  if (!program.data) return <ErrorNote error={program.error} retry={() => void program.refetch()} />;
  const view = program.data;
  const artifact = (view.spec as Spec).artifact ?? {};
  return (
    <>
      <p className="crumbs">
        <Link to="/programs">Programs</Link> /
      </p>
      <h1>
        {view.name} <Badge state={view.status} />
      </h1>
      {view.killed && (
        <div className="banner banner-bad" role="status">
          Killed: detached from every node. Putting its spec again brings it back.
        </div>
      )}
      <dl className="facts">
        <dt>Artifact</dt>
        <dd>
          <code>
            {artifact.name}@{artifact.version}
          </code>{" "}
          digest <code>{shortDigest(artifact.digest)}</code>
        </dd>
        <dt>Generation</dt>
        <dd>{view.generation}</dd>
        <dt>From</dt>
        <dd>
          <Origin origin={view.origin} />
        </dd>
        <dt>Nodes</dt>
        <dd>
          <Bar counts={view.summary} desired={view.summary.desired} />
        </dd>
      </dl>
      {canAct && !view.killed && (
        <div className="actions">
          <KillDialog name={view.name} onKill={() => kill.mutate(view.name)} error={kill.error} busy={kill.isPending} />
        </div>
      )}
      {progress.data && <Rollout progress={progress.data} fetchedAt={progress.dataUpdatedAt} now={now} />}
      <Tabs tabs={TABS} label="Program detail" />
      <TabPanel id={tab}>
        {tab === "nodes" &&
          (nodes.data ? (
            nodes.data.length ? (
              <ProgramRows rows={nodes.data} by="node" />
            ) : (
              <Empty>{view.killed ? "Detached from every node." : "No node has reported this program."}</Empty>
            )
          ) : (
            <Loading what="nodes" />
          ))}
        {tab === "events" &&
          (events.data ? (
            <ol className="timeline">
              {events.data.map((event, index) => (
                <li key={index}>
                  <time dateTime={event.createdAt}>{dateTime(event.createdAt)}</time> <Badge state={event.reason} />
                  {event.node && (
                    <>
                      {" "}
                      on <Link to={`/nodes/${encodeURIComponent(event.node)}`}>{event.node}</Link>
                    </>
                  )}
                  : {event.message}
                </li>
              ))}
            </ol>
          ) : (
            <Loading what="events" />
          ))}
        {tab === "stats" && (nodes.data ? <Stats rows={nodes.data} /> : <Loading what="statistics" />)}
      </TabPanel>
    </>
  );
}
