"""The parts of a rendered workload: node selection (``nodes``), the replica layout placement asks for
(``layout``), the engine's command line (``engine``), pods (``pods``) and each service's entry point
(``entry``). ``provisioner.render`` puts them together; every function here is pure.
"""
