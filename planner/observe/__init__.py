"""Observed traffic: the ``TrafficSource`` Protocol the control loop reads (``source``), Prometheus histograms
as shares and length mixes (``histograms``), and a source over recorded requests (``trace``). The
Prometheus implementation lives at the edge, in ``provisioner.traffic_prometheus``.
"""

from planner.observe.histograms import length_mix, share_below
from planner.observe.source import Attainment, RateSeries, TrafficSource, Window, prior_window
from planner.observe.trace import ServiceRequests, TraceTraffic

__all__ = ["Attainment", "RateSeries", "ServiceRequests", "TraceTraffic", "TrafficSource", "Window",
           "length_mix", "prior_window", "share_below"]
