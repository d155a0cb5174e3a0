import { Link } from "react-router";
import { useSources } from "../api/queries";
import { useNow } from "../components/Layout";
import { SourceState, refText } from "../components/SourceState";
import { ErrorNote, Empty, Loading } from "../components/feedback";
import { ago } from "../lib/format";

export default function GitSources() {
  const sources = useSources();
  const now = useNow();
  return (
    <>
      <h1>GitSources</h1>
      {sources.error && <ErrorNote error={sources.error} retry={() => void sources.refetch()} />}
      {sources.isPending && <Loading what="GitSources" />}
      {sources.data &&
        (sources.data.length ? (
          <table>
            <thead>
              <tr>
                <th scope="col">Source</th>
                <th scope="col">URL</th>
                <th scope="col">Ref</th>
                <th scope="col">Path</th>
                <th scope="col">Interval</th>
                <th scope="col">State</th>
                <th scope="col">Applied</th>
                <th scope="col">Last pass</th>
              </tr>
            </thead>
            <tbody>
              {sources.data.map((source) => (
                <tr key={`${source.namespace}/${source.name}`}>
                  <td>
                    <Link to={`/gitsources/${source.namespace}/${source.name}`}>
                      {source.namespace}/{source.name}
                    </Link>
                  </td>
                  <td className="wrap">
                    <code>{source.spec?.url}</code>
                  </td>
                  <td>{refText(source.spec?.ref)}</td>
                  <td>
                    <code>{source.spec?.path}</code>
                  </td>
                  <td>{source.spec?.interval}</td>
                  <td>
                    <SourceState source={source} />
                  </td>
                  <td>{source.shortRevision ? <code>{source.shortRevision}</code> : <span className="muted">nothing</span>}</td>
                  <td>{ago(source.reportedAt, now)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : (
          <Empty>No operator has reported a GitSource to this API yet.</Empty>
        ))}
    </>
  );
}
