r"""Placement of a plan's replicas on concrete nodes (OR-Tools CP-SAT).

A replica of configuration (tp, pp, m memory devices) is ``pp`` *stage units* of ``tp`` devices, each inside
one node (a TP group never spans nodes), all stages in one rack, and ``m`` one-device *memory units* in the
same rack (attention-offload partners). The model counts units per (group, node) instead of devices, and
empty nodes of one (pool, rack, size) are one *class* with a count: with TP sizes that divide each other and
the node size, first-fit decreasing packs any feasible class total, so the aggregate is exact.

Sets
  G  replica groups g (pool p_g, memory pool q_g, tp_g, pp_g, m_g, replicas R_g, service s_g)
  N  nodes n with devices D_n (nodes holding current replicas, or nodes in pools the aggregate cannot
     represent); C classes c of empty nodes (count K_c, devices D_c); V one virtual class per pool
     (unbounded, in no rack or zone: it measures a shortfall)
  cur[g,n]  units of g running on n in the current plan (failed nodes hold none)

Variables
  x[g,n], x[g,c] ∈ Z≥0   stage units (memory units for a memory pool) of g on node n / in class c
  y[g,r] ∈ Z≥0           replicas of g in rack r (only for pp_g > 1 or m_g > 0)
  used[n] ∈ {0,1}, u[c] ∈ 0..K_c   nodes in use
  keep[g,n] ≤ min(x[g,n], cur[g,n])   units that stay where they run
  z[s,zone] ∈ {0,1}      service s serves from zone (only for spread_zones > 1)

Constraints
  count[g]:      Σ_n x[g,n] + Σ_c x[g,c] + v[g] = pp_g R_g      (memory: = m_g R_g)
  rack[g,r]:     Σ_{n∈r} x[g,n] = pp_g y[g,r];  Σ_{n∈r, pool q_g} xm[g,n] = m_g y[g,r];  Σ_r y[g,r] + v[g]/pp_g = R_g
  node[n]:       Σ_g size_g x[g,n] ≤ D_n used[n];   class[c]: Σ_g size_g x[g,c] ≤ D_c u[c]
  spread[s]:     z[s,zone] ≤ replicas of s in zone;  Σ z ≥ spread_zones_s
  tolerate[s,d]: Σ_g c_g·(replicas of g in d) ≤ Σ_g c_g·R_g − 1   (c_g: one replica's capacity as a share of
                 the service's load at the planner's headroom, see ``phase_capacity``; when asked), and the
                 same for each length bucket's share over the groups that serve it (``phase_needs``)

Objective (lexicographic by weights)
  min  BIG·Σ virtual units  +  W·(Σ units − Σ keep)  +  Σ used + Σ u       (moves = units started)
with ``objective="moves"`` dropping the last term.

Decomposition (what makes 10,000 nodes fit a deadline of seconds)
  components  pools joined by offload partners, zone spread or a failure-domain rule are solved together,
              other pools independently;
  bounds      a component's first-fit start (``hint``) that places every unit, keeps
              ``Σ_g min(units_g, cur_g)`` units and uses ``fewest_nodes`` nodes meets the objective's lower
              bound: it is optimal and not solved (``bounds``);
  blocks      a component without spread or failure-domain rules whose model passes ``part_size`` unit-site
              variables is cut into blocks of whole racks, each holding the replicas the start put there;
              units the start could not place are carried from block to block (``blocks``);
  reduction   when a part's start keeps all it can, every optimum keeps as much: shrinking groups only on the
              nodes they run on, growing ones keep theirs, groups that keep exactly what they run are constants,
              and the model has no keep or virtual variables (``bounds.reduction``);
  deadline    one ``Deadline`` bounds the call; each part's CP-SAT time is its share of what is left after the
              measured cost of building and expanding the parts still to come (``budget``). A part left without
              time, or whose solve found nothing, keeps its start: ``PlacementResult.fallbacks`` and the
              explanations say which and why.

Modules: ``result`` (the values placement answers), ``capacity`` (what a replica is worth and what a phase
needs: ``phase_capacity``, ``phase_needs``), ``sites`` (G, N, C, V, components, cur), ``hint`` (the greedy
start), ``bounds`` (counted lower bounds, the reduction), ``blocks`` (parts and rack blocks), ``budget`` (the
deadline's share per part), ``model`` (variables, ``count``, ``rack``, ``node``/``class``, objective), ``rules``
(``spread``, ``tolerate``), ``component`` (a component's parts solved in turn), ``expand`` (units to device
slots, shortfalls), ``losses`` (``tolerance_losses``, ``surviving_plan``), ``placer`` (``place``,
``placed_plan``). Time is read only through a ``planner.clock.Deadline``.
"""

from planner.place.capacity import phase_capacity, phase_needs
from planner.place.losses import surviving_plan, tolerance_losses
from planner.place.placer import place, placed_plan
from planner.place.result import (
    DeviceSlots,
    DomainLoss,
    Fallback,
    PlacementResult,
    ReplicaPlacement,
    Shortfall,
    Tolerate,
    node_count_feedback,
)

__all__ = [
    "DeviceSlots",
    "DomainLoss",
    "Fallback",
    "PlacementResult",
    "ReplicaPlacement",
    "Shortfall",
    "Tolerate",
    "node_count_feedback",
    "phase_capacity",
    "phase_needs",
    "place",
    "placed_plan",
    "surviving_plan",
    "tolerance_losses",
]
