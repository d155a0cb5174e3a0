/**
 * The connectivity matrix for one protocol and port, before and after the draft, as the
 * API computed it: each cell's verdict now, and whether the draft changed it. A grid:
 * one Tab stop, arrows move, Enter or a click asks the API why (explain).
 */
import { useRef, useState } from "react";
import type { Schemas } from "../api/client";
import { matrixCells, moveFocus, type MatrixCell } from "./layout";

type MatrixData = Schemas["MatrixView"];

const GLYPH: Record<string, string> = { allowed: "✓", denied: "✕", self: "·" };

function cellWords(cell: MatrixCell): string {
  if (cell.now === "self") return `${cell.client} itself`;
  return `${cell.client} to ${cell.server}: ${cell.now}${cell.change ? ` (${cell.change})` : ""}`;
}

export function Matrix({
  matrix,
  chosen,
  onChoose,
}: {
  matrix: MatrixData;
  chosen: { client: string; server: string } | null;
  onChoose(cell: { client: string; server: string }): void;
}) {
  const cells = matrixCells(matrix.endpoints, matrix.before, matrix.after);
  const [wanted, setFocus] = useState<[number, number]>([0, 1]);
  const grid = useRef<HTMLTableElement>(null);
  const size = matrix.endpoints.length;
  const focus: [number, number] = [Math.min(wanted[0], size - 1), Math.min(wanted[1], size - 1)];
  const move = (key: string) => {
    const next = moveFocus(focus, key, size);
    setFocus(next);
    grid.current?.querySelector<HTMLElement>(`[data-at="${next[0]}-${next[1]}"]`)?.focus();
  };
  if (!size) return <p className="muted">No endpoint concerns this draft.</p>;
  return (
    <div className="scroll">
      <table className="connectivity" role="grid" ref={grid} aria-label={`Who may connect on ${matrix.protocol}/${matrix.port}: rows are clients, columns servers`}>
        <thead>
          <tr>
            <th scope="col">client ↓ / server →</th>
            {matrix.endpoints.map((name) => (
              <th scope="col" key={name}>
                <span className="vertical">{name}</span>
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {cells.map((row, r) => (
            <tr key={matrix.endpoints[r]}>
              <th scope="row">{matrix.endpoints[r]}</th>
              {row.map((cell, c) => {
                const picked = chosen?.client === cell.client && chosen?.server === cell.server;
                const change = cell.change === "newly allowed" ? "+" : cell.change === "newly denied" ? "−" : "";
                return (
                  <td
                    key={cell.server}
                    role="gridcell"
                    data-at={`${r}-${c}`}
                    tabIndex={focus[0] === r && focus[1] === c ? 0 : -1}
                    aria-label={cellWords(cell)}
                    aria-selected={picked}
                    title={cellWords(cell)}
                    className={`cell cell-${cell.now}${cell.change ? " cell-changed" : ""}${picked ? " cell-picked" : ""}`}
                    onClick={() => {
                      setFocus([r, c]);
                      if (cell.now !== "self") onChoose(cell);
                    }}
                    onKeyDown={(event) => {
                      if (event.key === "Enter" || event.key === " ") {
                        event.preventDefault();
                        if (cell.now !== "self") onChoose(cell);
                      } else if (event.key.startsWith("Arrow") || event.key === "Home" || event.key === "End") {
                        event.preventDefault();
                        move(event.key);
                      }
                    }}
                  >
                    {change}
                    {GLYPH[cell.now]}
                  </td>
                );
              })}
            </tr>
          ))}
        </tbody>
      </table>
      <p className="muted small">
        ✓ allowed, ✕ denied, + newly allowed by the draft, − newly denied. {matrix.endpoints.length} of{" "}
        {matrix.relevant} endpoints concerned ({matrix.fleet} in the fleet){matrix.truncated ? "; the rest are left out" : ""}.
      </p>
    </div>
  );
}
