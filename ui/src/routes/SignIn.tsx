import { useState } from "react";
import { useNavigate, useSearchParams } from "react-router";
import { useSignIn } from "../api/queries";
import { ErrorNote } from "../components/feedback";
import { connection } from "../lib/connection";

/** Only paths of this app are followed after signing in (no open redirect). */
function safeNext(next: string | null): string {
  return next && next.startsWith("/") && !next.startsWith("//") ? next : "/";
}

export function SignIn() {
  const [search] = useSearchParams();
  const navigate = useNavigate();
  const signIn = useSignIn();
  const [token, setToken] = useState("");
  return (
    <main id="content" className="sign-in">
      <h1>Sign in to bpfleet</h1>
      <p>
        Paste a bpfleet token (<code>bpf_…</code>) of role admin, ci or viewer. It is exchanged for a
        session cookie; the token itself is not kept in the browser.
      </p>
      <form
        onSubmit={(event) => {
          event.preventDefault();
          signIn.mutate(token.trim(), {
            onSuccess: () => {
              connection.reset();
              navigate(safeNext(search.get("next")), { replace: true });
            },
          });
        }}
      >
        <label htmlFor="token">Token</label>
        <input
          id="token"
          name="token"
          type="password"
          autoComplete="off"
          required
          value={token}
          onChange={(event) => setToken(event.target.value)}
        />
        <button type="submit" disabled={signIn.isPending}>
          Sign in
        </button>
      </form>
      {signIn.error && <ErrorNote error={signIn.error} />}
    </main>
  );
}
