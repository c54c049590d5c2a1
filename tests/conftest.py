"""The suite's shared fixtures live in tests/fixtures/; these plugins make them visible to every
test (hubs of tiny models, the sandboxes with their Docker skip/fail rule)."""

pytest_plugins = ["tests.fixtures.hubs", "tests.fixtures.sandbox"]
