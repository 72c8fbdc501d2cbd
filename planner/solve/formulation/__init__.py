r"""The fleet MILP: which configurations, how many replicas, and who serves which length bucket.

Works on abstract columns (one candidate configuration of one service in one pool, with its per-bucket
capacity and power already computed), so it is pure math over values: no I/O, no clocks. One module per
constraint family adds its rows (``add_*``) and says how a plan breaks them, why a fleet cannot meet them and
what loosening them is worth; ``build`` assembles them.

Sets
  P  pools p (zone_p, domain_p, devices_per_node D_p, max_nodes M_p, price π_p, billing)
  C  columns c (service s_c, role r_c, pool p_c, devices d_c, memory pool q_c, memory devices m_c)
  S  services s with buckets b, rate λ_{s,b} (req/s); B_s^+ = {b : λ_{s,b} > 0}
  K  power domains k (budget W_k, oversubscription ratio ρ_k, expected share σ_k)
  U_s = {c : s_c = s, r_c = unified};  Pf_s = {c : r_c = prefill};  Dc_s = {c : r_c ∈ {decode, decode+offload}}
  Serve_s = U_s ∪ Dc_s (replicas that answer requests: they count for min replicas and zone spread)
  cap_{c,b}  req/s one replica of c sustains on bucket b within the SLO (0: no variable for (c,b))
  ν_c        line rate at which a prefill or decode-only replica of c moves KV caches (handoff_gbitps)
  ℓ_c        c's configuration (device, TP, PP, role, memory devices: its label); K_s a service's limit
  R_s        role classes of s's columns: unified, prefill, decode-side

Variables (names as in the code)
  n[c]      ∈ Z≥0          replicas of column c, at most ⌊M_p D_p / d_c⌋ in a pool with a node
                           limit (implied by pool[p]; not in elastic mode)                   (objective)
  x[c,b]    ∈ [0,1]        share of bucket b of s_c served by c: for a unified column it covers both
                           phases; for a prefill column it is x^P, for a decode column x^D    (capacity)
  N[p]      ∈ Z, 0..M_p    nodes used in pool p (only where a pool row is needed)             (pool)
  z[s,g]    ∈ {0,1}        service s has a serving replica in zone g (only when spread_s > 1) (spread)
  δ[c]      ≥ 0            |n[c] − current_c| (only for columns with current_c > 0 and churn cost χ > 0) (churn)
  e[s,b,g]  ≥ 0            share of bucket b's KV caches leaving zone g (cross-zone services only)  (handoff)
  u[s,r]    ∈ {0,1}        role class r of s carries traffic (spread_s > 1, ≥ 2 classes)       (zone_roles)
  y[s,ℓ]    ∈ {0,1}        s runs configuration ℓ (only when s has more labels than K_s)       (simplicity)
  w[p], v[p] ≥ 0           devices of p paid by reservation (w ≤ R_p) and by the commitment (tiered fleets) (tiers)
  y[ℓ,c,b]  ∈ [0,1]        share of bucket b on c after the spot loss ℓ (services that must survive ℓ)  (tiers)

Constraints (family module in brackets)
  cover_prefill[s,b]:  Σ_{c∈U_s} x[c,b] + Σ_{c∈Pf_s} x[c,b] = 1           ∀ s, b ∈ B_s^+          [cover]
  cover_decode[s,b]:   Σ_{c∈U_s} x[c,b] + Σ_{c∈Dc_s} x[c,b] = 1           ∀ s, b ∈ B_s^+
                       (one row when s has no disaggregated columns: the two are the same)
  handoff[s,b,g]:      Σ_{c∈Pf_s, zone g} x[c,b] = Σ_{c∈Dc_s, zone g} x[c,b]  (same-zone services)  [handoff]
  handoff_nic[s,b,g,v]: Σ_{c∈Pf_s, zone g, ν_c≥v} x[c,b] ≤ Σ_{c∈Dc_s, zone g, ν_c≥v} x[c,b]  ∀ v ∈ {ν of Pf_s in g}
                       (cross-zone services: over all zones, and
                       handoff_cross[s,b,g]: e[s,b,g] ≥ Σ_{Pf_s,g} x − Σ_{Dc_s,g} x)
  capacity[c]:         busy[c] := Σ_b λ_{s_c,b}/cap_{c,b} · x[c,b] ≤ h · n[c]   (h = headroom)     [capacity]
  link[c,b]:           x[c,b] ≤ n[c]   (implied: n is integer and x ≤ 1; lifts the LP bound, used in pricing)
  bucket_prefill[s,b]: Σ_{c∈U_s∪Pf_s} h·cap_{c,b} n[c] ≥ λ_{s,b}   (implied by cover + capacity; the solver
  bucket_decode[s,b]:  Σ_{c∈U_s∪Dc_s} h·cap_{c,b} n[c] ≥ λ_{s,b}    derives knapsack-cover cuts)  [buckets]
  pool[p]:             Σ_{c: p_c=p} d_c n[c] + Σ_{c: q_c=p} m_c n[c] ≤ D_p N[p]                    [pool]
  power_expected[k]:   Σ_{c: domain(p_c)=k} (idle_c n[c] + (active_c − idle_c) busy[c])
                       + Σ_{p∈k} node_idle_p N[p] ≤ σ_k W_k                                        [power]
  power_nameplate[k]:  Σ_{p∈k} nameplate_p N[p] ≤ ρ_k W_k
  min_replicas[s]:     Σ_{c∈Serve_s} n[c] ≥ min_s                                            [min_replicas]
  spread_zone[s,g]:    z[s,g] ≤ Σ_{c∈Serve_s, zone(p_c)=g} n[c];   spread[s]: Σ_g z[s,g] ≥ spread_s  [spread]
  role_used[s,r,b]:    u[s,r] ≥ Σ_{c∈r} x[c,b];   zone_role[s,r,g]: Σ_{c∈r, zone g} n[c] ≥ z[s,g] + u[s,r] − 1
                                                                                              [zone_roles]
  config_used[c]:      n[c] ≤ M_c y[s_c,ℓ_c];     configurations[s]: Σ_ℓ y[s,ℓ] ≤ K_s            [simplicity]
  churn[c]:            δ[c] ≥ n[c] − current_c;  δ[c] ≥ current_c − n[c]                           [churn]
  work[s,φ,r]:         Σ_{c∈A_φ} min(⌈β⌉, ⌊ρ_c⌋ + min(1, (ρ_c − ⌊ρ_c⌋)/f)) n[c] ≥ ⌈β⌉   for phase φ with cover set
                       A_φ (U_s ∪ Pf_s, or U_s ∪ Dc_s) and a few reference columns r ∈ A_φ that serve every
                       bucket: u_b = 1/cap_{r,b}, ρ_c = max_b u_b cap_{c,b}, β = Σ_b λ_{s,b} u_b / h, f = β − ⌊β⌋.
                       Weighting cover and capacity rows by u gives Σ_c ρ_c n[c] ≥ β, valid for the LP; as n
                       is integer its mixed-integer rounding is valid too and cuts fractional replicas off
                       (a service needing 1.3 replicas' work of its best column pays for two). See work_cuts.
                                                                                                   [work]
  tier_use[p]:         w[p] + v[p] ≤ U_p   (U_p: p's devices; D_p N[p] when node-billed)          [tiers]
  commitment:          Σ_p r_p v[p] ≤ C        (v[p]: devices the commitment C pays, r_p $ each per hour)
  spot_share[s]:       devices of s on spot pools ≤ σ_s × all devices of s                    (σ_s < 1)
  spot_cover[ℓ,b,φ], spot_capacity[ℓ,c]: cover and capacity rows again, with their own shares, on the
                       columns of s outside the spot pools L of each loss ℓ = (s, L) it must survive

Objective (USD per hour)                                                                       [objective]
  min Σ_{p device-billed} π_p (Σ_{c: p_c=p} d_c n[c] + Σ_{c: q_c=p} m_c n[c]) + Σ_{p node-billed} π_p D_p N[p]
      + χ (Σ_{c: current_c=0} n[c] + Σ_{c: current_c>0} δ[c] + Σ_{current keys without a column} current)
      + Σ_{s,b,g} κ_{s,b} e[s,b,g]      (κ: $/h of bucket b's KV bytes crossing zones, Demand.handoff_usd_per_hour)
      − Σ_p π_p (w[p] + v[p])        (reserved and committed devices are paid already: planner.solve.tiers)

Elastic mode (explanations): min_replicas[s], spread[s] and configurations[s] get a slack variable, a node
limit leaves N[p]'s bound for the row pool_nodes[p]: N[p] − slack ≤ M_p, and each power row gets a slack in kW
(−1000·slack on its left side), and each spot_cover row a slack; every slack costs 1000 × the dearest node per
unit, so it is used only where nothing else fits.

Horizon (``planner.solve.horizon``): one copy of this model per period t, its objective weighted by the period's
hours, linked by the transition family (``transition``: up[c,t], dn[c,t] ≥ |n[c,t] − n[c,t−1]| paid for
start-up and drain, one move per service per dwell window, hysteresis on shrinking, pools holding old and new
replicas while they swap). It is not in ``FAMILIES``: its rows link periods, and ``horizon_violations`` checks them.

The pool row counts devices, not packing: a replica's placement on whole nodes is the placer's job. A
decode+offload column's watts are booked to its compute pool's power domain.
"""

from planner.solve.formulation.base import Built, Family, Probe
from planner.solve.formulation.build import FAMILIES, build, violations
from planner.solve.formulation.matrix import Arrays, Matrix, as_matrix, submatrix
from planner.solve.formulation.work import work_cuts

__all__ = [
    "FAMILIES",
    "Arrays",
    "Built",
    "Family",
    "Matrix",
    "Probe",
    "as_matrix",
    "build",
    "submatrix",
    "violations",
    "work_cuts",
]
