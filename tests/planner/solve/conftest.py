"""The solver tests. Their shared problem generators and the plan check written from the problem's words live
in ``test_milp_properties`` beside this file, and the fake-clock backends in ``fake_backends``; the tests here
and in the subfolders (formulation, backends, strategies) import them by those names, which this folder being on
the import path allows."""
