"""Mélange's own cases solved by Medley: $/hour and solve time beside Mélange's answers in results.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.melange import solve_case  # noqa: E402

PEERS = Path(__file__).resolve().parent / "data" / "peers" / "melange"


def main() -> None:
    results = {r["case"]: r for r in json.loads((PEERS / "results.json").read_text())}
    rows = []
    print(f"{'case':<26} {'Mélange $/h':>12} {'Medley $/h':>11} {'saving':>7} {'Mélange s':>10} {'Medley s':>9}  "
          "Medley allocation")
    for path in sorted((PEERS / "cases").glob("*.json")):
        ref = results[path.stem]
        ans = solve_case(path)
        cost = ans["cost_per_hour"]
        saving = None if cost is None else 1.0 - cost / ref["melange_cost"]
        rows.append({"case": path.stem, "melange_usd_per_hour": ref["melange_cost"], "medley_usd_per_hour": cost,
                     "melange_solve_s": ref["melange_solve_s"], "medley_solve_s": round(ans["solve_seconds"], 4),
                     "status": ans["status"], "allocation": ans["allocation"]})
        alloc = ", ".join(f"{g}×{n}" for g, n in ans["allocation"].items())
        cost_text = "n/a" if cost is None else f"{cost:.2f}"
        saving_text = "n/a" if saving is None else f"{saving:.1%}"  # no plan: no saving, not 0%
        print(f"{path.stem:<26} {ref['melange_cost']:>12.2f} {cost_text:>11} "
              f"{saving_text:>7} {ref['melange_solve_s']:>10.4f} {ans['solve_seconds']:>9.4f}  {alloc}")
    never_dearer = all(r["medley_usd_per_hour"] is not None
                       and r["medley_usd_per_hour"] <= r["melange_usd_per_hour"] + 1e-6 for r in rows)
    print(json.dumps({"benchmark": "peer_melange", "cases": len(rows), "never_dearer": never_dearer,
                      "max_medley_solve_s": max(r["medley_solve_s"] for r in rows), "rows": rows}))


if __name__ == "__main__":
    main()
