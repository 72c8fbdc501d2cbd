"""The control loop: re-plan from observed traffic, forecast, move between plans safely, simulate a day.

``day`` (the DAY file's vocabulary and its traffic generator), ``loop`` (one period's decision: observe →
forecast → horizon plan), ``moves`` (the order of a move: waves within pool and power limits, make before
break), ``simulate`` (a day through the loop and the static peak plan, replayed) and ``report`` (what the
day reports). The horizon model itself is ``planner.solve.horizon`` (transition family in
``planner.solve.formulation.transition``); forecasts are ``planner.forecast``; observed traffic
``planner.observe``.
"""
