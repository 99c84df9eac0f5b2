"""A tiny example project: its tasks (tasks.py) and their tests (check_tasks.py, which
tests/test_testing_kit.py copies into a temporary directory as test_tasks.py and runs
with pytest, next to pytest.ini)."""
