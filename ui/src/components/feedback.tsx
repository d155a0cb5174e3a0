import { ApiError, Unreachable } from "../api/client";

export function Loading({ what }: { what: string }) {
  return (
    <p className="muted" role="status">
      Loading {what}…
    </p>
  );
}

/** An API error where the data would be, in the API's words, with a way to retry. */
export function ErrorNote({ error, retry }: { error: unknown; retry?: () => void }) {
  let text = "Something went wrong.";
  let problems: string[] = [];
  if (error instanceof ApiError) {
    text = `${error.status === 404 ? "Not found" : "The API refused"}: ${error.message}`;
    problems = error.problems;
  } else if (error instanceof Unreachable) {
    text = "The API is unreachable.";
  } else if (error instanceof Error) {
    text = error.message;
  }
  return (
    <div className="error-note" role="alert">
      <p>{text}</p>
      {problems.length > 0 && (
        <ul>
          {problems.map((problem) => (
            <li key={problem}>{problem}</li>
          ))}
        </ul>
      )}
      {retry && (
        <button type="button" onClick={retry}>
          Retry
        </button>
      )}
    </div>
  );
}

export function Empty({ children }: { children: React.ReactNode }) {
  return <p className="empty">{children}</p>;
}
