"""The solver tests. Their shared problem generators and the plan check written from the problem's words live
in ``test_milp_properties`` beside this file; the tests in the subfolders (formulation, backends, strategies)
import them by that name, which this folder being on the import path allows."""
